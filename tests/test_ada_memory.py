"""Tests for AdA's memory planning (adacorr/attacks/memory.py, chunk_size='auto')."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adacorr.attacks import adversarial_augment as aa
from adacorr.attacks import memory
from adacorr.models.corruption import EDSR
from adacorr.models.small_cnn import SmallCNN


def test_auto_chunk_size_is_the_largest_that_fits_the_budget():
  # 100 bytes per example, 350 per device: 3 examples per device, 2 devices -> 6.
  assert memory.auto_chunk_size(64, 100, 350, num_devices=2) == 6
  assert memory.auto_chunk_size(64, 100, 399, num_devices=1) == 3
  assert memory.auto_chunk_size(64, 100, 400, num_devices=1) == 4
  # The whole per-device batch fits: no chunking.
  assert memory.auto_chunk_size(64, 100, 32 * 100, num_devices=2) is None
  assert memory.auto_chunk_size(64, 100, 31 * 100, num_devices=2) == 62
  # A cap (CPU's one per device) wins over a large budget.
  assert memory.auto_chunk_size(64, 100, 10 ** 9, num_devices=8, max_per_device=1) == 8


def test_auto_chunk_size_warns_when_one_example_does_not_fit():
  with pytest.warns(RuntimeWarning, match="more than the memory budget"):
    assert memory.auto_chunk_size(16, 1000, 10, num_devices=4) == 4


@pytest.mark.parametrize("arg", ["batch_size", "bytes_per_example", "budget_bytes",
                                 "num_devices"])
def test_auto_chunk_size_rejects_non_positive(arg):
  kwargs = dict(batch_size=8, bytes_per_example=10, budget_bytes=100, num_devices=1)
  kwargs[arg] = 0
  with pytest.raises(ValueError, match=arg):
    memory.auto_chunk_size(**kwargs)


class _Device:
  def __init__(self, stats):
    self._stats = stats

  def memory_stats(self):
    return self._stats


def test_memory_budget_from_device_stats_and_cpu_default():
  assert memory.memory_budget(0.5, _Device({"bytes_limit": 1000})) == 500
  assert memory.memory_budget(0.25, _Device({"bytes_limit": 1000})) == 250
  assert memory.memory_budget(device=_Device(None)) == memory.CPU_BUDGET_BYTES
  with pytest.raises(ValueError, match="fraction"):
    memory.memory_budget(0.0, _Device(None))


def test_traced_bytes_counts_every_produced_value_but_not_closed_over_weights():
  w = jnp.ones((1000,), jnp.float32)  # closed over: not counted

  def f(x):
    return jnp.sum((x * 2.0 + w) ** 2)

  got = memory.traced_bytes(f, jax.ShapeDtypeStruct((1000,), jnp.float32))
  # input 4000 + (x*2) 4000 + (+w) 4000 + (**2) 4000 + sum 4.
  assert got == 4 * 4000 + 4


@pytest.fixture(scope="module")
def setup():
  net = EDSR(features=4, num_blocks=1)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(0, 1, (6, 8, 8, 1)), jnp.float32)
  y = jnp.arange(6) % 10
  shapes = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), x[:1]))["params"]
  params = jax.tree.map(lambda s: jnp.asarray(rng.uniform(-0.3, 0.3, s.shape), s.dtype),
                        shapes)
  clf = SmallCNN(num_classes=10)
  clf_vars = clf.init(jax.random.PRNGKey(1), x[:1], train=False)

  def logits_fn(images):
    return clf.apply(clf_vars, images, train=False)

  def apply(p, images):
    return net.apply({"params": p}, images)

  return apply, params, logits_fn, x, y


def test_bytes_per_example_bounds_xla_memory_of_one_example(setup):
  """The estimate is an upper bound on what XLA allocates for one example's step."""
  apply, params, logits_fn, x, y = setup
  estimate = aa.ada_bytes_per_example(apply, params, logits_fn, x, y)

  def step(delta):
    def ce(d):
      logits = logits_fn(aa.perturbed_corruption(apply, params, d, x[:1]))
      return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y[:1]))
    return jax.value_and_grad(ce)(delta)

  one = jax.tree.map(lambda p: jnp.zeros((1,) + p.shape, p.dtype), params)
  stats = jax.jit(step).lower(one).compile().memory_analysis()
  weights = sum(p.size * 4 for p in jax.tree.leaves(params))
  xla = stats.temp_size_in_bytes + stats.output_size_in_bytes + weights
  assert xla <= estimate, (xla, estimate)
  # Not vacuous: it grows with the image size (activations), with a pooled linear head.
  w = jnp.ones((1, 10), jnp.float32)

  def pooled(images):
    return jnp.mean(images, axis=(1, 2)) @ w

  small = aa.ada_bytes_per_example(apply, params, pooled, x, y)
  big = aa.ada_bytes_per_example(apply, params, pooled, jnp.zeros((6, 32, 32, 1)), y)
  assert big > 4 * (small - 3 * weights)


def test_ada_auto_chunking_respects_its_budget(setup, monkeypatch):
  """With a budget of 2.5 examples, 'auto' runs nano-batches of 2, and the result is the
  one of chunk_size=2."""
  apply, params, logits_fn, x, y = setup
  per_example = aa.ada_bytes_per_example(apply, params, logits_fn, x, y)
  seen = []
  original = aa._chunked

  def spy(run, xs, ys, keys, chunk_size, chunk_loop):
    seen.append(chunk_size)
    return original(run, xs, ys, keys, chunk_size, chunk_loop)

  monkeypatch.setattr(aa, "_chunked", spy)
  key = jax.random.PRNGKey(0)
  kw = dict(nu=0.05, num_steps=2)
  auto = aa.ada(apply, params, logits_fn, x, y, key, chunk_size="auto",
                memory_budget=int(2.5 * per_example), **kw)
  assert seen == [2 * jax.device_count()] or (jax.device_count() > 3 and seen == [])
  fixed = aa.ada(apply, params, logits_fn, x, y, key, chunk_size=2, **kw)
  np.testing.assert_allclose(auto, fixed, atol=1e-6)
  assert seen[-1] == 2


def test_ada_rejects_bad_memory_budget(setup):
  apply, params, logits_fn, x, y = setup
  with pytest.raises(ValueError, match="memory_budget"):
    aa.ada(apply, params, logits_fn, x, y, jax.random.PRNGKey(0), nu=0.05, num_steps=1,
           chunk_size="auto", memory_budget=0)
  with pytest.raises(ValueError, match="chunk_size"):
    aa.ada(apply, params, logits_fn, x, y, jax.random.PRNGKey(0), nu=0.05, num_steps=1,
           chunk_size="big")
