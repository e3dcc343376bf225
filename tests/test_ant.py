"""ANT (Rusak et al. 2020): clipping-aware rescaling, the noise generator, the ANT batch and
its replay, eps* (minimal noise norm), stateful methods in the train loop (exact resume)."""

from __future__ import annotations

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental.compilation_cache import compilation_cache as cc

from adacorr.augment.noise_generator import (
    NoiseGenerator, clip_aware_eta, clip_aware_rescale, init_generator, noise_input_shape,
    sample_noise)
from adacorr.methods import ant as ant_lib
from adacorr.metrics.noise_robustness import eps_star, minimal_noise_norm
from adacorr.models import common
from adacorr import run
from adacorr.train import step as step_lib
from adacorr.train.checkpoint import Checkpointer, restore_params
from adacorr.train.state import TrainState
from adacorr.train.metric_writer import read_metrics
from tests.configs import tiny_synthetic


def _l2(a):
  return np.sqrt(np.sum(np.square(np.asarray(a, np.float64)).reshape(len(a), -1), axis=1))


def _fully_clipped(x, d):
  return np.where(d > 0, 1.0, np.where(d < 0, 0.0, x))


def _bisect_eta(x, d, eps, iters=100):
  """Brute force: eta with ||clip(x + eta d) - x|| = eps, in float64."""
  lo, hi = 0.0, 1e8
  for _ in range(iters):
    mid = 0.5 * (lo + hi)
    if np.sqrt(np.sum(np.square(np.clip(x + mid * d, 0, 1) - x))) < eps:
      lo = mid
    else:
      hi = mid
  return hi


@pytest.fixture(scope="module")
def rescale_case():
  """Random x / delta: uniform images, binary images (heavily clipped: half the pixels
  at a bound), zero-delta pixels; eps a random fraction (up to 0.999) of the reachable."""
  rng = np.random.default_rng(0)
  b = 24
  x = rng.uniform(0, 1, (b, 4, 4, 3)).astype(np.float32)
  x[:8] = (rng.uniform(0, 1, (8, 4, 4, 3)) > 0.5).astype(np.float32)
  x[8:12] = np.clip(rng.normal(0.5, 0.45, (4, 4, 4, 3)), 0, 1)
  d = rng.normal(size=x.shape).astype(np.float32)
  d[::5, 0] = 0.0
  d[3] *= 1e-3                                  # scale does not matter
  reach = _l2(_fully_clipped(x, d) - x)
  frac = rng.uniform(0.0, 1.0, b)
  frac[:4] = (0.999, 0.9, 1.0, 0.0)
  return x, d, (frac * reach).astype(np.float32), reach


@pytest.fixture(scope="module")
def jitted_rescale():
  return jax.jit(clip_aware_rescale), jax.jit(clip_aware_eta)


def test_clip_aware_rescale_is_exact_and_matches_bisection(rescale_case, jitted_rescale):
  x, d, eps, reach = rescale_case
  rescale, eta_fn = jitted_rescale
  out = np.asarray(rescale(x, d, eps))
  assert out.min() >= 0.0 and out.max() <= 1.0
  np.testing.assert_allclose(_l2(out - x), eps, atol=1e-4)
  eta = np.asarray(eta_fn(x, d, eps))
  assert np.all(eta >= 0)
  np.testing.assert_allclose(out, np.clip(x + eta[:, None, None, None] * d, 0, 1), atol=1e-6)
  brute = np.array([_bisect_eta(x[i].astype(np.float64), d[i].astype(np.float64),
                                float(eps[i])) for i in range(len(x))])
  inside = (eps > 0) & (eps < 0.9995 * reach)   # at the reach itself eta is any large value
  np.testing.assert_allclose(eta[inside], brute[inside], rtol=1e-4)
  # A scalar eps; and CIFAR-sized images at the default eps (5.54).
  out = np.asarray(rescale(x, d, 0.5))
  np.testing.assert_allclose(_l2(out - x), 0.5, atol=1e-4)
  rng = np.random.default_rng(1)
  xc = rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
  dc = rng.normal(size=xc.shape).astype(np.float32)
  eps_c = ant_lib.default_eps((32, 32, 3))
  np.testing.assert_allclose(_l2(np.asarray(clip_aware_rescale(xc, dc, eps_c)) - xc), eps_c,
                             rtol=2e-6)


