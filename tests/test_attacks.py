"""Tests for adacorr.attacks (l_p attacks, APGD, robust accuracy)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adacorr import attacks
from adacorr.attacks import lp
from tests.tiny_classifier import trained_mlp

EPS_LINF = 16 / 255  # the tiny synthetic model is robust at 8/255
EPS_L2 = 1.0


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def trained():
  """(logits_fn, x_test (64, 16, 16, 3) in [0, 1], y_test (64,)) of a small MLP trained on
  'synthetic' (`tests.tiny_classifier`)."""
  return trained_mlp()


_PGD_CACHE = {}


def _pgd_cached(trained, norm, num_steps):
  """pgd(key 0, step eps/4, track_best) on the test batch, memoised per (norm, steps)."""
  k = (id(trained[0]), norm, num_steps)
  if k not in _PGD_CACHE:
    logits_fn, x, y = trained
    eps = EPS_LINF if norm == "linf" else EPS_L2
    _PGD_CACHE[k] = jax.jit(functools.partial(
        attacks.pgd, logits_fn, norm=norm, eps=eps, step_size=eps / 4,
        num_steps=num_steps))(x, y, jax.random.key(0))
  return _PGD_CACHE[k]


def _ce(logits_fn, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits_fn(x), y)


def _acc(logits_fn, x, y):
  return float(jnp.mean(jnp.argmax(logits_fn(x), -1) == y))


def _linf(d):
  return np.asarray(jnp.max(jnp.abs(d).reshape(d.shape[0], -1), axis=1))


def _l2(d):
  return np.asarray(jnp.sqrt(jnp.sum(jnp.square(d).reshape(d.shape[0], -1), axis=1)))


def _assert_feasible(x_adv, x, norm, eps):
  x_adv = np.asarray(x_adv)
  assert x_adv.shape == x.shape
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  d = jnp.asarray(x_adv) - x
  n = _linf(d) if norm == "linf" else _l2(d)
  assert np.all(n <= eps + 1e-6), n.max()


# --------------------------------------------------------------------------- projections


@pytest.mark.parametrize("norm,eps", [("linf", 0.03), ("l2", 0.5)])
def test_projection_feasible(norm, eps):
  kx, kd = jax.random.split(jax.random.key(1))
  x = jax.random.uniform(kx, (16, 8, 8, 3))
  delta = 3.0 * jax.random.normal(kd, x.shape)
  d = lp.project_linf(delta, eps) if norm == "linf" else lp.project_l2(delta, eps)
  n = _linf(d) if norm == "linf" else _l2(d)
  assert np.all(n <= eps + 1e-6)
  assert np.all(n >= eps - 1e-5)  # big deltas land on the sphere
  _assert_feasible(attacks.project(x + delta, x, norm=norm, eps=eps), x, norm, eps)
  # Points already inside stay put.
  small = lp.project_linf(delta, eps / 10) if norm == "linf" else lp.project_l2(delta, eps / 10)
  x_in = jnp.clip(x + small, 0, 1)
  np.testing.assert_allclose(attacks.project(x_in, x, norm=norm, eps=eps), x_in, atol=1e-6)


@pytest.mark.parametrize("norm,eps", [("linf", 0.03), ("l2", 0.5)])
def test_random_init_in_ball_and_not_trivial(norm, eps):
  x = jax.random.uniform(jax.random.key(2), (32, 8, 8, 3))
  x0 = attacks.random_init(jax.random.key(3), x, norm=norm, eps=eps)
  _assert_feasible(x0, x, norm, eps)
  d = x0 - x
  n = _linf(d) if norm == "linf" else _l2(d)
  assert np.all(n > 0.5 * eps)  # genuinely spread in the ball
  assert not np.allclose(d[0], d[1])


def test_zero_gradient_l2_direction_is_finite():
  d = attacks.steepest_direction(jnp.zeros((2, 4, 4, 1)), "l2")
  assert np.all(np.isfinite(d)) and np.all(d == 0)
  assert np.all(np.isfinite(jax.grad(lambda v: lp.project_l2(v, 1.0).sum())(
      jnp.zeros((2, 3)))))


# --------------------------------------------------------------------------- attacks


@pytest.mark.parametrize("norm,eps", [("linf", EPS_LINF), ("l2", EPS_L2)])
def test_pgd_feasible_and_raises_loss(trained, norm, eps):
  logits_fn, x, y = trained
  x_adv = _pgd_cached(trained, norm, 10)
  _assert_feasible(x_adv, x, norm, eps)
  assert float(_ce(logits_fn, x_adv, y).mean()) > float(_ce(logits_fn, x, y).mean()) + 0.1
  assert _acc(logits_fn, x_adv, y) < _acc(logits_fn, x, y) - 0.1


def test_fgsm_fgm_feasible_and_raise_loss(trained):
  logits_fn, x, y = trained
  clean = float(_ce(logits_fn, x, y).mean())
  xs = jax.jit(functools.partial(attacks.fgsm, logits_fn, eps=EPS_LINF))(x, y)
  _assert_feasible(xs, x, "linf", EPS_LINF)
  xm = jax.jit(functools.partial(attacks.fgm, logits_fn, eps=EPS_L2))(x, y)
  _assert_feasible(xm, x, "l2", EPS_L2)
  assert float(_ce(logits_fn, xs, y).mean()) > clean
  assert float(_ce(logits_fn, xm, y).mean()) > clean


def test_pgd_margin_loss_raises_margin(trained):
  logits_fn, x, y = trained
  x_adv = jax.jit(functools.partial(attacks.pgd, logits_fn, norm="linf", eps=EPS_LINF,
                                    step_size=EPS_LINF / 4, num_steps=10, loss="margin"))(
                                        x, y, jax.random.key(4))
  m = lambda v: attacks.loss_per_example(logits_fn(v), y, loss="margin")
  assert float(m(x_adv).mean()) > float(m(x).mean())
  assert np.all(np.asarray(m(x_adv)) >= np.asarray(m(x)) - 0.5)


@pytest.mark.parametrize("norm,eps", [("linf", EPS_LINF), ("l2", EPS_L2)])
def test_more_steps_never_worse_with_tracking(trained, norm, eps):
  del eps
  logits_fn, _, y = trained
  # Same key, so the first 3 iterates coincide; best-iterate tracking then makes the
  # 10-step result at least as good per example.
  l3 = _ce(logits_fn, _pgd_cached(trained, norm, 3), y)
  l10 = _ce(logits_fn, _pgd_cached(trained, norm, 10), y)
  assert np.all(np.asarray(l10) >= np.asarray(l3) - 1e-5)
  assert float(l10.mean()) > float(l3.mean())  # and the extra steps help on average


def test_restarts_never_worse(trained):
  logits_fn, x, y = trained
  kw = dict(norm="linf", eps=EPS_LINF, step_size=EPS_LINF / 4, num_steps=3)
  # Per example, the 2-restart result is at least as good as each of its restarts alone.
  key = jax.random.key(6)
  keys = jax.random.split(key, x.shape[0])
  x2 = jax.jit(functools.partial(attacks.pgd, logits_fn, restarts=2, **kw))(x, y, keys)
  l2r = np.asarray(_ce(logits_fn, x2, y))
  run_one = jax.jit(functools.partial(lp._pgd_run, logits_fn, random_start=True,  # pylint: disable=protected-access
                                      loss="ce", targeted=False, track_best=True, **kw))
  for r in range(2):
    kr = jax.vmap(lambda k, r=r: jax.random.split(k, 2)[r])(keys)
    xr, _ = run_one(x, y, kr)
    assert np.all(l2r >= np.asarray(_ce(logits_fn, xr, y)) - 1e-5)


def test_targeted_pgd_lowers_target_loss(trained):
  logits_fn, x, y = trained
  target = (y + 1) % 10
  x_adv = jax.jit(functools.partial(attacks.pgd, logits_fn, norm="linf", eps=EPS_LINF,
                                    step_size=EPS_LINF / 4, num_steps=10, targeted=True))(
                                        x, target, jax.random.key(7))
  _assert_feasible(x_adv, x, "linf", EPS_LINF)
  before, after = _ce(logits_fn, x, target), _ce(logits_fn, x_adv, target)
  assert float(after.mean()) < float(before.mean()) - 0.1
  hit = lambda v: float(jnp.mean(jnp.argmax(logits_fn(v), -1) == target))
  assert hit(x_adv) > hit(x)


# --------------------------------------------------------------------------- independence


def _one_at_a_time(logits_fn):
  """The same model evaluated example by example (`lax.map`), so its float results are
  bit-identical whatever the batch size (a batched matmul may round differently from a
  single-row one); the tests then check the attack's own independence exactly."""
  return lambda v: jax.lax.map(lambda xi: logits_fn(xi[None])[0], v)


