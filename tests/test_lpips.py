"""Tests for adacorr.perceptual: the LPIPS distance, its embedding and feature extractors.

The distance is checked against a direct numpy computation on the feature maps the model
sows (Laidlaw et al. 2021: unit-normalise over channels, divide by sqrt(H W), flatten,
concatenate, l2), and its weighted form against Zhang et al.'s LPIPS formula.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr.models import get_model
from adacorr.perceptual import (
    embedding_distance, features_and_logits_fn, lpips_distance, lpips_embedding, lpips_layers,
    model_features_fn, model_logits_fn, normalize_features)
from tests.flat_init import flat_init, uniform

SHAPE = (6, 12, 12, 1)


@pytest.fixture(scope="module")
def cnn():
  """A tiny SmallCNN (conv1 12x12x4, conv2 6x6x8) with its jitted LPIPS distance."""
  model = get_model("small_cnn", features=(4, 8), dense=16, mean=(0.5,), std=(0.25,))
  variables = flat_init(model, (1,) + SHAPE[1:], seed=0)
  features_fn = model_features_fn(model, variables)
  dist = jax.jit(functools.partial(lpips_distance, features_fn))
  return model, variables, features_fn, dist


@pytest.fixture(scope="module")
def images():
  return uniform(1, SHAPE), uniform(2, SHAPE)


def _np_embedding(maps, weights=None):
  """Laidlaw et al.'s phi in float64 numpy: per layer f / (||f||_C + 1e-10) / sqrt(H W)
  (times sqrt(w_c) with channel weights), flattened and concatenated."""
  parts = []
  for i, f in enumerate(maps):
    f = np.asarray(f, np.float64)
    b, h, w, _ = f.shape
    n = f / (np.sqrt(np.sum(f**2, axis=-1, keepdims=True)) + 1e-10) / np.sqrt(h * w)
    if weights is not None:
      n = n * np.sqrt(np.asarray(weights[i], np.float64))
    parts.append(n.reshape(b, -1))
  return np.concatenate(parts, axis=1)


def _sown(model, variables, x, layers):
  _, state = model.apply(variables, x, train=False, mutable=["intermediates"])
  return [state["intermediates"][l][0] for l in layers]


# --------------------------------------------------------------------------- metric axioms


def test_identity_symmetry_positivity(cnn, images):
  *_, dist = cnn
  x1, x2 = images
  np.testing.assert_array_equal(dist(x1, x1), np.zeros(SHAPE[0]))
  d12, d21 = np.asarray(dist(x1, x2)), np.asarray(dist(x2, x1))
  np.testing.assert_allclose(d12, d21, rtol=1e-6)
  assert d12.shape == (SHAPE[0],)
  assert np.all(d12 > 1e-2), d12
  # A small change gives a small, non-zero distance (the metric is not saturated).
  x3 = jnp.clip(x1 + 0.01 * (x2 - 0.5), 0.0, 1.0)
  d13 = np.asarray(dist(x1, x3))
  assert np.all(d13 > 0) and np.all(d13 < d12), (d13, d12)


def test_per_example_values_do_not_depend_on_batch(cnn, images):
  _, _, features_fn, dist = cnn
  x1, x2 = images
  batch = np.asarray(dist(x1, x2))
  one = jax.jit(functools.partial(lpips_distance, features_fn))  # its own (B=1) compile
  for i in range(SHAPE[0]):
    np.testing.assert_allclose(one(x1[i:i + 1], x2[i:i + 1]), batch[i:i + 1], rtol=1e-5)
  perm = np.array([4, 0, 5, 2, 1, 3])
  np.testing.assert_allclose(dist(x1[perm], x2[perm]), batch[perm], rtol=1e-5)
  # Neighbours that are identical pairs (distance 0) do not change example 0 either.
  mixed = np.asarray(dist(x1.at[1:].set(x2[1:]), x2))
  np.testing.assert_allclose(mixed[0], batch[0], rtol=1e-5)
  np.testing.assert_array_equal(mixed[1:], 0.0)


# --------------------------------------------------------------------------- reference values


def test_distance_matches_numpy_on_captured_features(cnn, images):
  model, variables, features_fn, dist = cnn
  x1, x2 = images
  layers = lpips_layers(model)
  f1 = _sown(model, variables, x1, layers)
  f2 = _sown(model, variables, x2, layers)
  assert [f.shape for f in f1] == [(6, 12, 12, 4), (6, 6, 6, 8)]
  phi1, phi2 = _np_embedding(f1), _np_embedding(f2)
  assert phi1.shape == (6, 12 * 12 * 4 + 6 * 6 * 8)
  expected = np.sqrt(np.sum((phi1 - phi2)**2, axis=1))
  np.testing.assert_allclose(dist(x1, x2), expected, rtol=1e-5)
  np.testing.assert_allclose(lpips_embedding(features_fn, x1), phi1, atol=1e-6)
  np.testing.assert_allclose(normalize_features(f2), phi2, atol=1e-6)
  # The extractor returns exactly the sown maps; the self-bounded form adds the logits.
  for a, b in zip(features_fn(x1), f1):
    np.testing.assert_array_equal(a, b)
  logits, feats = features_and_logits_fn(model, variables)(x1)
  np.testing.assert_allclose(logits, model_logits_fn(model, variables)(x1), atol=1e-6)
  assert len(feats) == 2


def test_normalize_features_matches_numpy_on_random_maps():
  # Two maps of different sizes; one position of map 0 is exactly zero (0 / (0 + eps) = 0).
  f = [uniform(3, (3, 4, 4, 5), -1.0, 1.0).at[1, 2, 3].set(0.0),
       uniform(4, (3, 2, 3, 7), -1.0, 1.0)]
  phi = normalize_features(f)
  np.testing.assert_allclose(phi, _np_embedding(f), atol=1e-6)
  np.testing.assert_array_equal(phi[1, (2 * 4 + 3) * 5:(2 * 4 + 4) * 5], 0.0)
  # Each non-zero position contributes a unit vector / sqrt(HW): ||phi||^2 = #layers.
  norms = np.sum(np.asarray(phi)**2, axis=1)
  np.testing.assert_allclose(norms, [2.0, 2.0 - 1.0 / 16, 2.0], rtol=1e-5)
  # The map's scale per position does not matter (the normalisation removes it).
  scaled = [f[0] * uniform(5, (3, 4, 4, 1), 0.5, 3.0), f[1]]
  np.testing.assert_allclose(normalize_features(scaled), phi, atol=1e-6)


def test_channel_weights_give_zhang_lpips():
  f1 = [uniform(6, (3, 4, 4, 5), -1.0, 1.0), uniform(7, (3, 2, 3, 7), -1.0, 1.0)]
  f2 = [uniform(8, (3, 4, 4, 5), -1.0, 1.0), uniform(9, (3, 2, 3, 7), -1.0, 1.0)]
  w = [uniform(10, (5,)), uniform(11, (7,)).at[2].set(0.0)]
  d = embedding_distance(normalize_features(f1, w), normalize_features(f2, w))
  # Zhang et al.: sum_l mean_{h,w} sum_c w_c (n1 - n2)^2, n the channel-normalised maps.
  expected = np.zeros(3)
  for a, b, wl in zip(f1, f2, w):
    a, b, wl = (np.asarray(v, np.float64) for v in (a, b, wl))
    n1 = a / (np.sqrt(np.sum(a**2, -1, keepdims=True)) + 1e-10)
    n2 = b / (np.sqrt(np.sum(b**2, -1, keepdims=True)) + 1e-10)
    expected += np.mean(np.sum(wl * (n1 - n2)**2, axis=-1), axis=(1, 2))
  np.testing.assert_allclose(np.square(d), expected, rtol=1e-5)
  # Unit weights are the unweighted distance; a zero-weight channel is ignored.
  ones = [jnp.ones(5), jnp.ones(7)]
  np.testing.assert_allclose(
      embedding_distance(normalize_features(f1, ones), normalize_features(f2, ones)),
      embedding_distance(normalize_features(f1), normalize_features(f2)), rtol=1e-6)
  f2b = [f2[0], f2[1].at[..., 2].set(5.0)]
  f1b = [f1[0], f1[1].at[..., 2].set(-5.0)]
  w0 = [jnp.ones(5), jnp.ones(7).at[2].set(0.0)]
  d_a = embedding_distance(normalize_features(f1, w0), normalize_features(f2, w0))
  d_b = embedding_distance(normalize_features(f1b, w0), normalize_features(f2b, w0))
  assert not np.allclose(d_a, d_b)  # the channel still enters the normalisation...
  assert np.all(np.isfinite(d_b))   # ...but its own difference is not counted:
  n1 = np.asarray(normalize_features(f1b, w0))[:, 4 * 4 * 5:].reshape(3, 2, 3, 7)
  np.testing.assert_array_equal(n1[..., 2], 0.0)


# --------------------------------------------------------------------------- layers


def test_default_layers_per_model():
  resnet = get_model("preact_resnet", width=4, stage_sizes=(1, 1, 1, 1), mean=(0.5,),
                     std=(0.25,))
  assert lpips_layers(resnet) == ("stage1", "stage2", "stage3", "stage4")
  assert lpips_layers(get_model("cifar_alexnet")) == tuple(f"conv{i}" for i in range(1, 6))
  assert lpips_layers(get_model("small_cnn", features=(4, 8))) == ("conv1", "conv2")
  assert lpips_layers(get_model("small_cnn", features=(4, 8), convs_per_stage=2)) == (
      "conv1", "conv2", "conv3", "conv4")
  # Explicit choices, also as a comma-separated string, are validated and kept in order.
  assert lpips_layers(resnet, "stage3, stem") == ("stage3", "stem")
  assert lpips_layers(resnet, ["input"]) == ("input",)
  # The ResNet's extractor returns its stage outputs (shapes only: no compilation).
  x = jax.ShapeDtypeStruct((2, 16, 16, 1), jnp.float32)
  variables = jax.eval_shape(resnet.init, jax.random.key(0), x)
  shapes = jax.eval_shape(lambda v, x: model_features_fn(resnet, v)(x), variables, x)
  assert [s.shape for s in shapes] == [(2, 16, 16, 4), (2, 8, 8, 8), (2, 4, 4, 16),
                                       (2, 2, 2, 32)]


def test_unknown_layers_raise():
  resnet = get_model("preact_resnet", width=4, stage_sizes=(1, 1, 1, 1))
  with pytest.raises(ValueError, match="stage9"):
    lpips_layers(resnet, ["stage1", "stage9"])
  with pytest.raises(ValueError, match="conv3"):
    lpips_layers(get_model("small_cnn", features=(4, 8)), "conv1,conv3")
  with pytest.raises(ValueError, match="fc1"):
    model_features_fn(get_model("cifar_alexnet"), {}, layers=["fc1"])
  with pytest.raises(ValueError, match="at least one"):
    lpips_layers(resnet, " , ")
  with pytest.raises(ValueError, match="marks no feature layers"):
    lpips_layers(nn.Dense(3))


# --------------------------------------------------------------------------- validation


def test_bad_inputs_raise_named_errors(cnn, images):
  _, _, features_fn, _ = cnn
  x1, x2 = images
  with pytest.raises(ValueError, match="x1"):
    lpips_distance(features_fn, x1[0], x2[0])
  with pytest.raises(ValueError, match=r"x1 must lie in \[0, 1\]"):
    lpips_distance(features_fn, x1 + 1.0, x2)
  with pytest.raises(ValueError, match=r"x2 must lie in \[0, 1\]"):
    lpips_distance(features_fn, x1, x2 - 1.0)
  with pytest.raises(ValueError, match="x1 and x2"):
    lpips_distance(features_fn, x1, x2[:3])
  f = [jnp.ones((2, 4, 4, 3)), jnp.ones((2, 2, 2, 5))]
  with pytest.raises(ValueError, match="features must be a list"):
    normalize_features(jnp.ones((2, 4, 4, 3)))
  with pytest.raises(ValueError, match="at least one"):
    normalize_features([])
  with pytest.raises(ValueError, match=r"features\[1\] must be a rank-4"):
    normalize_features([f[0], jnp.ones((2, 4, 5))])
  with pytest.raises(ValueError, match=r"features\[1\] has batch size 3"):
    normalize_features([f[0], jnp.ones((3, 2, 2, 5))])
  with pytest.raises(ValueError, match="channel_weights has 1 entries"):
    normalize_features(f, [jnp.ones(3)])
  with pytest.raises(ValueError, match=r"channel_weights\[1\] has 4 entries"):
    normalize_features(f, [jnp.ones(3), jnp.ones(4)])
  # An extractor that returns one array instead of a list of maps.
  with pytest.raises(ValueError, match="features must be a list"):
    lpips_distance(lambda x: x, x1, x2)


# --------------------------------------------------------------------------- derivatives


def test_embedding_derivatives_finite_at_zero_channel_vector():
  """A position whose channels are all 0 (dead ReLUs) has 0, not NaN, derivatives."""
  f = uniform(12, (1, 2, 2, 3), 0.1, 1.0).at[0, 1, 1].set(0.0)
  # The tangent is 0 where f is 0 (as through a ReLU whose input is negative).
  t = uniform(13, (1, 2, 2, 3), -1.0, 1.0).at[0, 1, 1].set(0.0)
  phi = lambda v: normalize_features([v])  # noqa: E731

  @jax.jit
  def derivatives(f, t):
    jvp = jax.jvp(phi, (f,), (t,))[1]
    fd = (phi(f + 1e-3 * t) - phi(f - 1e-3 * t)) / 2e-3
    grad = jax.grad(lambda v: jnp.sum(phi(v) * jnp.arange(12.0)))(f)
    return jvp, fd, grad

  jvp, fd, grad = derivatives(f, t)
  assert np.all(np.isfinite(jvp)) and np.all(np.isfinite(grad))
  np.testing.assert_array_equal(np.asarray(jvp).reshape(2, 2, 3)[1, 1], 0.0)
  np.testing.assert_allclose(jvp, fd, atol=1e-2)  # elsewhere the usual derivative


def test_embedding_linearization_finite_through_dead_relus(cnn, images):
  """The attacks linearise phi (jvp and its transpose); the SmallCNN's ReLU maps have
  positions that are 0 over all channels."""
  _, _, features_fn, _ = cnn
  x1, x2 = images
  assert any(np.any(np.all(np.asarray(f) == 0, axis=-1)) for f in features_fn(x1))

  @jax.jit
  def jv_and_jtv(x, v):
    phi, lin = jax.linearize(functools.partial(lpips_embedding, features_fn), x)
    return lin(v), jax.linear_transpose(lin, x)(phi)[0]

  jv, jtv = jv_and_jtv(x1, x2 - 0.5)
  assert np.all(np.isfinite(jv)) and np.any(np.asarray(jv) != 0)
  assert np.all(np.isfinite(jtv))


# --------------------------------------------------------------------------- NaN


def test_nan_images_are_rejected_and_nan_embeddings_are_not_at_distance_zero(cnn, images):
  _, _, features_fn, _ = cnn
  x1, _ = images
  nan = x1.at[0, 0, 0, 0].set(jnp.nan)
  with pytest.raises(ValueError, match="x2 contains NaN"):
    lpips_distance(features_fn, x1, nan)
  # Traced (no value check): a NaN embedding gives a NaN distance, not 0 ("inside").
  d = jax.jit(lambda a, b: lpips_distance(features_fn, a, b))(x1, nan)
  assert np.isnan(np.asarray(d)[0]) and np.all(np.isfinite(np.asarray(d)[1:]))