def test_unreachable_eps_gives_fully_clipped_point(rescale_case, jitted_rescale):
  x, d, _, reach = rescale_case
  rescale, _ = jitted_rescale
  out = np.asarray(rescale(x, d, (reach + 1.0).astype(np.float32)))
  np.testing.assert_array_equal(out, _fully_clipped(x, d))
  np.testing.assert_array_equal(np.asarray(rescale(x, d, np.zeros(len(x), np.float32))), x)
  zero = np.asarray(rescale(x, np.zeros_like(d), np.ones(len(x), np.float32)))
  np.testing.assert_array_equal(zero, x)   # no direction: nothing moves


def test_gradient_wrt_delta_is_finite_and_keeps_the_norm(rescale_case):
  x, d, eps, reach = rescale_case
  eps = eps.copy()
  eps[5] = reach[5] + 1.0                    # unreachable
  w = jnp.asarray(np.random.default_rng(2).normal(size=x.shape), jnp.float32)

  @jax.jit
  def grads(dd, e):
    out = lambda dd: clip_aware_rescale(x, dd, e)
    return (jax.grad(lambda dd: jnp.sum(out(dd) * w))(dd),
            jax.grad(lambda dd: jnp.sum(jnp.square(out(dd) - x)))(dd))

  grad, sq = map(np.asarray, grads(jnp.asarray(d), jnp.asarray(eps)))
  assert np.isfinite(grad).all() and np.abs(grad).max() > 0
  # d/d(delta) of the perturbation's squared norm is ~0: the norm is pinned to eps.
  assert np.abs(sq).max() < 1e-3 * np.abs(grad).max()
  g0, _ = grads(jnp.asarray(d), jnp.zeros_like(jnp.asarray(eps)))   # eta = 0 everywhere
  assert np.isfinite(np.asarray(g0)).all()


def test_negative_eps_raises():
  x = np.full((2, 2, 2, 1), 0.5, np.float32)
  with pytest.raises(ValueError, match="eps"):
    clip_aware_rescale(x, x, -1.0)
  with pytest.raises(ValueError, match="eps"):
    clip_aware_rescale(x, x, np.array([1.0, -0.1]))
  with pytest.raises(ValueError, match="eps"):
    clip_aware_rescale(x, x, np.ones(3))


# --- the generator ---------------------------------------------------------------------

@pytest.mark.parametrize("kernel", ["1x1", "3x3"])
def test_generator_at_init_outputs_its_gaussian_input(kernel):
  gen = NoiseGenerator(kernel=kernel)
  shape = (16, 12, 12, 3)
  zshape = noise_input_shape(gen, shape)
  assert zshape == ((16, 14, 14, 3) if kernel == "3x3" else shape)

  @jax.jit
  def draw(key):
    params = init_generator(gen, jax.random.PRNGKey(0), 3)
    z = jax.vmap(lambda k: jax.random.normal(k, zshape[1:]))(jax.random.split(key, 16))
    return (params, sample_noise(gen, params, key, shape), z,
            sample_noise(gen, params, key, (4, *shape[1:])))

  params, delta, z, first4 = jax.tree.map(np.asarray, draw(jax.random.PRNGKey(1)))
  assert all(abs(p["kernel"].std() - 0.01) < 0.003 for p in params.values()
             if p["kernel"].size >= 60)
  assert all(np.all(p["bias"] == 0) for p in params.values())
  assert delta.shape == shape
  # The output is the z of per-example keys (its centre crop) up to O(1e-6).
  p = (zshape[1] - shape[1]) // 2
  np.testing.assert_allclose(delta, z[:, p:p + shape[1], p:p + shape[2]], atol=1e-4)
  assert abs(delta.mean()) < 0.03 and abs(delta.std() - 1.0) < 0.03
  horiz = np.corrcoef(delta[:, :, :-1].ravel(), delta[:, :, 1:].ravel())[0, 1]
  vert = np.corrcoef(delta[:, :-1].ravel(), delta[:, 1:].ravel())[0, 1]
  assert abs(horiz) < 0.05 and abs(vert) < 0.05
  # Example i's noise does not depend on the batch it is drawn in.
  np.testing.assert_array_equal(first4[:3], delta[:3])


