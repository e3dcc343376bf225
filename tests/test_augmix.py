"""Tests of adacorr.augment.augmix and .image_ops: PIL parity, JSD, AugMix properties.

PIL parity: on x = u8 / 255 every op returns PIL's uint8 result / 255. Lookup-table ops
(autocontrast, equalize, posterize, solarize) and ImageEnhance blends are exact. The
bilinear ops follow PIL's sampling rule but use float32 coordinates where PIL uses double, so
where the exact interpolated value is an integer PIL's truncation can land one level apart:
every pixel is within one level and >= 97% are exact (measured: >= 99.8% on uniformly random
images, 98.0% on the few-level image whose differences of multiples of 60 make integer
interpolants common).
"""

import functools
import importlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from adacorr.augment import image_ops
from adacorr.augment.augmix import (ALL_OPS, CIFAR_OPS, augment_and_mix, augmix, augmix_views,
                                    jsd_consistency, jsd_consistency_per_example)

# `adacorr.augment.augmix` is the function; the module by its import path.
augmix_module = importlib.import_module("adacorr.augment.augmix")

# Blends are exact on CPU; an accelerator may fuse d + f * (u - d) into an FMA.
BLEND_TOL = 0 if jax.default_backend() == "cpu" else 1


def _uint8_images():
  rng = np.random.default_rng(0)
  rgb = np.stack([rng.integers(0, 256, (16, 16, 3)),
                  rng.integers(40, 66, (16, 16, 3)),          # low contrast: autocontrast's
                  rng.integers(0, 5, (16, 16, 3)) * 60])      # double-precision table; few levels
  gray = np.stack([rng.integers(0, 256, (16, 16, 1)), rng.integers(3, 29, (16, 16, 1))])
  return {"rgb": rgb.astype(np.uint8), "gray": gray.astype(np.uint8)}


UINT8 = _uint8_images()


def to_pil(u):
  return Image.fromarray(u if u.shape[-1] == 3 else u[..., 0])


def from_pil(im, c):
  return np.asarray(im).reshape(im.size[1], im.size[0], c).astype(np.int64)


def as_levels(x):
  levels = np.asarray(x, np.float64) * 255
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # on the k / 255 grid
  return np.round(levels).astype(np.int64)


def affine(im, matrix):
  return im.transform(im.size, Image.AFFINE, matrix, resample=Image.BILINEAR)


# (ours(image, param), PIL(im, param), params, exact?)
OP_CASES = {
    "autocontrast": (lambda x, p: image_ops.autocontrast(x),
                     lambda im, p: ImageOps.autocontrast(im), [0], True),
    "equalize": (lambda x, p: image_ops.equalize(x), lambda im, p: ImageOps.equalize(im), [0],
                 True),
    "posterize": (image_ops.posterize, ImageOps.posterize, [1, 3, 4, 8], True),
    "solarize": (image_ops.solarize, ImageOps.solarize, [0, 128, 200, 254, 256], True),
    "rotate": (image_ops.rotate, lambda im, p: im.rotate(p, resample=Image.BILINEAR),
               [7, -29.3, 17.9, 90, 180], False),
    "shear_x": (image_ops.shear_x, lambda im, p: affine(im, (1, p, 0, 0, 1, 0)),
                [0.17, -0.283], False),
    "shear_y": (image_ops.shear_y, lambda im, p: affine(im, (1, 0, 0, p, 1, 0)),
                [0.131, -0.229], False),
    "translate_x": (image_ops.translate_x, lambda im, p: affine(im, (1, 0, p, 0, 1, 0)),
                    [3, -5, 1.37], False),
    "translate_y": (image_ops.translate_y, lambda im, p: affine(im, (1, 0, 0, 0, 1, p)),
                    [2, -4, -2.71], False),
    "color": (image_ops.color, lambda im, p: ImageEnhance.Color(im).enhance(p),
              [0.0, 0.118, 0.64, 1.0, 1.9], "blend"),
    "contrast": (image_ops.contrast, lambda im, p: ImageEnhance.Contrast(im).enhance(p),
                 [0.0, 0.37, 0.64, 1.37, 1.9], "blend"),
    "brightness": (image_ops.brightness, lambda im, p: ImageEnhance.Brightness(im).enhance(p),
                   [0.118, 0.5, 1.3, 1.9], "blend"),
    "sharpness": (image_ops.sharpness, lambda im, p: ImageEnhance.Sharpness(im).enhance(p),
                  [0.0, 0.37, 1.0, 1.9], "blend"),
}