def _independence(trained, make_attack):
  logits_fn, x, y = trained
  attack = make_attack(_one_at_a_time(logits_fn))
  x, y = x[:8], y[:8]
  keys = jax.random.split(jax.random.key(8), 8)
  fn = jax.jit(attack)
  batch = np.asarray(fn(x, y, keys))
  for i in range(8):
    alone = np.asarray(fn(x[i:i + 1], y[i:i + 1], keys[i:i + 1]))
    np.testing.assert_allclose(batch[i:i + 1], alone, atol=1e-6)
  # Shuffling the batch permutes the results.
  perm = np.array([3, 1, 7, 0, 5, 2, 6, 4])
  np.testing.assert_allclose(np.asarray(fn(x[perm], y[perm], keys[perm])), batch[perm],
                             atol=1e-6)
  return batch


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_per_example_independence(trained, norm):
  eps = EPS_LINF if norm == "linf" else EPS_L2
  batch = _independence(trained, lambda f: functools.partial(
      attacks.pgd, f, norm=norm, eps=eps, step_size=eps / 4, num_steps=3,
      restarts=2 if norm == "linf" else 1))
  assert not np.allclose(batch, trained[1][:8])


def test_pgd_raw_keys_work_too(trained):
  logits_fn, x, y = trained
  raw = jax.random.split(jax.random.PRNGKey(0), 4)
  fn = jax.jit(functools.partial(attacks.pgd, _one_at_a_time(logits_fn), norm="linf",
                                 eps=EPS_LINF, step_size=EPS_LINF / 4, num_steps=2))
  b = np.asarray(fn(x[:4], y[:4], raw))
  _assert_feasible(b, x[:4], "linf", EPS_LINF)
  perm = np.array([2, 0, 3, 1])
  np.testing.assert_allclose(np.asarray(fn(x[:4][perm], y[:4][perm], raw[perm])), b[perm],
                             atol=1e-6)
  with pytest.raises(ValueError, match="key"):
    attacks.pgd(logits_fn, x[:4], y[:4], jax.random.split(jax.random.key(0), 3),
                norm="linf", eps=EPS_LINF, step_size=0.01, num_steps=1)