def test_per_example_generators_equal_the_module():
  """`per_example=True` (the replay part: batched matmuls, no grouped convolutions, so it
  shards) computes what the flax module computes with each example's own parameters."""
  gen = NoiseGenerator(kernel="3x3", features=5)     # 1x1 and 3x3 convs
  shape = (3, 6, 5, 2)

  @jax.jit
  def both(key):
    keys = jax.random.split(key, 3)
    stacked = jax.vmap(lambda k: jax.tree.map(
        lambda a: jax.random.normal(k, a.shape) * 0.3, init_generator(gen, k, 2)))(keys)
    together = sample_noise(gen, stacked, key, shape, per_example=True)
    z = jax.vmap(lambda k: jax.random.normal(k, noise_input_shape(gen, shape)[1:]))(keys)
    alone = [gen.apply({"params": jax.tree.map(lambda a: a[i], stacked)}, z[i:i + 1])[0]
             for i in range(3)]
    return together, jnp.stack(alone)

  together, alone = both(jax.random.PRNGKey(4))
  np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


def test_3x3_generator_correlates_neighbours_1x1_does_not():
  """Hand-set weights (one hidden channel, h = z + 10 > 0 through the ReLUs): the 3x3
  generator outputs z + (sum of z over the 3x3 neighbourhood), so horizontal neighbours
  share 6 of 9 terms; the 1x1 one outputs 2 z, i.i.d. pixels."""
  shape = (8, 12, 12, 1)
  for kernel, middle in (("1x1", 1), ("3x3", 3)):
    gen = NoiseGenerator(kernel=kernel, features=1)
    one = lambda k: {"kernel": jnp.ones((k, k, 1, 1)), "bias": jnp.zeros((1,))}
    params = {"conv1": dict(one(1), bias=jnp.full((1,), 10.0)), "conv2": one(middle),
              "conv3": one(1), "conv4": dict(one(1), bias=jnp.full((1,), -10.0 * middle**2))}
    delta = np.asarray(sample_noise(gen, params, jax.random.PRNGKey(3), shape))
    corr = np.corrcoef(delta[:, :, :-1].ravel(), delta[:, :, 1:].ravel())[0, 1]
    if kernel == "3x3":
      assert corr > 0.4, corr            # (6 + 2) / (9 + 2 + 1) = 0.67 in expectation
    else:
      assert abs(corr) < 0.1, corr


# --- the method ------------------------------------------------------------------------

class _Tiny(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(10)(nn.relu(x).mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def tiny():
  model = _Tiny()
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.uniform(0, 1, (10, 8, 8, 3)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, 10), jnp.int32)}
  return model, variables["params"], variables["batch_stats"], batch


def _beta_pixels(mean, std, shape, n, seed=0):
  """(n, *shape) images whose channel c has Beta pixels of mean[c] and std[c]."""
  rng = np.random.default_rng(seed)
  out = np.empty((n, *shape), np.float32)
  for c, (m, sd) in enumerate(zip(mean, std)):
    k = m * (1 - m) / sd**2 - 1
    out[..., c] = rng.beta(m * k, (1 - m) * k, (n, *shape[:-1]))
  return jnp.asarray(out)


def test_eps_rule_is_the_clipped_norm_of_gaussian_noise_and_gives_the_papers_135():
  """Issue 16, item 6: eps = E ||clip(x + sigma z, 0, 1) - x||_2 of the dataset's best
  Gaussian noise; the configs follow it and name it."""
  from adacorr import data
  from experiments.configs import cifar10_ant, fashion_mnist_ant
  rule = jax.jit(ant_lib.gaussian_noise_eps)
  key = jax.random.PRNGKey(0)
  d = 8 * 8 * 3
  # No pixel can clip (|0.05 z| < 0.5): the norm of the Gaussian vector, sigma sqrt(D).
  mid = rule(jnp.full((256, 8, 8, 3), 0.5), 0.05, key)
  assert float(mid) == pytest.approx(0.05 * np.sqrt(d), rel=0.01)
  assert ant_lib.default_eps((8, 8, 3), 0.05) == pytest.approx(0.05 * np.sqrt(d))
  # Black images: every negative draw clips to 0, half the squared norm is left.
  black = rule(jnp.zeros((256, 8, 8, 3)), 0.05, key)
  assert float(black) == pytest.approx(0.05 * np.sqrt(d / 2), rel=0.01)
  # ImageNet-like pixels (ImageNet's per-channel mean / std) at the paper's best Gaussian
  # sigma 0.5 give the paper's ANT eps, 135 at 224x224x3 (the unclipped norm is 194).
  info = data.DATASETS
  imagenet = _beta_pixels(info["imagenet100"].mean, info["imagenet100"].std, (224, 224, 3), 8)
  assert float(rule(imagenet, 0.5, key)) == pytest.approx(ant_lib.PAPER_EPS, rel=0.02)
  # The configs: sigma 0.1 on the dataset's pixel statistics (for Fashion-MNIST the same
  # model gives what its training set measures, 2.325).
  for config, name in ((cifar10_ant, "cifar10"), (fashion_mnist_ant, "fashion_mnist")):
    shape = info[name].image_shape
    pixels = _beta_pixels(info[name].mean, info[name].std, shape, 512)
    eps = config.get_config().method_kwargs.eps
    assert eps == pytest.approx(float(rule(pixels, 0.1, key)), rel=0.01), name
    assert eps < ant_lib.default_eps(shape, 0.1)      # clipping only shrinks the norm
  assert ant_lib.split_sizes(10, 0.5, 0.3) == (3, 2, 5)
  assert ant_lib.split_sizes(128, 0.5, 0.3) == (38, 26, 64)


