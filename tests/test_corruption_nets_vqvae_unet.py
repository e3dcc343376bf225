"""Tests for the VQ-VAE and U-Net corruption nets (adacorr/models/corruption)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr.models.corruption import UNet, VQVAE, VectorQuantizerEMA

DECAY = 0.99
EPS = 1e-5


def _count(tree) -> int:
  return int(sum(np.prod(leaf.shape, dtype=np.int64)
                 for leaf in jax.tree_util.tree_leaves(tree)))


def _images(key, shape):
  return jax.random.uniform(jax.random.PRNGKey(key), shape, jnp.float32)


X = _images(0, (2, 16, 16, 3))  # the shape most tests use, so compiled ops are reused


def _numpy_init(net, channels):
  """Variables with the real structure filled by NumPy (fan-in scaled normal kernels,
  uniform codebook, zeros elsewhere); avoids compiling initialisers for new shapes."""
  shapes = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0),
                                           jnp.zeros((1, 16, 16, channels))))
  rng = np.random.default_rng(0)

  def fill(path, s):
    if path[-1].key == "kernel":
      return jnp.asarray(rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])), s.shape), s.dtype)
    if path[-1].key == "embeddings":
      return jnp.asarray(rng.uniform(-np.sqrt(3 / s.shape[0]), np.sqrt(3 / s.shape[0]),
                                     s.shape), s.dtype)
    return jnp.zeros(s.shape, s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _real_init(net, **kwargs):
  # jit + the "rbg" PRNG: same initialisers, but compiling them is several times
  # cheaper on CPU than eager threefry (which compiles one program per kernel shape).
  init = jax.jit(functools.partial(net.init, **kwargs))
  return init(jax.random.key(0, impl="rbg"), X)


@pytest.fixture(scope="module")
def vq3():
  """Really initialised VQ-VAE variables for C=3, from an init with train=True (which
  must not update the EMA state); shared, as initialisation is slow on CPU."""
  return _real_init(VQVAE(), train=True)


@pytest.fixture(scope="module")
def unet3():
  return _real_init(UNet())


# ---------------------------------------------------------------- parameter counts


def test_vqvae_parameter_count_matches_paper():
  shapes = jax.eval_shape(
      lambda: VQVAE().init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
  assert set(shapes) == {"params", "vq_ema"}
  assert _count(shapes["params"]) == 662_723
  assert _count(shapes["vq_ema"]) == 99_330
  assert _count(shapes) == 762_053  # AdA paper, App. E.6 / Sec. 5
  ema = jax.tree_util.tree_map(lambda a: a.shape, shapes["vq_ema"]["vq"])
  assert ema == {
      "embeddings": (64, 512),
      "ema_cluster_size": {"hidden": (512,), "average": (512,), "counter": ()},
      "ema_dw": {"hidden": (64, 512), "average": (64, 512), "counter": ()},
  }
  # Every kernel and bias is in 'params'; nothing of the codebook is.
  names = {"/".join(str(k.key) for k in path)
           for path, _ in jax.tree_util.tree_flatten_with_path(shapes["params"])[0]}
  assert all(n.endswith(("kernel", "bias")) for n in names)
  assert len(names) == 2 * 15  # 15 convolutions, each with a bias


def test_vqvae_param_count_independent_of_image_size():
  a = jax.eval_shape(lambda: VQVAE().init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 3))))
  assert _count(a) == 762_053


def test_unet_parameter_count_matches_paper():
  shapes = jax.eval_shape(
      lambda: UNet().init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
  assert set(shapes) == {"params"}
  assert _count(shapes["params"]) == 58_627
  kernels = {k: v["kernel"].shape for k, v in shapes["params"].items()}
  assert kernels == {"enc_1": (3, 3, 3, 16), "enc_2": (3, 3, 16, 32),
                     "bottleneck": (3, 3, 32, 64), "dec_1": (3, 3, 96, 32),
                     "dec_2": (3, 3, 48, 16), "head": (3, 3, 16, 3)}


# ------------------------------------------------------------- contract: shape, range


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("net", [VQVAE(), UNet()], ids=["vqvae", "unet"])
def test_output_shape_and_range(net, channels, vq3, unet3):
  if channels == 3:
    variables = vq3 if isinstance(net, VQVAE) else unet3
  else:
    variables = _numpy_init(net, channels)
  apply = jax.jit(net.apply)
  for size in (28, 32):
    x = _images(size, (2, size, size, channels))
    y = apply(variables, x)
    assert y.shape == x.shape and y.dtype == jnp.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert float(jnp.abs(y - x).max()) > 0.0


def test_outputs_clip_to_unit_interval(vq3, unet3):
  for net, variables in ((VQVAE(), vq3), (UNet(), unet3)):
    # (Not much larger: at ~1e15 activations the straight-through sum z + (e - z)
    # rounds to 0 in float32, as in Sonnet.)
    big = jax.tree_util.tree_map(lambda p: 5.0 * p, variables["params"])
    y = jax.jit(net.apply)({**variables, "params": big}, X)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert bool(jnp.any(y == 0.0) | jnp.any(y == 1.0))  # clipping was needed


@pytest.mark.parametrize("net", [VQVAE(), UNet()], ids=["vqvae", "unet"])
def test_bad_input_shapes_raise(net):
  variables = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))))
  for shape in [(8, 8, 3), (1, 30, 32, 3), (1, 32, 30, 3), (2, 1, 8, 8, 3)]:
    with pytest.raises(ValueError, match="x"):
      jax.eval_shape(lambda v, s=shape: net.apply(v, jnp.zeros(s)), variables)
  with pytest.raises(ValueError, match="x"):
    jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), jnp.zeros((1, 30, 32, 3))))


# --------------------------------------------------------------- VQ-VAE quantiser


def _nearest(z_flat, emb):
  """Independent NumPy nearest-code search: indices and squared distances."""
  d = ((z_flat[:, :, None] - emb[None, :, :])**2).sum(axis=1)  # (N, K)
  idx = d.argmin(axis=1)
  return idx, d[np.arange(len(idx)), idx]


def _encode(variables, x):
  return np.asarray(VQVAE().apply(variables, x, method=VQVAE.encode), np.float64)


def test_vq_loss_is_commitment_times_mse_to_nearest_code(vq3):
  z_flat = _encode(vq3, X).reshape(-1, 64)
  emb = np.asarray(vq3["vq_ema"]["vq"]["embeddings"], np.float64)
  idx, sq = _nearest(z_flat, emb)
  _, state = VQVAE().apply(vq3, X, train=True, mutable=["losses"])
  (vq_loss,) = state["losses"]["vq"]["vq_loss"]
  (perplexity,) = state["losses"]["vq"]["perplexity"]
  np.testing.assert_allclose(float(vq_loss), 0.25 * sq.sum() / z_flat.size, rtol=1e-4)
  p = np.bincount(idx, minlength=512) / len(idx)
  np.testing.assert_allclose(float(perplexity), np.exp(-np.sum(p * np.log(p + 1e-10))),
                             rtol=1e-4)


def test_init_state_and_codebook_initialiser(vq3):
  vq0 = vq3["vq_ema"]["vq"]
  for ema in ("ema_cluster_size", "ema_dw"):
    assert vq0[ema]["counter"].dtype == jnp.int32 and int(vq0[ema]["counter"]) == 0
    assert float(jnp.abs(vq0[ema]["hidden"]).max()) == 0.0
    assert float(jnp.abs(vq0[ema]["average"]).max()) == 0.0
  limit = np.sqrt(3.0 / 64)  # Sonnet: VarianceScaling(1, fan_in, uniform) on (64, 512)
  emb0 = np.abs(np.asarray(vq0["embeddings"]))
  assert emb0.max() <= limit and emb0.max() > 0.95 * limit
  # (vq3 comes from an init with train=True: it updated nothing, as checked above.)
  shapes = jax.eval_shape(lambda: VQVAE().init(jax.random.PRNGKey(0), X, train=True))
  assert set(shapes) == {"params", "vq_ema"}  # and sowed no 'losses'


def test_ema_update_matches_sonnet_debiased_ema(vq3):
  net = VQVAE()
  variables = vq3
  hid_cs = np.zeros(512)
  hid_dw = np.zeros((64, 512))
  emb = np.asarray(vq3["vq_ema"]["vq"]["embeddings"], np.float64)
  for step, x in enumerate([X, _images(11, X.shape)], start=1):
    z = _encode(variables, x).reshape(-1, 64)
    idx, _ = _nearest(z, emb)
    onehot = np.eye(512)[idx]
    counts = onehot.sum(0)
    # Sonnet ExponentialMovingAverage: hidden -= (hidden - v)(1 - d); avg = hidden/(1-d^t).
    hid_cs = hid_cs - (hid_cs - counts) * (1 - DECAY)
    hid_dw = hid_dw - (hid_dw - z.T @ onehot) * (1 - DECAY)
    avg_cs = hid_cs / (1 - DECAY**step)
    avg_dw = hid_dw / (1 - DECAY**step)
    n = avg_cs.sum()
    smoothed = (avg_cs + EPS) / (n + 512 * EPS) * n  # Laplace smoothing
    new_emb = avg_dw / smoothed[None]

    _, state = net.apply(variables, x, train=True, mutable=["vq_ema", "losses"])
    vq = state["vq_ema"]["vq"]
    assert int(vq["ema_cluster_size"]["counter"]) == step
    assert int(vq["ema_dw"]["counter"]) == step
    np.testing.assert_allclose(vq["ema_cluster_size"]["hidden"], hid_cs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vq["ema_cluster_size"]["average"], avg_cs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(vq["ema_dw"]["hidden"], hid_dw, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(vq["ema_dw"]["average"], avg_dw, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(vq["embeddings"], new_emb, rtol=1e-3, atol=1e-5)
    if step == 1:
      # One step from the zero state: the debiased EMA is exactly this batch's counts,
      # and each used code moves (all the way, up to smoothing) to its inputs' mean.
      np.testing.assert_allclose(vq["ema_cluster_size"]["average"], counts, rtol=1e-5)
      used = np.flatnonzero(counts)
      means = (z.T @ onehot)[:, used] / counts[used]
      new = np.asarray(vq["embeddings"], np.float64)[:, used]
      assert np.all(np.linalg.norm(new - means, axis=0)
                    < np.linalg.norm(emb[:, used] - means, axis=0))
      np.testing.assert_allclose(new, means, rtol=1e-3, atol=1e-5)
    variables = {**variables, "vq_ema": state["vq_ema"]}
    emb = np.asarray(vq["embeddings"], np.float64)


def test_eval_mode_and_immutable_state_leave_ema_unchanged(vq3):
  net = VQVAE()
  y_eval, state = net.apply(vq3, X, train=False, mutable=["vq_ema", "losses"])
  assert not state.get("losses")
  for a, b in zip(jax.tree_util.tree_leaves(state["vq_ema"]),
                  jax.tree_util.tree_leaves(vq3["vq_ema"])):
    np.testing.assert_array_equal(a, b)
  # train=True without a mutable 'vq_ema' is allowed and changes nothing either.
  y_train = net.apply(vq3, X, train=True)
  np.testing.assert_array_equal(y_eval, y_train)


def test_quantizer_standalone_and_straight_through():
  vq = VectorQuantizerEMA()
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 64))
  variables = vq.init(jax.random.PRNGKey(1), z)
  assert set(variables) == {"vq_ema"}
  out = vq.apply(variables, z)
  emb = np.asarray(variables["vq_ema"]["embeddings"])
  idx, _ = _nearest(np.asarray(z).reshape(-1, 64), emb)
  np.testing.assert_array_equal(np.asarray(out["encoding_indices"]).reshape(-1), idx)
  np.testing.assert_allclose(np.asarray(out["quantize"]).reshape(-1, 64), emb.T[idx],
                             atol=1e-6)
  # Straight-through: d quantize / d inputs is the identity.
  g = jax.grad(lambda v: jnp.sum(vq.apply(variables, v)["quantize"] * 2.0))(z)
  np.testing.assert_allclose(g, 2.0 * np.ones(z.shape), atol=1e-6)
  with pytest.raises(ValueError, match="embedding_dim"):
    vq.apply(variables, z[..., :32])


def test_vqvae_gradients_flow_through_quantiser(vq3):
  net = VQVAE()

  def loss(params, x):
    return jnp.sum(net.apply({**vq3, "params": params}, x) ** 2)

  gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(vq3["params"], X)
  assert float(jnp.abs(gx).max()) > 0.0
  # The encoder gets gradient only through the straight-through estimator.
  assert float(jnp.abs(gp["encoder"]["enc_1"]["kernel"]).max()) > 0.0


# ----------------------------------------------------------------------- U-Net


def test_unet_linear_head_and_per_example_vmap(unet3):
  net = UNet()
  y = net.apply(unet3, X)
  head = {"kernel": jnp.zeros_like(unet3["params"]["head"]["kernel"]),
          "bias": jnp.array([0.3, -2.0, 7.0])}
  y_const = net.apply({"params": {**unet3["params"], "head": head}}, X)
  np.testing.assert_allclose(y_const, np.broadcast_to([0.3, 0.0, 1.0], X.shape), atol=1e-7)
  # Per-example weights (as AdA uses them): vmap over a stacked copy of the params.
  scaled = jax.tree_util.tree_map(lambda p: 1.1 * p, unet3["params"])
  stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), unet3["params"], scaled)
  ys = jax.jit(jax.vmap(lambda p, xi: net.apply({"params": p}, xi[None])[0]))(stacked, X)
  np.testing.assert_allclose(ys[0], y[0], atol=1e-5)
  np.testing.assert_allclose(ys[1], net.apply({"params": scaled}, X[1:])[0], atol=1e-5)


def test_sonnet_initialisers_and_registry(vq3):
  from adacorr.models.corruption import get_corruption_net  # pylint: disable=g-import-not-at-top
  assert isinstance(get_corruption_net("vqvae"), VQVAE)
  assert isinstance(get_corruption_net("unet"), UNet)
  p = vq3["params"]
  # Sonnet Conv2D: truncated normal with stddev 1/sqrt(kh*kw*in) (before truncation).
  # Sonnet Conv2DTranspose: 1/sqrt(kh*kw*out): dec_2 is (4, 4, 128 in, 64 out) -> 1/32.
  for kernel, fan_in in [(p["encoder"]["enc_2"]["kernel"], 4 * 4 * 64),
                         (p["decoder"]["dec_2"]["kernel"], 4 * 4 * 64),
                         (p["encoder"]["enc_3"]["kernel"], 3 * 3 * 128)]:
    k = np.asarray(kernel)
    np.testing.assert_allclose(k.std(), 0.8796 / np.sqrt(fan_in), rtol=0.03)
    assert np.abs(k).max() <= 2.0 / np.sqrt(fan_in) + 1e-6
  assert float(jnp.abs(p["decoder"]["dec_3"]["bias"]).max()) == 0.0
