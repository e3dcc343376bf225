"""Square Attack (adacorr.attacks.square): the reference's p schedule and window sizes,
success on the tiny trained model, feasibility, no gradients, per-example independence,
already-misclassified examples, input checks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr.attacks.square import eta, p_selection, square, square_sizes
from tests.tiny_classifier import accuracy as _acc
from tests.tiny_classifier import perturbation_norms as _norms
from tests.tiny_classifier import trained_mlp

# Square (random search) is much weaker than PGD in l2 on this model: at l2 1.0 neither
# it nor the reference (fra31/auto-attack, checked with torch) fools any of the 64
# examples in 1000 queries, so the l2 radius here is 3.0.
EPS = {"linf": 16 / 255, "l2": 3.0}
QUERIES = {"linf": 300, "l2": 500}


@pytest.fixture(scope="module")
def trained():
  return trained_mlp()


@functools.lru_cache(maxsize=None)
def _jitted(logits_fn, norm, eps, num_queries, targeted=False):
  return jax.jit(functools.partial(square, logits_fn, norm=norm, eps=eps,
                                   num_queries=num_queries, targeted=targeted))


def test_p_selection_matches_the_reference_schedule():
  # The reference's `p_selection` with n_queries = 10000 (no rescaling effect), p_init 0.8:
  # p_init for it <= 10, then halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000.
  table = {0: 0.8, 10: 0.8, 11: 0.4, 50: 0.4, 51: 0.2, 200: 0.2, 201: 0.1, 500: 0.1,
           501: 0.05, 1000: 0.05, 1001: 0.025, 2000: 0.025, 2001: 0.0125, 4000: 0.0125,
           4001: 0.00625, 6000: 0.00625, 6001: 0.003125, 8000: 0.003125,
           8001: 0.0015625, 9999: 0.0015625}
  for it, p in table.items():
    assert p_selection(it, 10000, 0.8) == pytest.approx(p, rel=1e-12), it
  # AutoAttack's Square (resc_schedule=False, our default) with 5000 queries: the same
  # absolute iterations, so the windows shrink at 10, 50, ..., 4000 and p ends at
  # p_init / 64 (the halvings at 6000 and 8000 never come).
  for it, p in {10: 0.8, 11: 0.4, 50: 0.4, 51: 0.2, 4000: 0.0125, 4001: 0.00625,
                4999: 0.00625}.items():
    assert p_selection(it, 5000, 0.8) == pytest.approx(p, rel=1e-12), it
  # The Square Attack code's default (resc_schedule=True): it is rescaled by
  # int(it / 5000 * 10000) = 2 it.
  for it, p in {5: 0.8, 6: 0.4, 25: 0.4, 26: 0.2, 100: 0.2, 101: 0.1, 4999: 0.8 / 512}.items():
    assert p_selection(it, 5000, 0.8, rescale_schedule=True) == pytest.approx(p, rel=1e-12), it
  # With 10000 queries the two schedules are the same.
  assert all(p_selection(it, 10000, 0.8) == p_selection(it, 10000, 0.8, True)
             for it in range(0, 10000, 7))
  # square_sizes follows the schedule asked for: on 32 x 32 images at 1000 queries the
  # absolute schedule is still at p_init / 16 (s = round(sqrt(0.05 * 1024)) = 7) at
  # iteration 999, the rescaled one (9990) at p_init / 512 (s = round(sqrt(1.6)) = 1).
  assert square_sizes(1000, 0.8, 32, 32, "linf")[999] == 7
  assert square_sizes(1000, 0.8, 32, 32, "linf", rescale_schedule=True)[999] == 1
  assert p_selection(11, 10000, 0.4) == pytest.approx(0.2)  # scales with p_init
  # Window sides for 16 x 16 images: round(sqrt(p * 256)); l2 at least 3 and odd.
  lin = square_sizes(10000, 0.8, 16, 16, "linf")
  l2 = square_sizes(10000, 0.8, 16, 16, "l2")
  assert (lin[0], lin[11], lin[51], lin[9999]) == (14, 10, 7, 1)  # sqrt 14.3, 10.1, 7.2, .6
  assert (l2[0], l2[11], l2[51], l2[9999]) == (15, 11, 7, 3)


def test_eta_by_hand():
  # eta(3): the top s // 2 = 1 row is eta_rectangles(1, 3) = [.25, 1.25, .25] normalised,
  # the bottom 2 rows -eta_rectangles(2, 3) = -[[.25] * 3, [.25, 1.25, .25]] normalised,
  # then the whole divided by its norm sqrt(2).
  top = np.array([[1, 5, 1]]) / np.sqrt(27)
  bottom = -np.array([[1, 1, 1], [1, 5, 1]]) / np.sqrt(30)
  np.testing.assert_allclose(eta(3), np.concatenate([top, bottom]) / np.sqrt(2),
                             rtol=1e-6)
  for s in (3, 5, 8, 15):
    e = eta(s)
    assert np.sum(e ** 2) == pytest.approx(1.0, rel=1e-5)
    assert (e[:s // 2] > 0).all() and (e[s // 2:] < 0).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_lowers_accuracy_and_stays_feasible(trained, norm):
  logits_fn, x, y = trained
  eps = EPS[norm]
  x_adv = _jitted(logits_fn, norm, eps, QUERIES[norm])(x, y, jax.random.key(0))
  clean, robust = _acc(logits_fn, x, y), _acc(logits_fn, x_adv, y)
  print(f"{norm} eps={eps:.4f} queries={QUERIES[norm]}: clean {clean:.3f} square {robust:.3f}")
  assert robust < clean - 0.2
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  assert np.all(_norms(x_adv - x, norm) <= eps * (1 + 1e-5))
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_gradient_free_with_stop_gradient(trained):
  logits_fn, x, y = trained
  x, y = x[:16], y[:16]
  stopped = lambda v: jax.lax.stop_gradient(logits_fn(v))
  for norm in ("linf", "l2"):
    a = _jitted(logits_fn, norm, EPS[norm], 30)(x, y, jax.random.key(3))
    b = _jitted(stopped, norm, EPS[norm], 30)(x, y, jax.random.key(3))
    np.testing.assert_array_equal(a, b)
    assert np.any(np.asarray(a) != np.asarray(x))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_per_example_independence(trained, norm):
  logits_fn, x, y = trained
  one_at_a_time = lambda v: jax.lax.map(lambda xi: logits_fn(xi[None])[0], v)
  x, y = x[:8], y[:8]
  keys = jax.random.split(jax.random.key(7), 8)
  run = jax.jit(functools.partial(square, one_at_a_time, norm=norm, eps=EPS[norm],
                                  num_queries=60))
  batch = np.asarray(run(x, y, keys))
  raw = jax.random.key_data(keys)  # raw (B, 2) keys: the same keys, the same draws
  for i in range(8):
    alone = run(x[i:i + 1], y[i:i + 1], raw[i:i + 1])
    np.testing.assert_allclose(alone[0], batch[i], atol=1e-6)
  perm = np.array([3, 7, 0, 5, 1, 6, 2, 4])
  np.testing.assert_allclose(run(x[perm], y[perm], keys[perm]), batch[perm], atol=1e-6)
  # Different keys give different points (the draws depend on the key).
  other = np.asarray(run(x, y, jax.random.split(jax.random.key(8), 8)))
  assert np.any(np.abs(other - batch) > 1e-3)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_already_misclassified_examples_are_unchanged(trained, norm):
  logits_fn, x, y = trained
  x, y = x[:16], y[:16]
  pred = jnp.argmax(logits_fn(x), -1)
  wrong = jnp.arange(16) % 2 == 0
  labels = jnp.where(wrong, (pred + 1) % 10, y)  # even examples: a label it does not predict
  x_adv = np.asarray(_jitted(logits_fn, norm, EPS[norm], 30)(x, labels, jax.random.key(1)))
  np.testing.assert_array_equal(x_adv[::2], np.asarray(x)[::2])
  assert np.all(np.any((x_adv[1::2] != np.asarray(x)[1::2]).reshape(8, -1), axis=1))
  # Targeted with the predicted class as target: already "successful", unchanged.
  x_t = _jitted(logits_fn, norm, EPS[norm], 30, True)(x, pred, jax.random.key(1))
  np.testing.assert_array_equal(x_t, x)


def test_targeted_reaches_the_runner_up(trained):
  logits_fn, x, y = trained
  target = jax.lax.top_k(logits_fn(x), 2)[1][:, 1]
  x_adv = _jitted(logits_fn, "linf", EPS["linf"], 300, True)(x, target, jax.random.key(0))
  hit = _acc(logits_fn, x_adv, target)
  print(f"targeted linf 300 queries: reached target {hit:.3f}")
  assert hit > 0.2
  assert np.all(_norms(x_adv - x, "linf") <= EPS["linf"] * (1 + 1e-5))


def test_bad_inputs_raise(trained):
  logits_fn, x, y = trained
  x, y, key = x[:2], y[:2], jax.random.key(0)
  cases = [
      (dict(eps=-0.1), "eps"),
      (dict(eps=0.1, num_queries=0), "num_queries"),
      (dict(eps=0.1, num_queries=-5), "num_queries"),
      (dict(eps=0.1, num_queries=2.5), "num_queries"),
      (dict(eps=0.1, p_init=0.0), "p_init"),
      (dict(eps=0.1, p_init=1.5), "p_init"),
      (dict(eps=0.1, norm="l1"), "norm"),
  ]
  for kwargs, name in cases:
    with pytest.raises(ValueError, match=name):
      square(logits_fn, x, y, key, **kwargs)
  with pytest.raises(ValueError, match="key"):
    square(logits_fn, x, y, None, eps=0.1)
  with pytest.raises(ValueError, match="key"):
    square(logits_fn, x, y, jax.random.split(key, 3), eps=0.1)  # wrong number of keys