def test_apgd_per_example_independence(trained):
  _independence(trained, lambda f: functools.partial(
      attacks.apgd, f, norm="linf", eps=EPS_LINF, num_steps=10, loss="dlr"))


# --------------------------------------------------------------------------- linear model


def test_fgsm_fgm_linear_model_analytic():
  """On logits = x W + b, CE's input gradient for class y is W (p - e_y)."""
  key = jax.random.key(9)
  kw, kb, kx = jax.random.split(key, 3)
  d = 4 * 4 * 1
  w = jax.random.normal(kw, (d, 2))
  b = jax.random.normal(kb, (2,))
  logits_fn = lambda x: x.reshape(x.shape[0], -1) @ w + b
  x = jax.random.uniform(kx, (6, 4, 4, 1), minval=0.2, maxval=0.8)
  y = jnp.array([0, 1, 0, 1, 1, 0])
  eps = 0.1
  diff = (w[:, 1 - y] - w[:, y]).T.reshape(x.shape)  # (1 - p_y) > 0 times this
  expected = jnp.clip(x + eps * jnp.sign(diff), 0, 1)
  fgsm = jax.jit(functools.partial(attacks.fgsm, logits_fn, eps=eps))
  np.testing.assert_allclose(fgsm(x, y), expected, atol=1e-6)
  eps2 = 0.7
  unit = diff / _l2(diff).reshape(-1, 1, 1, 1)
  expected2 = jnp.clip(x + eps2 * unit, 0, 1)
  fgm = jax.jit(functools.partial(attacks.fgm, logits_fn, eps=eps2))
  np.testing.assert_allclose(fgm(x, y), expected2, atol=1e-5)
  # FGSM is the exact maximiser of the (linear in x) margin over the l_inf ball here.
  m = lambda v: attacks.loss_per_example(logits_fn(v), y, loss="margin")
  np.testing.assert_allclose(m(expected) - m(x),
                             eps * jnp.sum(jnp.abs(diff).reshape(6, -1), 1), rtol=1e-5)