def test_generator_step_raises_its_cross_entropy(tiny):
  model, params, batch_stats, batch = tiny
  # Larger weights: an untrained tiny classifier is barely sensitive to its input.
  params = jax.tree.map(lambda a: 10.0 * a, params)
  method = ant_lib.make_ant(model, restart_lr=1e-2, restart_steps=1, eps=2.0)
  state = method.init(jax.random.PRNGKey(0), (8, 8, 3))
  step = jax.jit(method.epoch_start_step)
  key = jax.random.PRNGKey(5)   # the same z every step: the CE of one noise draw
  losses = []
  for _ in range(8):
    state, metrics = step(params, batch_stats, state, batch, key)
    losses.append(float(metrics["generator_loss"]))
  assert losses[-1] > losses[0] + 0.05, losses


def _signed(gen_params, signs):
  """A generator whose noise is z + 50 * signs per channel: every pixel of channel c moves
  in the direction signs[c], which identifies the generator."""
  bias = 50.0 * jnp.asarray(signs, jnp.float32)
  return dict(gen_params, conv4=dict(gen_params["conv4"], bias=bias))


_SIGNATURES = {"current": (-1, -1, -1), 0: (1, 1, 1), 1: (1, -1, 1), 2: (-1, 1, 1),
               3: (1, 1, -1), 4: (-1, -1, 1)}


def _sources(out, x):
  """Which generator noised each image (by the signs of its mean change per channel)."""
  lookup = {v: k for k, v in _SIGNATURES.items()}
  signs = np.sign(np.asarray(out - x).mean(axis=(1, 2))).astype(int)
  return [lookup.get(tuple(s), "clean" if not s.any() else "?") for s in signs]


@pytest.fixture(scope="module")
def signed_state():
  """The current generator and 5 replay slots, each with its signature; 4 filled."""
  base = init_generator(NoiseGenerator(kernel="1x1"), jax.random.PRNGKey(0), 3)
  replay = jax.tree.map(lambda *a: jnp.stack(a), *[_signed(base, _SIGNATURES[s])
                                                    for s in range(5)])
  return {"generator": _signed(base, _SIGNATURES["current"]), "replay": replay,
          "num_saved": jnp.asarray(4, jnp.int32)}


def test_replay_takes_two_saved_generators_for_10_percent_each(signed_state):
  """Issue 16, item 5: 30% current, then 2 saved generators drawn without replacement
  among the filled slots, 10% of the batch each (the reference's p_history), 50% clean."""
  gen = NoiseGenerator(kernel="1x1")
  x = np.full((40, 4, 4, 3), 0.5, np.float32)
  images = jax.jit(functools.partial(ant_lib.ant_images, gen, eps=1.0))
  drawn = set()
  for k in range(12):
    out = np.asarray(images(signed_state, x, jax.random.PRNGKey(k)))
    who = _sources(out, x)
    assert who[:12] == ["current"] * 12 and who[20:] == ["clean"] * 20, who
    first, second = who[12:16], who[16:20]
    assert len(set(first)) == 1 and len(set(second)) == 1 and first[0] != second[0], who
    assert {first[0], second[0]} <= {0, 1, 2, 3}, who      # slot 4 is not filled
    drawn |= {first[0], second[0]}
    np.testing.assert_allclose(_l2(out[:20] - x[:20]), 1.0, atol=1e-4)
  assert drawn == {0, 1, 2, 3}
  # Epoch 0 (only the current epoch's own generator saved): no replay, as the reference.
  out = np.asarray(images(dict(signed_state, num_saved=jnp.asarray(1, jnp.int32)), x,
                          jax.random.PRNGKey(0)))
  assert _sources(out, x)[:20] == ["current"] * 20
  # replay_generators=None: a slot per example (among the filled ones).
  per_example = jax.jit(functools.partial(ant_lib.ant_images, gen, eps=1.0,
                                          replay_generators=None))
  mixed = 0
  for k in range(6):
    who = _sources(np.asarray(per_example(signed_state, x, jax.random.PRNGKey(k))), x)
    assert set(who[12:20]) <= {0, 1, 2, 3}, who
    mixed += len(set(who[12:16])) > 1 or len(set(who[16:20])) > 1
  assert mixed > 0