@functools.cache
def _batched_op(name):
  return jax.jit(jax.vmap(OP_CASES[name][0], in_axes=(0, None)))


def assert_matches_pil(ours, ref, exact, what):
  d = np.abs(ours - ref)
  if exact is True:
    assert d.max() == 0, f"{what}: {np.count_nonzero(d)} pixels differ"
  elif exact == "blend":
    assert d.max() <= BLEND_TOL, f"{what}: max diff {d.max()}"
  else:  # bilinear, float32 coordinates
    assert d.max() <= 1, f"{what}: max diff {d.max()} levels"
    assert (d == 0).mean() >= 0.97, f"{what}: only {(d == 0).mean():.4f} exact"


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_op_matches_pil(name):
  _, pil_op, params, exact = OP_CASES[name]
  assert name in ALL_OPS
  for kind, u8 in UINT8.items():
    x = jnp.asarray(u8 / 255.0, jnp.float32)
    for p in params:
      ours = as_levels(_batched_op(name)(x, p))
      for i, u in enumerate(u8):
        ref = from_pil(pil_op(to_pil(u), p), u.shape[-1])
        assert_matches_pil(ours[i], ref, exact, f"{name}({p}) {kind}[{i}]")


def test_color_is_identity_on_gray_and_ops_reject_bad_args():
  x = jnp.asarray(UINT8["gray"][0] / 255.0, jnp.float32)
  np.testing.assert_allclose(image_ops.color(x, 0.2), x, atol=1e-7)  # XLA: u * (1 / 255)
  with pytest.raises(ValueError, match="bits"):
    image_ops.posterize(x, 0)
  with pytest.raises(ValueError, match="image"):
    image_ops.rotate(x[None], 10.0)


# --------------------------------------------------------------------------- AugMix's op step


def reference_op(name, im, level, sign):
  """google-research/augmix augmentations.py with the level and sign given."""
  int_param = lambda maxval: int(level * maxval / 10)
  float_param = lambda maxval: float(level) * maxval / 10.0
  w, h = im.size
  if name in ("autocontrast", "equalize"):
    return getattr(ImageOps, name)(im)
  if name == "posterize":
    return ImageOps.posterize(im, 4 - int_param(4))
  if name == "solarize":
    return ImageOps.solarize(im, 256 - int_param(256))
  if name == "rotate":
    return im.rotate(sign * int_param(30), resample=Image.BILINEAR)
  if name == "shear_x":
    return affine(im, (1, sign * float_param(0.3), 0, 0, 1, 0))
  if name == "shear_y":
    return affine(im, (1, 0, 0, sign * float_param(0.3), 1, 0))
  if name == "translate_x":
    return affine(im, (1, 0, sign * int_param(w / 3), 0, 1, 0))
  if name == "translate_y":
    return affine(im, (1, 0, 0, 0, 1, sign * int_param(h / 3)))
  enhancer = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
              "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}[name]
  return enhancer(im).enhance(float_param(1.8) + 0.1)


