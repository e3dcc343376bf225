"""No NaN and no out-of-range output for finite in-range input (issue 27).

* Every corruption in `corruptions.ALL_CORRUPTIONS` at every severity gives finite images
  in [0, 1] on small random images (16 x 16: uniform noise, all black, all white,
  black-and-white noise), and at severity 5 of both parameter tables on 3 x 3 images
  (down to 1 x 1 for the two corruptions that failed there: elastic_transform's affine
  fit, fog's ImageNet map).
* `attacks.ada` gives finite images in [0, 1] on random inputs, with a corruption net
  whose raw output leaves [0, 1], for radii from tiny to 0.9, whole-batch and chunked.

Kept fast: per corruption ONE jitted program evaluates every case (compiles dominate on
CPU), and AdA compiles twice (whole batch, nano-batches), the radius traced. (The eager
path, where `ada` also checks its result for NaN, is in test_bad_inputs_ada_corruptions.py.)
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import attacks, corruptions
from adacorr.corruptions import ALL_CORRUPTIONS, SEVERITIES

UNCALIBRATED = "ignore:corrupt. params="  # the table-size warning: expected on tiny images
# XLA:CPU compiles these programs ~30% faster without its expensive optimisations; the
# programs compute the same operations (no fast-math either way), so finiteness and range
# are properties of the same computation.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _images(key, n, size):
  """n random images (size, size, 3): uniform, black, white, binary noise (cycled)."""
  k1, k2 = jax.random.split(key)
  kinds = [jax.random.uniform(k1, (size, size, 3)), jnp.zeros((size, size, 3)),
           jnp.ones((size, size, 3)),
           jax.random.bernoulli(k2, 0.5, (size, size, 3)).astype(jnp.float32)]
  return jnp.stack([kinds[i % 4] for i in range(n)])


def _assert_valid(images, what):
  v = np.asarray(images, np.float32)
  assert np.isfinite(v).all(), f"{what}: {int((~np.isfinite(v)).sum())} NaN/inf values"
  assert v.min() >= 0.0 and v.max() <= 1.0, f"{what}: values in [{v.min()}, {v.max()}]"


@pytest.mark.filterwarnings(UNCALIBRATED)
@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_every_corruption_every_severity_finite_in_unit_interval(name):
  x16 = _images(jax.random.key(0), 4, 16)
  x3 = _images(jax.random.key(1), 4, 3)

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def run(x16, x3, key):
    out = {}
    for s in SEVERITIES:
      out[("cifar10", 16, s)] = corruptions.corrupt(x16, name, s, key)
    # Both tables' harshest rows on 3 x 3 images, where every kernel, offset and zoom
    # crop is larger than the image. (The ImageNet-C table on larger images: severity 3
    # on 64 x 64 in test_corruptions.py::test_rgb_images_both_tables.)
    for table in corruptions.PARAM_TABLES:
      out[(table, 3, 5)] = corruptions.corrupt(x3, name, 5, key, params=table)
    return out

  for case, images in run(x16, x3, jax.random.key(2)).items():
    assert images.shape == (x16 if case[1] == 16 else x3).shape
    _assert_valid(images, f"{name} {case}")


@pytest.mark.filterwarnings(UNCALIBRATED)
@pytest.mark.parametrize("name", ["elastic_transform", "fog"])
def test_degenerate_sizes_stay_finite(name):
  """Side 1 and 2: elastic_transform's affine fit was singular (NaN), fog's ImageNet
  plasma map had side 1 (AssertionError)."""

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def run(x1, x2, key):
    return [corruptions.corrupt(x, name, 5, key, params=table)
            for x in (x1, x2) for table in corruptions.PARAM_TABLES]

  for i, images in enumerate(run(_images(jax.random.key(3), 2, 1),
                                 _images(jax.random.key(4), 2, 2), jax.random.key(5))):
    _assert_valid(images, f"{name} case {i}")


# --------------------------------------------------------------------------- AdA


class UnboundedNet(nn.Module):
  """A corruption net whose raw output leaves [0, 1]: conv-relu-conv, large weights, no
  clip (as a user's net might be)."""

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.normal(1.0)
    h = nn.relu(nn.Conv(4, (3, 3), kernel_init=init, bias_init=init)(x))
    return nn.Conv(x.shape[-1], (3, 3), kernel_init=init, bias_init=init)(h)


class TinyClassifier(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(4)(x.reshape(x.shape[0], -1))


B, SIZE = 4, 6


@pytest.fixture(scope="module")
def problem():
  net, clf = UnboundedNet(), TinyClassifier()
  # Drawn by hand with numpy (net.init would cost a compile): N(0, 1) weights and biases.
  rng = np.random.default_rng(10)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  phi = {"Conv_0": {"kernel": normal(3, 3, 3, 4), "bias": normal(4)},
         "Conv_1": {"kernel": normal(3, 3, 4, 3), "bias": normal(3)}}
  theta = {"Dense_0": {"kernel": 0.1 * normal(SIZE * SIZE * 3, 4), "bias": normal(4)}}
  apply = lambda p, imgs: net.apply({"params": p}, imgs)
  logits_fn = lambda imgs: clf.apply({"params": theta}, imgs)
  return apply, phi, logits_fn


@pytest.mark.parametrize("chunk_size", [None, 1])
def test_ada_output_finite_in_unit_interval_for_an_unbounded_net(problem, chunk_size):
  apply, phi, logits_fn = problem
  run = jax.jit(lambda x, y, k, nu: attacks.ada(
      apply, phi, logits_fn, x, y, k, nu=nu, num_steps=2, chunk_size=chunk_size,
      return_deltas=True), compiler_options=FAST_COMPILE)
  rng = np.random.default_rng(0)
  for draw, nu in enumerate((1e-4, 0.015, 0.3, 0.9)):
    key = jax.random.key(100 + draw)
    x = _images(key, B, SIZE)
    y = jnp.asarray(rng.integers(0, 4, B), jnp.int32)
    x_adv, deltas = run(x, y, jax.random.split(key, B), jnp.float32(nu))
    assert x_adv.shape == x.shape
    _assert_valid(x_adv, f"ada nu={nu}")
    if draw == 0:  # the net's own output reaches far outside [0, 1]: clipped there
      raw = np.asarray(jax.jit(apply, compiler_options=FAST_COMPILE)(phi, x))
      assert raw.min() < -0.5 and raw.max() > 1.5
      assert float(x_adv.min()) == 0.0 and float(x_adv.max()) == 1.0
    assert all(np.isfinite(np.asarray(d)).all() for d in jax.tree.leaves(deltas))
    rel = max(float(jnp.max(r)) for r in jax.tree.leaves(attacks.relative_norms(deltas, phi)))
    assert rel <= nu * (1 + 1e-4)