class _ConstLogits(nn.Module):
  """Logits w = (0, 1, ..., 9) whatever the image: CE(y) = logsumexp(w) - w[y]."""

  @nn.compact
  def __call__(self, x, train=False):
    w = self.param("w", lambda key: jnp.arange(10, dtype=jnp.float32))
    return w[None] + 0.0 * jnp.mean(x, axis=(1, 2, 3))[:, None]


def test_generator_step_sees_the_whole_batch():
  """Issue 16, item 1: the generator's objective is the CE over all B examples (the
  reference), not only the noisy half."""
  model = _ConstLogits()
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]
  y = np.array([9] * 5 + [0] * 5, np.int32)       # the clean half: the large CEs
  batch = {"image": jnp.asarray(np.random.default_rng(0).uniform(0, 1, (10, 8, 8, 3)),
                                jnp.float32), "label": jnp.asarray(y)}
  method = ant_lib.make_ant(model, eps=1.0, restart_steps=0)
  state = method.init(jax.random.PRNGKey(0), (8, 8, 3))
  _, aux = jax.jit(method.loss_fn)(params, {}, batch, jax.random.PRNGKey(1), state)
  w = np.arange(10.0)
  ce = np.log(np.sum(np.exp(w))) - w[y]
  seen = float(aux["metrics"]["generator_loss"])
  assert seen == pytest.approx(ce.mean(), rel=1e-5)
  assert seen != pytest.approx(ce[:5].mean(), rel=1e-2)


@pytest.fixture(scope="module")
def pretraining(tiny):
  """ANT on `tiny` with 2 pretraining steps (Adam 1e-2) per epoch start, jitted once."""
  model, params, batch_stats, batch = tiny
  method = ant_lib.make_ant(model, eps=1.0, restart_steps=2, restart_lr=1e-2)
  return (method, jax.jit(method.loss_fn), jax.jit(method.epoch_start),
          jax.jit(method.epoch_start_step))


def test_epoch_0_pretrains_and_saves_a_generator(tiny, pretraining):
  """Issue 16, item 2: before the first update the generator is pretrained
  (`restart_steps` Adam steps) and saved, as at every later epoch start."""
  _, params, batch_stats, batch = tiny
  method, loss_fn, _, _ = pretraining
  state = method.init(jax.random.PRNGKey(0), (8, 8, 3))
  _, aux = loss_fn(params, batch_stats, batch, jax.random.PRNGKey(1), state)
  new = aux["method_state"]
  assert int(new["num_saved"]) == 1 and int(new["pretrain_steps"]) == 2
  assert float(aux["metrics"]["generator_pretrain_steps"]) == 2.0
  assert float(aux["metrics"]["replay_filled"]) == 1.0
  saved = jax.tree.map(lambda a: a[0], new["replay"])
  moved = [np.max(np.abs(np.asarray(a) - np.asarray(b)))
           for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(state["generator"]))]
  # An Adam step moves a weight by at most ~lr (1e-2): more than that takes 2 steps.
  assert 1.2e-2 < max(moved) < 2.5e-2, moved
  # Only once: the next step neither pretrains nor saves again.
  _, aux = loss_fn(params, batch_stats, batch, jax.random.PRNGKey(2), new)
  assert int(aux["method_state"]["num_saved"]) == 1