@pytest.mark.parametrize("kind", ["rgb", "gray"])
def test_augmix_step_is_the_reference_op_at_the_drawn_level(kind):
  """Each chain step: op drawn uniformly from ALL_OPS, level ~ U(0.1, 10) scaled as the
  reference, applied to levels, equals the reference op in PIL. The grouped step that
  `augmix` runs (`_step`, every chain active but one) equals the masked one (`_apply_op`)
  exactly."""
  # pylint: disable=protected-access
  u = UINT8[kind][0]
  draws = jax.random.uniform(jax.random.key(3), (96, 3))
  sample = jax.vmap(lambda r: augmix_module._sample_op(r, len(ALL_OPS), 10.0))
  step = jax.jit(jax.vmap(
      lambda o, lv, s: augmix_module._apply_op(jnp.asarray(u, jnp.float32), o, lv, s, ALL_OPS)))
  op, level, sign = sample(draws)
  out = np.asarray(step(op, level, sign)).astype(np.int64)
  active = jnp.arange(len(draws)) != 5
  grouped = jax.jit(lambda v, o, lv, s, a: augmix_module._step(v, o, lv, s, a, ALL_OPS))(
      jnp.broadcast_to(jnp.asarray(u, jnp.float32), (len(draws),) + u.shape), op, level, sign,
      active)
  np.testing.assert_array_equal(np.asarray(grouped)[np.asarray(active)], out[np.asarray(active)])
  np.testing.assert_array_equal(grouped[5], u)  # an inactive chain is left as is
  op, level, sign = np.asarray(op), np.asarray(level), np.asarray(sign)
  assert CIFAR_OPS == ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x",
                       "shear_y", "translate_x", "translate_y")  # the reference's list
  assert ALL_OPS == CIFAR_OPS + ("color", "contrast", "brightness", "sharpness")
  assert set(op.tolist()) == set(range(len(ALL_OPS)))
  assert 0.1 <= level.min() and level.max() <= 10.0 and set(sign.tolist()) == {-1.0, 1.0}
  for i in range(len(draws)):
    name = ALL_OPS[op[i]]
    ref = from_pil(reference_op(name, to_pil(u), float(level[i]), int(sign[i])), u.shape[-1])
    assert_matches_pil(out[i], ref, OP_CASES[name][3],
                       f"{name} level {level[i]:.3f} sign {sign[i]}")


def test_grouped_warp_equals_image_ops_warp():
  """`_affine_levels` (flat gathers) computes `image_ops.affine_levels` exactly."""
  # pylint: disable=protected-access
  rng = np.random.default_rng(2)
  for c in (3, 1):
    u = jnp.asarray(rng.integers(0, 256, (24, 16, 16, c)), jnp.float32)
    degrees = jnp.asarray(rng.uniform(-180, 180, 8), jnp.float32)
    matrices = jnp.concatenate([
        jax.vmap(lambda d: image_ops.rotate_matrix(d, 16, 16))(degrees),
        jax.vmap(image_ops.shear_x_matrix)(jnp.linspace(-0.3, 0.3, 4)),
        jax.vmap(image_ops.translate_y_matrix)(jnp.array([-5.0, 3.0, 0.0, 17.0])),
        jnp.asarray(rng.uniform(-1.5, 1.5, (8, 6)), jnp.float32) * jnp.array([1, 1, 9, 1, 1, 9])])
    ours = jax.jit(jax.vmap(augmix_module._affine_levels))(u, matrices)
    np.testing.assert_array_equal(ours, jax.jit(jax.vmap(image_ops.affine_levels))(u, matrices))


GROUPED_CASES = [  # (channels, augmix options): the defaults; all ops, gray; fixed depth
    (3, dict(severity=3, width=3, depth=-1, alpha=1.0, all_ops=False)),
    (1, dict(severity=10, width=3, depth=-1, alpha=1.0, all_ops=True)),
    (3, dict(severity=10, width=2, depth=4, alpha=0.5, all_ops=True)),
]