def test_pgd_step_matches_manual():
  w = jax.random.normal(jax.random.key(10), (12, 3))
  logits_fn = lambda x: x.reshape(x.shape[0], -1) @ w
  x = jnp.full((2, 2, 2, 3), 0.5)
  y = jnp.array([0, 2])
  x_next, loss = attacks.pgd_step(logits_fn, x, x, y, norm="linf", eps=0.05,
                                  step_size=0.02, loss="margin")
  g = jax.grad(lambda v: attacks.loss_per_example(logits_fn(v), y, loss="margin").sum())(x)
  np.testing.assert_allclose(x_next, x + 0.02 * jnp.sign(g), atol=1e-6)
  np.testing.assert_allclose(loss, attacks.loss_per_example(logits_fn(x), y, loss="margin"),
                             atol=1e-6)


# --------------------------------------------------------------------------- APGD


def test_dlr_and_margin_hand_case():
  logits = jnp.array([[3.0, 1.0, 2.0, 0.0], [4.0, 0.0, 1.0, 2.0]])
  y = jnp.array([1, 0])
  # Row 0: -(1 - 3) / (3 - 1) = 1. Row 1: -(4 - 2) / (4 - 1) = -2/3.
  np.testing.assert_allclose(attacks.loss_per_example(logits, y, loss="dlr"),
                             [1.0, -2.0 / 3.0], rtol=1e-6)
  np.testing.assert_allclose(attacks.loss_per_example(logits, y, loss="margin"), [2.0, -2.0])
  with pytest.raises(ValueError, match="dlr"):
    attacks.loss_per_example(jnp.zeros((1, 2)), jnp.array([0]), loss="dlr")


def test_apgd_checkpoints_match_paper():
  # p = 0, .22, .41, .57, .70, .80, .87, .93, .99
  assert attacks.checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize("norm,eps,loss", [("linf", EPS_LINF, "ce"), ("linf", EPS_LINF, "dlr"),
                                           ("l2", EPS_L2, "ce")])
def test_apgd_feasible_and_strong(trained, norm, eps, loss):
  logits_fn, x, y = trained
  steps = 10
  xa = jax.jit(functools.partial(attacks.apgd, logits_fn, norm=norm, eps=eps,
                                 num_steps=steps, loss=loss))(x, y, jax.random.key(11))
  _assert_feasible(xa, x, norm, eps)
  clean_ce = float(_ce(logits_fn, x, y).mean())
  assert float(_ce(logits_fn, xa, y).mean()) > clean_ce + 0.1
  assert _acc(logits_fn, xa, y) < _acc(logits_fn, x, y) - 0.1
  if loss == "ce":  # at least as strong as PGD with the same budget (10 gradient steps)
    xp = _pgd_cached(trained, norm, steps)
    assert float(_ce(logits_fn, xa, y).mean()) >= float(_ce(logits_fn, xp, y).mean()) - 0.05
  else:  # DLR is maximised; it is > 0 iff misclassified
    dlr = lambda v: attacks.loss_per_example(logits_fn(v), y, loss="dlr")
    assert float(dlr(xa).mean()) > float(dlr(x).mean())


# --------------------------------------------------------------------------- evaluation