def test_replay_keeps_the_epoch_start_generator_and_adam_restarts(tiny, pretraining):
  """Issue 16, items 3 and 4: the replay buffer gets the generator as pretrained at the
  epoch start (not as it ends the epoch), and the per-batch steps start a new Adam."""
  _, params, batch_stats, batch = tiny
  method, loss_fn, start, pretrain = pretraining
  state = method.init(jax.random.PRNGKey(0), (8, 8, 3))
  for k in (1, 2):                                           # epoch 0
    state = loss_fn(params, batch_stats, batch, jax.random.PRNGKey(k), state)[1]["method_state"]
  end_of_epoch = state["generator"]
  state = start(params, batch_stats, state, jax.random.PRNGKey(3))   # epoch 1
  assert int(state["num_saved"]) == 1                        # the epoch's end is not saved
  for k in (4, 5):
    state, _ = pretrain(params, batch_stats, state, batch, jax.random.PRNGKey(k))
  assert int(state["opt_state"].count) == 2
  pretrained = state["generator"]
  for k in (6, 7):
    state = loss_fn(params, batch_stats, batch, jax.random.PRNGKey(k), state)[1]["method_state"]
    if k == 6:   # one per-batch step after the pretraining: a fresh Adam's moments
      opt = state["opt_state"]
      assert int(opt.count) == 1
      for mu, nu in zip(jax.tree.leaves(opt.mu), jax.tree.leaves(opt.nu)):
        # mu = (1 - b1) g, nu = (1 - b2) g^2 of one gradient g
        np.testing.assert_allclose(nu, 0.001 / 0.1**2 * np.square(mu), rtol=1e-3, atol=1e-12)
  assert int(state["num_saved"]) == 2
  same = lambda a, b: all(np.array_equal(u, v) for u, v in
                          zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  slot = lambda i: jax.tree.map(lambda a: a[i], state["replay"])
  assert same(slot(1), pretrained)
  assert not same(state["generator"], pretrained)            # the steps moved on from it
  assert not same(slot(0), end_of_epoch) and not same(slot(1), end_of_epoch)


def test_ant_loss_updates_the_generator_and_reports_metrics(tiny):
  model, params, batch_stats, batch = tiny
  method = ant_lib.make_ant(model, restart_steps=0)
  state = method.init(jax.random.PRNGKey(0), (8, 8, 3))
  loss, aux = jax.jit(method.loss_fn)(params, batch_stats, batch, jax.random.PRNGKey(1), state)
  assert np.isfinite(float(loss))
  assert set(aux["metrics"]) >= {"accuracy", "clean_accuracy", "noisy_accuracy",
                                 "generator_loss", "perturbation_norm"}
  np.testing.assert_allclose(float(aux["metrics"]["perturbation_norm"]),
                             ant_lib.default_eps((8, 8, 3)), rtol=1e-4)
  new = aux["method_state"]
  assert int(new["opt_state"].count) == 1
  assert not np.allclose(new["generator"]["conv1"]["kernel"],
                         state["generator"]["conv1"]["kernel"])


def test_bad_arguments_raise_named_errors(tiny):
  model = tiny[0]
  for kwargs, name in [(dict(eps=-1.0), "eps"), (dict(clean_fraction=1.5), "fraction"),
                       (dict(current_fraction=0.6), "current_fraction"),
                       (dict(generator="5x5"), "generator"), (dict(replay_size=0), "replay_size"),
                       (dict(replay_generators=0), "replay_generators"),
                       (dict(restart_steps=-1), "restart_steps"),
                       (dict(rlat=dict(epsilon=0.1)), "rlat"),
                       (dict(rlat=dict(eps=0.1)), "FEATURE_POINTS")]:
    with pytest.raises(ValueError, match=name):
      ant_lib.make_ant(model, **kwargs)
  with pytest.raises(ValueError, match="epoch_start_steps"):
    step_lib.StatefulLoss(loss_fn=None, init=None, epoch_start_steps=3)
  x = jnp.zeros((2, 2, 2, 1))
  with pytest.raises(ValueError, match="max_norm"):
    minimal_noise_norm(lambda v: v.reshape(2, -1), x, jnp.zeros(2, jnp.int32),
                       jax.random.PRNGKey(0), max_norm=0.0)


class _TinyPoints(nn.Module):
  """_Tiny with two marked perturbation points, as RLAT needs."""
  FEATURE_POINTS = ("input", "stem")

  @nn.compact
  def __call__(self, x, train=False):
    x = common.mark(self, "input", x)
    x = common.mark(self, "stem", nn.Conv(4, (3, 3))(x))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(10)(nn.relu(x).mean(axis=(1, 2)))


def test_ant_rlat_trains_with_rlat_on_the_ant_batch(monkeypatch):
  seen = {}
  real_apply = ant_lib.rlat_lib.rlat_apply

  def spy(*args, **kwargs):
    seen.update(kwargs)
    return real_apply(*args, **kwargs)

  monkeypatch.setattr(ant_lib.rlat_lib, "rlat_apply", spy)
  model = _TinyPoints()
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.uniform(0, 1, (4, 8, 8, 3)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, 4), jnp.int32)}
  method = ant_lib.make_ant(model, generator="3x3", restart_steps=0,
                            rlat=dict(eps=0.02))
  state = method.init(jax.random.PRNGKey(0), (8, 8, 3))
  loss, aux = jax.jit(method.loss_fn)(variables["params"], variables["batch_stats"], batch,
                                      jax.random.PRNGKey(1), state)
  assert np.isfinite(float(loss)) and "ant_clean_loss" in aux["metrics"]
  # The RLAT pass is perturbed: its loss differs from the unperturbed pass on the ANT batch.
  assert float(loss) != pytest.approx(float(aux["metrics"]["ant_clean_loss"]), abs=1e-7)
  # RLAT's defaults apply (`make_rlat`'s: the attack pass updates the BatchNorm
  # statistics as the reference's do, linf clamped to the global eps); the rlat dict
  # overrides them. Traced only (`eval_shape`), with `rlat_apply` spied on.
  assert seen == dict(eps=0.02, norm="l2", layers=("input", "stem"), fraction=1.0,
                      linf_bound="global", attack_bn_stats="update")
  seen.clear()
  discard = ant_lib.make_ant(model, generator="3x3", restart_steps=0,
                             rlat=dict(eps=0.02, attack_bn_stats="discard", norm="linf",
                                       linf_bound="layer"))
  jax.eval_shape(discard.loss_fn, variables["params"], variables["batch_stats"], batch,
                 jax.random.PRNGKey(1), state)
  assert seen["attack_bn_stats"] == "discard" and seen["linf_bound"] == "layer"
  for bad, name in [(dict(linf_bound="none"), "linf_bound"),
                    (dict(attack_bn_stats="keep"), "attack_bn_stats")]:
    with pytest.raises(ValueError, match=name):
      ant_lib.make_ant(model, rlat=bad)