@pytest.mark.parametrize("channels, kw", GROUPED_CASES)
def test_grouped_augmix_equals_the_masked_formulation(channels, kw):
  """`augmix` (chains grouped by op, `_batched`) gives the earlier masked formulation's
  results (`_masked_batched`) bit for bit, for a batch of 44 (up to 132 chains: groups of
  several chunks) and for one image, which matches its row of the batch."""
  # pylint: disable=protected-access
  x = jax.random.uniform(jax.random.key(11), (44, 16, 16, channels))
  keys = jax.random.split(jax.random.key(12), 44)
  grouped = augmix_module._batched(*kw.values())
  masked = augmix_module._masked_batched(*kw.values())
  full = np.asarray(grouped(x, keys))
  np.testing.assert_array_equal(full, masked(x, keys))
  one = np.asarray(grouped(x[3:4], keys[3:4]))
  np.testing.assert_array_equal(one, masked(x[3:4], keys[3:4]))
  # The final mix may round one ulp apart alone (B = 1), as it did before.
  np.testing.assert_allclose(one, full[3:4], rtol=0, atol=1e-6)
  if kw["all_ops"] and channels == 1:
    # Inside an outer jit (as in a train step) both are inlined; their mix may round one
    # ulp apart from the standalone call's, the same for both.
    inlined = jax.jit(lambda a, k: (grouped(a, k), masked(a, k)))(x, keys)
    np.testing.assert_array_equal(inlined[0], inlined[1])
    np.testing.assert_allclose(inlined[0], full, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- augmix


@pytest.fixture(scope="module")
def batch():
  x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
  return x.at[0, 0, 0].set(0.0).at[0, 0, 1].set(1.0)


@pytest.fixture(scope="module")
def augmixed(batch):
  return augmix(batch, jax.random.key(1))


def test_augmix_range_shape_and_determinism(batch, augmixed):
  out = augmixed
  assert out.shape == batch.shape and out.dtype == jnp.float32
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  np.testing.assert_array_equal(augmix(batch, jax.random.key(1)), out)
  other = augmix(batch, jax.random.key(2))
  assert not np.allclose(other, out)
  diffs = np.abs(np.asarray(out) - np.asarray(batch)).mean(axis=(1, 2, 3))
  assert np.all(diffs > 1e-3) and np.all(diffs < 0.5)  # augmented, still the image


def test_augmix_examples_are_independent_of_the_batch(batch, augmixed):
  keys = jax.random.split(jax.random.key(1), batch.shape[0])
  perm = np.array([2, 0, 3, 1])
  np.testing.assert_allclose(augmix(batch[perm], keys[perm]), np.asarray(augmixed)[perm],
                             atol=1e-6)
  neighbours = batch.at[1:].set(jax.random.uniform(jax.random.key(9), batch[1:].shape))
  np.testing.assert_allclose(augmix(neighbours, keys)[0], augmixed[0], atol=1e-6)
  np.testing.assert_allclose(augment_and_mix(batch[2], keys[2]), augmixed[2], atol=1e-6)


def test_augmix_views_use_independent_keys(batch):
  x = batch[:2]  # two views of two images run as one batch of 4 (the compiled shape)
  key = jax.random.key(5)
  v1, v2 = augmix_views(x, key)
  assert v1.shape == x.shape and not np.allclose(v1, v2)
  view_keys = jax.vmap(lambda k: jax.random.split(k, 2))(jax.random.split(key, 2))
  expected = augmix(jnp.concatenate([x, x]), jnp.concatenate([view_keys[:, 0],
                                                              view_keys[:, 1]]))
  np.testing.assert_allclose(jnp.concatenate([v1, v2]), expected, atol=1e-6)
  np.testing.assert_array_equal(augmix_views(x, key)[1], v2)


def test_augmix_gray_all_ops_fixed_depth():
  x = jax.random.uniform(jax.random.key(4), (4, 16, 16, 1))
  kw = dict(severity=10, width=2, depth=2, alpha=0.5, all_ops=True)
  out = augmix(x, jax.random.key(0), **kw)
  assert out.shape == x.shape and out.dtype == x.dtype
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  assert not np.allclose(out, x)
  np.testing.assert_array_equal(augmix(x, jax.random.key(0), **kw), out)


def test_augmix_traces_under_jit(batch):
  shape = jax.eval_shape(lambda x, k: augmix(x, k), batch, jax.random.key(0))
  assert shape.shape == batch.shape and shape.dtype == batch.dtype


@pytest.mark.parametrize("kwargs, match", [
    (dict(images=np.zeros((16, 16, 3), np.float32)), "images"),
    (dict(images=np.full((1, 4, 4, 3), 1.5, np.float32)), "images"),
    (dict(images=np.zeros((1, 4, 4, 2), np.float32)), "images"),
    (dict(key=jax.random.split(jax.random.key(0), 3)), "key"),
    (dict(severity=0), "severity"), (dict(severity=11), "severity"),
    (dict(width=0), "width"), (dict(depth=0), "depth"), (dict(depth=-2), "depth"),
    (dict(alpha=0.0), "alpha"), (dict(alpha=-1.0), "alpha"),
])
def test_augmix_rejects_bad_arguments(kwargs, match):
  args = dict(images=np.zeros((2, 4, 4, 3), np.float32), key=jax.random.key(0))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    augmix(**args)


# --------------------------------------------------------------------------- JSD


def jsd_numpy(*logits):
  """The reference's torch computation, in float64."""
  ps = []
  for lg in logits:
    e = np.exp(lg - lg.max(axis=1, keepdims=True))
    ps.append(e / e.sum(axis=1, keepdims=True))
  log_m = np.log(np.clip(sum(ps) / 3.0, 1e-7, 1.0))
  kl = [np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - log_m), 0.0)) / len(p)
        for p in ps]  # F.kl_div(log_m, p, reduction='batchmean')
  return sum(kl) / 3.0