def test_robust_accuracy_worst_case():
  # Class = 1 if the first pixel > 0.5 else 0.
  logits_fn = lambda x: jnp.stack([0.5 - x[:, 0, 0, 0], x[:, 0, 0, 0] - 0.5], -1)
  x = jnp.zeros((8, 2, 2, 1)).at[:, 0, 0, 0].set(jnp.array([.1, .2, .3, .9, .8, .7, .6, .4]))
  y = jnp.array([0, 0, 0, 1, 1, 1, 1, 1])  # last one wrong on clean: clean acc 7/8

  def flip(idx):
    mask = jnp.zeros((8,), bool).at[jnp.array(idx)].set(True)

    def attack(xb, yb, key):
      del yb, key
      v = xb[:, 0, 0, 0]
      return xb.at[:, 0, 0, 0].set(jnp.where(mask[:xb.shape[0]], 1.0 - v, v))
    return attack

  res = attacks.robust_accuracy(logits_fn, x, y, jax.random.key(0),
                                {"a": flip([0, 1]), "b": flip([3, 7])})
  assert res["clean_accuracy"] == pytest.approx(7 / 8)
  assert res["per_attack"]["a"] == pytest.approx(5 / 8)
  assert res["per_attack"]["b"] == pytest.approx(6 / 8)  # example 7 was already wrong
  assert res["robust_accuracy"] == pytest.approx(4 / 8)
  np.testing.assert_array_equal(res["robust"], [0, 0, 1, 0, 1, 1, 1, 0])


def test_robust_accuracy_batching_consistent(trained):
  logits_fn, x, y = trained
  attack = jax.jit(lambda xb, yb, k: attacks.pgd(logits_fn, xb, yb, k, norm="linf",
                                                 eps=EPS_LINF, step_size=EPS_LINF / 4,
                                                 num_steps=1))
  full = attacks.robust_accuracy(logits_fn, x[:16], y[:16], jax.random.key(1), [attack])
  chunked = attacks.robust_accuracy(logits_fn, x[:16], y[:16], jax.random.key(1), [attack],
                                    batch_size=8)
  np.testing.assert_array_equal(full["robust"], chunked["robust"])
  assert full["robust_accuracy"] <= full["clean_accuracy"]


# --------------------------------------------------------------------------- validation


def test_bad_inputs_raise_named_errors():
  logits_fn = lambda v: v.reshape(v.shape[0], -1)[:, :3]
  x = jnp.full((2, 4, 4, 1), 0.5)
  y = jnp.array([0, 1])
  key = jax.random.key(0)
  kw = dict(norm="linf", eps=0.1, step_size=0.01, num_steps=1)
  with pytest.raises(ValueError, match="eps"):
    attacks.pgd(logits_fn, x, y, key, **{**kw, "eps": -0.1})
  with pytest.raises(ValueError, match="norm"):
    attacks.pgd(logits_fn, x, y, key, **{**kw, "norm": "l1"})
  with pytest.raises(ValueError, match="loss"):
    attacks.pgd(logits_fn, x, y, key, loss="hinge", **kw)
  with pytest.raises(ValueError, match="x"):
    attacks.pgd(logits_fn, x[0], y, key, **kw)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    attacks.pgd(logits_fn, x + 1.0, y, key, **kw)
  with pytest.raises(ValueError, match="eps"):
    attacks.fgsm(logits_fn, x, y, eps=-1.0)
  with pytest.raises(ValueError, match="x"):
    attacks.fgm(logits_fn, x * 3.0, y, eps=1.0)
  with pytest.raises(ValueError, match="loss"):
    attacks.apgd(logits_fn, x, y, key, eps=0.1, loss="hinge")
  with pytest.raises(ValueError, match="norm"):
    attacks.apgd(logits_fn, x, y, key, eps=0.1, norm="l1")
  with pytest.raises(ValueError, match="eps"):
    attacks.apgd(logits_fn, x, y, key, eps=-0.1)
  with pytest.raises(ValueError, match="norm"):
    attacks.project(x, x, norm="l1", eps=0.1)
  with pytest.raises(ValueError, match="y"):
    attacks.pgd(logits_fn, x, y[:1], key, **kw)


def test_jit_with_traced_eps():
  w = jax.random.normal(jax.random.key(12), (16, 3))
  logits_fn = lambda v: v.reshape(v.shape[0], -1) @ w
  x = jnp.full((2, 4, 4, 1), 0.5)
  y = jnp.array([0, 1])
  f = jax.jit(lambda eps: attacks.pgd(logits_fn, x, y, jax.random.key(0), norm="l2",
                                      eps=eps, step_size=eps / 2, num_steps=3))
  _assert_feasible(f(0.3), x, "l2", 0.3)
  _assert_feasible(f(0.1), x, "l2", 0.1)  # same compiled function, other radius