# --- eps*: the minimal noise norm ------------------------------------------------------

def test_minimal_noise_norm_flips_the_label_and_0p9_of_it_does_not():
  """Linear 2-class logits w.(x - 0.5) - c around x = 0.5: along direction u the label
  flips at r = c / (w.u) (before any clipping), never if w.u <= 0."""
  rng = np.random.default_rng(0)
  shape = (6, 4, 4, 1)
  w = rng.normal(size=shape[1:]).astype(np.float32)
  w /= np.linalg.norm(w)
  c = 0.2

  def logits_fn(images):
    score = jnp.sum((images - 0.5) * w, axis=(1, 2, 3)) - c
    return jnp.stack([jnp.zeros_like(score), score], -1)

  x = np.full(shape, 0.5, np.float32)
  mix = np.array([1.0, 0.8, 0.6, 0.4, -1.0, 0.0], np.float32)[:, None, None, None]
  noise = mix * w + (1 - np.abs(mix)) * rng.normal(size=shape).astype(np.float32) * 0.1
  y = np.zeros(6, np.int32)
  y[5] = 1                                              # already misclassified
  fn = jax.jit(functools.partial(minimal_noise_norm, logits_fn, max_norm=1.0, num_steps=20))
  norms = np.asarray(fn(x, y, noise=noise))
  assert norms[5] == 0.0 and np.isinf(norms[4])
  found = norms[:4]
  u = noise[:4].reshape(4, -1) / np.linalg.norm(noise[:4].reshape(4, -1), axis=1, keepdims=True)
  np.testing.assert_allclose(found, c / (u @ w.ravel()), rtol=1e-4)
  # No clipping at these norms: the perturbed image is x + r u; the label flips at r = found.
  score = lambda r: (r[:, None] * u) @ w.ravel() - c
  assert np.all(score(found) > 0) and np.all(score(0.9 * found) < 0)
  # Gaussian directions from a key (eps*_GN): example i's direction is split(key, B)[i]'s.
  gaussian = jnp.stack([jax.random.normal(k, shape[1:]) for k in
                        jax.random.split(jax.random.PRNGKey(0), 6)])
  np.testing.assert_array_equal(fn(x, y, key=jax.random.PRNGKey(0)), fn(x, y, noise=gaussian))