@pytest.fixture(scope="module")
def logits():
  rng = np.random.default_rng(0)
  return [rng.normal(0, 3, (8, 10)).astype(np.float32) for _ in range(3)]


def test_jsd_matches_numpy_and_is_positive(logits):
  value = jsd_consistency(*logits)
  assert value.shape == () and value.dtype == jnp.float32
  assert float(value) > 0.01
  np.testing.assert_allclose(float(value), jsd_numpy(*[l.astype(np.float64) for l in logits]),
                             rtol=1e-5)
  per = jsd_consistency_per_example(*logits)
  assert per.shape == (8,) and np.all(np.asarray(per) > 0)
  np.testing.assert_allclose(float(jnp.mean(per)), float(value), rtol=1e-6)


def test_jsd_is_symmetric(logits):
  values = [float(jsd_consistency(*p)) for p in itertools.permutations(logits)]
  np.testing.assert_allclose(values, values[0], rtol=1e-6)


def test_jsd_is_zero_for_identical_predictions(logits):
  np.testing.assert_allclose(jsd_consistency(logits[0], logits[0], logits[0]), 0.0, atol=1e-6)
  shifted = logits[0] + 5.0  # same softmax
  np.testing.assert_allclose(jsd_consistency(logits[0], shifted, logits[0]), 0.0, atol=1e-6)
  confident = np.array([[100.0, 0.0, -100.0]], np.float32)  # p below the 1e-7 clip
  assert float(jsd_consistency(confident, confident, confident)) == pytest.approx(0.0, abs=1e-6)
  assert float(jsd_consistency(confident, confident, confident)) >= 0.0


def test_jsd_rejects_mismatched_shapes(logits):
  with pytest.raises(ValueError, match="logits_aug1"):
    jsd_consistency(logits[0], logits[1][:4], logits[2])
  with pytest.raises(ValueError, match="logits_clean"):
    jsd_consistency(logits[0][0], logits[1][0], logits[2][0])