def test_eps_star_is_the_median_with_inf_as_plus_infinity():
  inf = float("inf")
  assert eps_star([1.0, 2.0, inf]) == 2.0
  assert eps_star([1.0, 2.0, 3.0, inf]) == 2.5
  assert eps_star([1.0, inf, inf]) == inf
  assert eps_star([0.0, 0.0, 5.0]) == 0.0
  with pytest.raises(ValueError, match="norms"):
    eps_star([])


# --- stateful methods in the loop: exact resume across an epoch start -------------------

class _Kill(Exception):
  pass


def _ant_config():
  config = tiny_synthetic.get_config()
  config.method = "ant"
  config.method_kwargs.restart_steps = 2
  config.method_kwargs.replay_size = 2
  config.model_kwargs.features = (4, 8)
  config.model_kwargs.dense = 16
  config.num_steps = 32                  # 2 epochs of 16 steps (512 examples, batch 32)
  config.checkpoint_every_steps = 16
  config.eval_every_steps = 32
  return config


@pytest.fixture
def compilation_cache(tmp_path):
  """The three runs compile the same programs: a persistent XLA cache (this test only)
  makes the second and third compile-free (~3 s instead of ~16 s each on 2 cores)."""
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  old = {name: getattr(jax.config, name) for name in names}
  for name, value in zip(names, (str(tmp_path / "xla_cache"), 0.0, -1)):
    jax.config.update(name, value)
  cc.reset_cache()
  try:
    yield
  finally:
    for name, value in old.items():
      jax.config.update(name, value)
    cc.reset_cache()


def test_killed_and_resumed_across_the_epoch_start_equals_unbroken(tmp_path, compilation_cache):
  unbroken, broken = str(tmp_path / "unbroken"), str(tmp_path / "broken")
  summary = run.train_and_evaluate(_ant_config(), unbroken)

  def kill(step, state, metrics):
    if step == 18:  # after the epoch-1 start; the last checkpoint is step 16, before it
      raise _Kill()

  with pytest.raises(_Kill):
    run.train_and_evaluate(_ant_config(), broken, hooks=[kill])
  resumed = run.train_and_evaluate(_ant_config(), broken)
  assert resumed["resumed_from_step"] == 16 and summary["steps"] == 32
  a = restore_params(str(tmp_path / "unbroken" / "checkpoints"))
  b = restore_params(str(tmp_path / "broken" / "checkpoints"))
  assert int(a["method_state"]["num_saved"]) == 2          # epoch 0's generator too
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for u, v in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
  records = read_metrics(unbroken)
  starts = [r for r in records if r["split"] == "epoch_start"]
  # Every epoch starts with the hook and restart_steps=2 extra (distinct) batches, epoch 0
  # included (the reference pretrains its first generator on distinct batches too).
  assert [r["step"] for r in starts] == [0, 16]
  assert all(np.isfinite(r["generator_loss"]) for r in starts)
  train = [r for r in records if r["split"] == "train"]
  # Epoch 0 pretrained its generator (restart_steps=2) and saved it before training.
  assert train[0]["generator_pretrain_steps"] == 2 and train[0]["replay_filled"] == 1
  assert train[-1]["replay_filled"] == 2


def test_checkpoint_without_method_state_restores_into_a_stateless_state(tmp_path, tiny):
  """Checkpoints written before TrainState had `method_state` still resume."""
  @flax.struct.dataclass
  class Before:
    step: jax.Array
    params: dict
    batch_stats: dict
    opt_state: tuple
    rng: jax.Array

  _, params, batch_stats, _ = tiny
  tx = optax.sgd(0.1, momentum=0.9)
  state = TrainState(step=jnp.asarray(7, jnp.int32), params=params, batch_stats=batch_stats,
                     opt_state=tx.init(params), rng=jax.random.PRNGKey(3))
  checkpointer = Checkpointer(str(tmp_path / "ckpt"))
  checkpointer.save(7, Before(state.step, params, batch_stats, state.opt_state, state.rng))
  checkpointer.wait_until_finished()
  restored = checkpointer.restore(state)
  assert isinstance(restored, TrainState) and restored.method_state == {}
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="method_state"):
    checkpointer.restore(state.replace(method_state={"x": jnp.zeros(2)}))
  checkpointer.close()
