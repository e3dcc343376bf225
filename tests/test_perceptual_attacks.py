"""Tests for the perceptual attacks (adacorr.attacks.perceptual): Fast-LPA, LPA, PPGD, the
LPIPS projections, the Gauss-Newton step and the margin loss (Laidlaw et al. 2021, App. A).

The networks are tiny one-stage SmallCNNs (12x12x1 inputs) whose BatchNorm biases are
shifted so that their ReLU features are active: with 3-4 channels at this init most
positions are otherwise dead over all channels, which leaves LPIPS nearly constant and
the attacks with little to do.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import attacks
from adacorr.attacks import perceptual as perceptual_attacks
from adacorr.models import get_model
from adacorr.perceptual import (
    features_and_logits_fn, lpips_distance, model_features_fn, model_logits_fn,
    normalize_features)
from tests.flat_init import flat_init, uniform

B = 8
SHAPE = (B, 12, 12, 1)
BOUND = 0.25  # Fast-LPA and the projections
EVAL_BOUND = 0.02  # LPA and PPGD: small enough that the iterates leave it (the projection
                   # acts) and the attacks do not saturate the margin


class _Nets:
  """The classifier (also the self-bounded LPIPS network), an external LPIPS network,
  images, labels and jitted helpers."""

  def __init__(self):
    # One conv stage each (the attack's compile time grows with the network; the
    # multi-layer embedding is tested in test_lpips.py).
    clf = get_model("small_cnn", features=(4,), dense=16, mean=(0.5,), std=(0.25,))
    cv = flat_init(clf, (1,) + SHAPE[1:], seed=0, bn_bias=3.0)
    ext = get_model("small_cnn", features=(3,), dense=4, mean=(0.5,), std=(0.25,))
    ev = flat_init(ext, (1,) + SHAPE[1:], seed=1, bn_bias=3.0)
    self.logits_fn = model_logits_fn(clf, cv)
    self.self_fn = features_and_logits_fn(clf, cv)  # (logits, [maps]) in one pass
    self.self_features = model_features_fn(clf, cv)
    self.ext_features = model_features_fn(ext, ev)
    self.x = uniform(2, SHAPE)
    self.x_mid = uniform(3, SHAPE, 0.25, 0.75)  # interior images: no clipping in a step
    logits = jax.jit(self.logits_fn)
    # Labels = the model's own clean predictions, so the clean margin is negative.
    self.y = jnp.argmax(logits(self.x), -1)
    self.y_mid = jnp.argmax(logits(self.x_mid), -1)
    self.dist_self = jax.jit(functools.partial(lpips_distance, self.self_features))
    self.dist_ext = jax.jit(functools.partial(lpips_distance, self.ext_features))
    self.margin = jax.jit(lambda v, y: attacks.margin_loss(self.logits_fn(v), y))
    for feats in (self.self_features, self.ext_features):
      for f in feats(self.x):  # healthy features (see the module docstring)
        assert not np.any(np.all(np.asarray(f) == 0, axis=-1))


@pytest.fixture(scope="module")
def nets():
  return _Nets()


_CACHE = {}


def _fast_lpa(nets, derivative):
  """fast_lpa (self-bounded, 3 steps) on the batch, per-example keys; memoised."""
  if derivative not in _CACHE:
    fn = jax.jit(functools.partial(attacks.fast_lpa, nets.self_fn, None, bound=BOUND,
                                   num_steps=3, derivative=derivative))
    keys = jax.random.split(jax.random.key(4), B)
    _CACHE[derivative] = (fn, keys, np.asarray(fn(nets.x, nets.y, keys)))
  return _CACHE[derivative]


def _assert_in_bound(x_adv, x, dist, bound=BOUND):
  x_adv = np.asarray(x_adv)
  assert x_adv.shape == x.shape
  assert np.all(np.isfinite(x_adv))
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  d = np.asarray(dist(x, jnp.asarray(x_adv)))
  assert np.all(d <= bound + 1e-4), d
  return d


# --------------------------------------------------------------------------- margin loss


def test_margin_loss_matches_numpy():
  z = np.asarray(uniform(5, (6, 4), -3.0, 3.0))
  margin = jax.jit(attacks.margin_loss)
  y = np.array([0, 1, 2, 3, 1, 0])
  others = np.where(np.eye(4, dtype=bool)[y], -np.inf, z).max(axis=1)
  raw = others - z[np.arange(6), y]
  assert np.any(raw > 0.5) and np.any(raw < 0)
  for kappa in (math.inf, 1.0, 0.5):
    np.testing.assert_allclose(margin(z, y, kappa), np.minimum(raw, kappa), rtol=1e-6)
  np.testing.assert_allclose(attacks.margin_loss(jnp.asarray(z), jnp.asarray(y)), raw,
                             rtol=1e-6)  # default kappa: uncapped
  # Hand case: positive iff misclassified.
  np.testing.assert_allclose(
      attacks.margin_loss(jnp.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]]), jnp.array([1, 1])),
      [2.0, -4.0])


# --------------------------------------------------------------------------- projections


@pytest.mark.parametrize("method,num_steps", [("bisection", 10), ("newton", 10),
                                              ("newton", 0)])
def test_project_lpips_feasible_and_fixes_inside_points(nets, method, num_steps):
  """num_steps=0 leaves Newton unconverged, so its bisection fallback is what acts."""
  x = nets.x
  noise = uniform(6, SHAPE, -0.5, 0.5)
  # Examples 0..4 far outside the bound, 5..7 already inside.
  scale = jnp.array([1.0] * 5 + [0.002] * 3).reshape(B, 1, 1, 1)
  cand = jnp.clip(x + scale * noise, 0.0, 1.0)
  d0 = np.asarray(nets.dist_self(x, cand))
  assert np.all(d0[:5] > 1.3 * BOUND) and np.all(d0[5:] < BOUND), d0
  proj = jax.jit(functools.partial(attacks.project_lpips, nets.self_features, bound=BOUND,
                                   method=method, num_steps=num_steps))
  out = proj(x, cand)
  d = _assert_in_bound(out, x, nets.dist_self)
  np.testing.assert_array_equal(np.asarray(out)[5:], np.asarray(cand)[5:])
  # Far points land near the boundary, not at x.
  assert np.all(d[:5] > 0.8 * BOUND), d
  delta, moved = np.asarray(cand - x)[:5], np.asarray(out - x)[:5]
  alpha = np.sum(moved * delta, axis=(1, 2, 3)) / np.sum(delta**2, axis=(1, 2, 3))
  off_segment = np.abs(moved - alpha[:, None, None, None] * delta).max(axis=(1, 2, 3))
  if method == "bisection" or num_steps == 0:  # on the segment from x to the candidate
    np.testing.assert_allclose(off_segment, 0.0, atol=1e-5)
    assert np.all((alpha > 0) & (alpha < 1)), alpha
    assert np.all(d[:5] > BOUND - 1e-3), d  # 10 bisection steps: close to the bound
  else:  # Newton steps along grad d: off the segment, ~overshoot (0.01) inside the bound
    assert np.all(off_segment > 1e-2), off_segment
    assert np.all(d[:5] > BOUND - 0.03), d


# --------------------------------------------------------------------------- Gauss-Newton / CG


def test_gauss_newton_direction_matches_dense_solve():
  n_in, dim = 4, 6
  # phi(x) = x_flat @ A, so every example's Jacobian is J = A^T and J^T J = A A^T.
  a = np.asarray(uniform(7, (n_in, dim), -1.0, 1.0)) * 0.3
  a[:, :n_in] += 1.5 * np.eye(n_in)
  assert np.linalg.cond(a @ a.T) < 10
  a = jnp.asarray(a, jnp.float32)
  phi = lambda v: v.reshape(v.shape[0], -1) @ a  # noqa: E731
  x = uniform(8, (3, 2, 2, 1))
  # Three right-hand sides: example 1's is 100x larger, example 2's is 0.
  g = uniform(9, (3, 2, 2, 1), -1.0, 1.0).at[1].multiply(100.0).at[2].set(0.0)
  an, gn = np.asarray(a, np.float64), np.asarray(g, np.float64).reshape(3, n_in)
  expected = np.stack([np.linalg.solve(an @ an.T, gi) for gi in gn])
  assert np.linalg.norm(expected[1]) > 10 * np.linalg.norm(expected[0])

  def solve(jacobian, cg_steps):
    fn = jax.jit(functools.partial(attacks.gauss_newton_direction, phi, cg_steps=cg_steps,
                                   cg_tol=0.0, jacobian=jacobian))
    delta, m = fn(x, g)
    assert delta.shape == x.shape and m.shape == (3,)
    return np.asarray(delta).reshape(3, n_in), np.asarray(m)

  for jacobian, rtol in (("exact", 1e-3), ("finite_difference", 1e-2)):
    delta, m = solve(jacobian, n_in)  # CG is exact in n_in steps
    for i in range(3):  # each example its own solution
      np.testing.assert_allclose(delta[i], expected[i], rtol=rtol,
                                 atol=rtol * np.abs(expected[i]).max())
    np.testing.assert_allclose(m, np.linalg.norm(expected @ an, axis=1), rtol=rtol)
    np.testing.assert_array_equal(delta[2], 0.0)
  # One CG step is the (scaled) steepest direction, not the Gauss-Newton solution.
  delta1, _ = solve("exact", 1)
  assert not np.allclose(delta1[0], expected[0], rtol=1e-2)
  cos = delta1[0] @ gn[0] / np.linalg.norm(delta1[0]) / np.linalg.norm(gn[0])
  np.testing.assert_allclose(cos, 1.0, atol=1e-5)


# --------------------------------------------------------------------------- PPGD step


@pytest.mark.parametrize("jacobian", ["exact", "finite_difference"])
def test_perceptual_step_has_lpips_length_eta(nets, jacobian):
  """d(x, step) = ||J step|| + O(eta^2) = eta (1 + O(eta)) with the exact m = ||J delta||.
  The reference's secant m (h = 1e-3 times the unnormalised CG solution) adds an error
  of its own (~1.5% here) that does not shrink with eta."""
  x, y = nets.x_mid, nets.y_mid
  step = jax.jit(lambda v, eta: attacks.perceptual_step(
      nets.self_fn, None, v, y, eta=eta, jacobian=jacobian))
  errors = []
  for eta in (1e-2, 2e-2):
    xs = np.asarray(step(x, eta))
    assert xs.min() > 0.0 and xs.max() < 1.0  # no clipping involved
    assert np.abs(xs - np.asarray(x)).max() > eta / 10  # it moved
    ratio = np.asarray(nets.dist_self(x, jnp.asarray(xs))) / eta
    np.testing.assert_allclose(ratio, 1.0, atol=0.02 if jacobian == "exact" else 0.05)
    errors.append(np.mean(np.abs(ratio - 1.0)))
  if jacobian == "exact":  # the relative error is first order in eta
    assert errors[1] > 1.3 * errors[0], errors
  # The step increases the (uncapped) margin: it is along the first-order ascent direction.
  assert np.all(np.asarray(nets.margin(jnp.asarray(xs), y)) > np.asarray(nets.margin(x, y)))


# --------------------------------------------------------------------------- Fast-LPA


def test_fast_lpa_raises_margin(nets):
  _, _, x_adv = _fast_lpa(nets, "jvp")
  assert np.all(np.isfinite(x_adv)) and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  clean = np.asarray(nets.margin(nets.x, nets.y))
  adv = np.asarray(nets.margin(jnp.asarray(x_adv), nets.y))
  assert np.all(clean < 0)
  assert adv.mean() > clean.mean() + 1.0, (clean, adv)
  assert np.mean(adv > clean) >= 0.75
  # No projection, but the penalty keeps it near the bound (at most a few times it).
  d = np.asarray(nets.dist_self(nets.x, jnp.asarray(x_adv)))
  assert np.all(d > 0.1 * BOUND) and np.all(d < 3 * BOUND), d


def test_fast_lpa_derivatives_agree(nets):
  _, _, jvp = _fast_lpa(nets, "jvp")
  _, _, fd = _fast_lpa(nets, "finite_difference")
  assert np.all(np.isfinite(fd))
  d_jvp = np.asarray(nets.dist_self(nets.x, jnp.asarray(jvp)))
  d_fd = np.asarray(nets.dist_self(nets.x, jnp.asarray(fd)))
  np.testing.assert_allclose(d_fd, d_jvp, rtol=0.2)
  assert abs(d_fd.mean() - d_jvp.mean()) < 0.1 * d_jvp.mean()
  clean = np.asarray(nets.margin(nets.x, nets.y))
  assert np.asarray(nets.margin(jnp.asarray(fd), nets.y)).mean() > clean.mean() + 1.0


def test_fast_lpa_per_example_independence(nets):
  """Example i's result depends only on (x_i, y_i, key_i): alone (batch of one), in a
  permuted batch, or beside other images, labels and keys, it gets the same result."""
  fn, keys, batch = _fast_lpa(nets, "jvp")
  assert not np.allclose(batch, nets.x, atol=1e-3)
  for i in range(B):  # one more compilation (B = 1)
    alone = np.asarray(fn(nets.x[i:i + 1], nets.y[i:i + 1], keys[i:i + 1]))
    np.testing.assert_allclose(alone, batch[i:i + 1], atol=1e-5)
  perm = np.array([3, 1, 7, 0, 5, 2, 6, 4])
  np.testing.assert_allclose(np.asarray(fn(nets.x[perm], nets.y[perm], keys[perm])),
                             batch[perm], atol=1e-5)
  # Examples 0..3 keep their inputs; 4..7 get other images, labels and keys.
  other_x = nets.x.at[4:].set(nets.x_mid[4:])
  other_y = nets.y.at[4:].set((nets.y[4:] + 3) % 10)
  other_k = jnp.concatenate([keys[:4], jax.random.split(jax.random.key(5), 4)])
  mixed = np.asarray(fn(other_x, other_y, other_k))
  np.testing.assert_allclose(mixed[:4], batch[:4], atol=1e-5)
  assert not np.allclose(mixed[4:], batch[4:], atol=1e-3)


# --------------------------------------------------------------------------- LPA and PPGD


@pytest.mark.parametrize("bounded,projection", [("self", "newton"), ("external", "bisection")])
def test_lpa_respects_bound(nets, bounded, projection):
  if bounded == "self":
    logits_fn, features_fn, dist = nets.self_fn, None, nets.dist_self
  else:
    logits_fn, features_fn, dist = nets.logits_fn, nets.ext_features, nets.dist_ext
  # Large steps (2x the bound) so that the iterates leave the bound.
  fn = jax.jit(functools.partial(attacks.lpa, logits_fn, features_fn, bound=EVAL_BOUND,
                                 num_steps=3, lambda_steps=2, step_size=2 * EVAL_BOUND,
                                 projection=projection))
  x_adv = fn(nets.x, nets.y, jax.random.key(6))
  d = _assert_in_bound(x_adv, nets.x, dist, EVAL_BOUND)
  assert np.all(d > 0.5 * EVAL_BOUND), d  # projected onto the boundary, not back to x
  clean = np.asarray(nets.margin(nets.x, nets.y))
  adv = np.asarray(nets.margin(x_adv, nets.y))
  assert adv.mean() > clean.mean() + 0.5, (clean, adv)
  assert np.mean(adv > clean) >= 0.75


def test_ppgd_respects_bound_and_raises_margin(nets):
  fn = jax.jit(functools.partial(attacks.ppgd, nets.self_fn, None, bound=EVAL_BOUND,
                                 num_steps=4, projection="bisection"))
  x_adv = fn(nets.x, nets.y, jax.random.key(7))
  d = _assert_in_bound(x_adv, nets.x, nets.dist_self, EVAL_BOUND)
  assert np.all(d > 0.5 * EVAL_BOUND), d
  clean = np.asarray(nets.margin(nets.x, nets.y))
  adv = np.asarray(nets.margin(x_adv, nets.y))
  assert adv.mean() > clean.mean() + 0.5, (clean, adv)
  assert np.mean(adv > clean) >= 0.75


# --------------------------------------------------------------------------- validation


def test_bad_inputs_raise_named_errors():
  w = uniform(10, (16, 3), -1.0, 1.0)
  logits_fn = lambda v: v.reshape(v.shape[0], -1) @ w  # noqa: E731
  features_fn = lambda v: [v]  # noqa: E731
  x = jnp.full((2, 4, 4, 1), 0.5)
  y = jnp.array([0, 1])
  key = jax.random.key(0)
  kw = dict(bound=0.1, num_steps=1)
  for attack in (attacks.fast_lpa, attacks.lpa, attacks.ppgd):
    with pytest.raises(ValueError, match="bound"):
      attack(logits_fn, features_fn, x, y, key, **{**kw, "bound": -0.1})
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
      attack(logits_fn, features_fn, x + 1.0, y, key, **kw)
    with pytest.raises(ValueError, match="x must be a rank-4"):
      attack(logits_fn, features_fn, x[0], y, key, **kw)
    with pytest.raises(ValueError, match="y must have shape"):
      attack(logits_fn, features_fn, x, y[:1], key, **kw)
    with pytest.raises(ValueError, match="y must have shape"):
      attack(logits_fn, features_fn, x, y[:, None], key, **kw)
    with pytest.raises(ValueError, match="features_fn=None"):
      attack(logits_fn, None, x, y, key, **kw)
  for attack in (attacks.lpa, attacks.ppgd):
    with pytest.raises(ValueError, match="projection='l2'"):
      attack(logits_fn, features_fn, x, y, key, projection="l2", **kw)
  for attack in (attacks.fast_lpa, attacks.lpa):
    with pytest.raises(ValueError, match="derivative='exact'"):
      attack(logits_fn, features_fn, x, y, key, derivative="exact", **kw)
  with pytest.raises(ValueError, match="jacobian='jvp'"):
    attacks.ppgd(logits_fn, features_fn, x, y, key, jacobian="jvp", **kw)
  with pytest.raises(ValueError, match="jacobian='jvp'"):
    attacks.gauss_newton_direction(lambda v: v.reshape(2, -1), x, x, jacobian="jvp")
  with pytest.raises(ValueError, match="bound"):
    attacks.project_lpips(features_fn, x, x, bound=-1.0)
  with pytest.raises(ValueError, match="method='none'"):
    attacks.project_lpips(features_fn, x, x, bound=0.1, method="none")
  with pytest.raises(ValueError, match=r"x_adv must lie in \[0, 1\]"):
    attacks.project_lpips(features_fn, x, x + 1.0, bound=0.1)
  with pytest.raises(ValueError, match="x and x_adv"):
    attacks.project_lpips(features_fn, x, x[:1], bound=0.1)


# --------------------------------------------------------------------------- dead ReLU features


def test_gauss_newton_relu_features_with_dead_positions_finite():
  """Where a ReLU map is 0 over all channels, J is 0 (not NaN): m = ||J delta|| stays
  finite, so PPGD's step (`moves` requires m > 0) is not silently dropped (regression:
  normalize_features' sqrt had a NaN forward-mode derivative there)."""
  w = jnp.array([0.5, 2.0])

  def maps(v):  # a two-channel ReLU map, 0 over both channels where v < ~0.29
    return jax.nn.relu((v - 0.3) * w + 0.01 * v)

  phi = lambda v: normalize_features([maps(v)])  # noqa: E731
  x = uniform(12, (2, 3, 3, 1))
  assert np.all(np.any(np.all(np.asarray(maps(x)) == 0, axis=-1), axis=(1, 2)))
  g = uniform(13, (2, 3, 3, 1), -1.0, 1.0)
  _, m = jax.jit(attacks.gauss_newton_direction, static_argnums=0)(phi, x, g)
  assert np.all(np.isfinite(np.asarray(m))) and np.all(np.asarray(m) > 0), m


# --------------------------------------------------------------------------- schedules


def test_fast_lpa_schedule_values():
  """Hand values (Algorithm 3: lambda_t = 10^(t/T), eta_t = eps 0.1^(t/T), t = 1..T;
  the reference code's t = 0..T-1): lambda rises, eta decays, each by 10 over the run."""
  sched = perceptual_attacks.fast_lpa_schedule
  lams, etas = sched(4, lam=10.0, step_size=0.5)
  np.testing.assert_allclose(lams, [10**0.25, 10**0.5, 10**0.75, 10.0], rtol=1e-12)
  np.testing.assert_allclose(etas, [0.5 * 10**-0.25, 0.5 * 10**-0.5, 0.5 * 10**-0.75, 0.05],
                             rtol=1e-12)
  lams, etas = sched(4, lam=10.0, step_size=0.5, convention="reference")
  np.testing.assert_allclose(lams, [1.0, 10**0.25, 10**0.5, 10**0.75], rtol=1e-12)
  np.testing.assert_allclose(etas, [0.5, 0.5 * 10**-0.25, 0.5 * 10**-0.5, 0.5 * 10**-0.75],
                             rtol=1e-12)
  # PAT's T = 10: lambda 10^0.1 ~ 1.259 ... 10, eta 0.5 * 10^-0.1 ~ 0.397 ... 0.05.
  lams, etas = sched(10, lam=10.0, step_size=0.5)
  np.testing.assert_allclose([lams[0], lams[-1], etas[0], etas[-1]],
                             [1.2589254117941673, 10.0, 0.3971641173621406, 0.05], rtol=1e-12)
  assert np.all(np.diff(lams) > 0) and np.all(np.diff(etas) < 0)
  # Each half can be switched off (the paper's ablation, App. F.1).
  lams, etas = sched(3, lam=10.0, step_size=0.5, increase_lambda=False)
  np.testing.assert_allclose(lams, [10.0] * 3)
  lams, etas = sched(3, lam=10.0, step_size=0.5, decay_step_size=False)
  np.testing.assert_allclose(etas, [0.5] * 3)
  for kwargs, name in ((dict(num_steps=0), "num_steps"), (dict(lam=-1.0), "lam"),
                       (dict(step_size=-0.1), "step_size"),
                       (dict(convention="code"), "convention")):
    with pytest.raises(ValueError, match=name):
      sched(**{"num_steps": 3, **kwargs})


@pytest.mark.parametrize("convention,expected", [("paper", 0.1), ("reference", 1.0)])
def test_fast_lpa_first_step_length_follows_the_schedule(nets, convention, expected):
  """One step from x itself (init_std=0) has LPIPS length ~eta_1 = bound * 0.1^(1/T)
  (T = 1: bound / 10 in the paper's numbering, the bound in the reference's)."""
  bound = 0.02
  fn = jax.jit(functools.partial(attacks.fast_lpa, nets.self_fn, None, bound=bound,
                                 num_steps=1, init_std=0.0, convention=convention))
  x_adv = fn(nets.x_mid, nets.y_mid, jax.random.key(0))
  d = np.asarray(nets.dist_self(nets.x_mid, x_adv))
  np.testing.assert_allclose(d / bound, expected, rtol=0.05)


@pytest.mark.parametrize("order", ["late", "early"])
def test_fast_lpa_applies_the_schedules_lambda_at_its_step(nets, monkeypatch, order):
  """fast_lpa takes step t's lambda and eta from `fast_lpa_schedule` at index t: a huge
  lambda at the SECOND step (the first starts at x, inside the bound, where the penalty is
  0) pulls the iterate back towards x; the same lambda at the first step does nothing."""
  big = 1e6
  lams = np.array([0.0, big]) if order == "late" else np.array([big, 0.0])
  monkeypatch.setattr(perceptual_attacks, "fast_lpa_schedule",
                      lambda num_steps, **kw: (lams, np.array([0.02, 0.02])))
  fn = jax.jit(functools.partial(attacks.fast_lpa, nets.self_fn, None, bound=1e-4,
                                 num_steps=2, init_std=0.0))
  d = np.asarray(nets.dist_self(nets.x_mid, fn(nets.x_mid, nets.y_mid, jax.random.key(0))))
  if order == "late":
    assert np.all(d < 0.01), d   # 0.02 out, then ~0.02 back
  else:
    assert np.all(d > 0.025), d  # two margin-ascent steps of 0.02


def _lpa_toy(num_examples=3):
  """A classifier that is always right (constant logits: margin -5, zero gradient) and an
  LPIPS network [x * mask] on (B, 4, 4, 3) images: example 2's mask is 0, so its
  distance is always 0; the others' is the RGB direction change (> 0 once x moves)."""
  x = uniform(20, (num_examples, 4, 4, 3), 0.25, 0.75)
  y = jnp.zeros((num_examples,), jnp.int32)
  mask = jnp.array([1.0, 1.0, 0.0][:num_examples]).reshape(-1, 1, 1, 1)

  def logits_fn(v):
    return jnp.zeros((v.shape[0], 3)).at[:, 0].set(5.0) + 0.0 * jnp.sum(v)

  return logits_fn, (lambda v: [v * mask]), x, y


@pytest.mark.parametrize("convention", ["paper", "reference"])
def test_lpa_multiplies_lambda_by_10_per_round_outside_the_bound(convention):
  """S rounds: an example outside the bound after every round gets lambda 0.01 * 10^S
  (attacked with 0.01, 0.1, 1, ...); one inside keeps 0.01. step_size=0: the iterates
  stay at the random start, so examples 0-1 stay outside (d > 1e-6), example 2 at d = 0."""
  logits_fn, features_fn, x, y = _lpa_toy()
  fn = jax.jit(functools.partial(
      attacks.lpa, logits_fn, features_fn, bound=1e-6, num_steps=2, lambda_steps=3,
      step_size=0.0, convention=convention, projection="bisection", return_lambda=True))
  x_adv, lam = fn(x, y, jax.random.key(1))
  np.testing.assert_allclose(np.asarray(lam), [10.0, 10.0, 0.01], rtol=1e-5)
  assert x_adv.shape == x.shape
  fn = jax.jit(functools.partial(
      attacks.lpa, logits_fn, features_fn, bound=1e-6, num_steps=1, lambda_steps=2,
      lam=0.5, lam_factor=3.0, step_size=0.0, convention=convention, projection="bisection",
      return_lambda=True))
  np.testing.assert_allclose(np.asarray(fn(x, y, jax.random.key(1))[1]), [4.5, 4.5, 0.5],
                             rtol=1e-5)


@pytest.mark.parametrize("convention,expected", [("paper", 0.01), ("reference", 0.1)])
def test_lpa_tests_the_rounds_final_point_as_the_paper(convention, expected):
  """One round of one step that starts outside the bound (the random start, d0) and ends
  inside (a step of LPIPS length d0 back towards x): the paper's test of the round's
  final point keeps lambda; the code's test of the step's start raises it."""
  logits_fn, features_fn, x, y = _lpa_toy(1)
  start = jax.jit(functools.partial(attacks.lpa, logits_fn, features_fn, bound=10.0,
                                    num_steps=1, lambda_steps=1, step_size=0.0,
                                    projection="bisection"))
  d0 = float(lpips_distance(features_fn, x, start(x, y, jax.random.key(2)))[0])
  assert d0 > 1e-3
  fn = jax.jit(functools.partial(
      attacks.lpa, logits_fn, features_fn, bound=0.5 * d0, num_steps=1, lambda_steps=1,
      step_size=d0, decay_step_size=False, convention=convention, projection="bisection",
      return_lambda=True))
  x_adv, lam = fn(x, y, jax.random.key(2))
  assert float(lpips_distance(features_fn, x, x_adv)[0]) < 0.45 * d0  # ended inside
  np.testing.assert_allclose(np.asarray(lam), [expected], rtol=1e-5)


# --------------------------------------------------------------------------- CG stopping


def _diag_system(scale):
  """phi(x) = x_flat A with A = diag(1, sqrt(10)): J^T J = diag(1, 10); g = scale (1, 1)."""
  a = jnp.diag(jnp.array([1.0, np.sqrt(10.0)], jnp.float32))
  phi = lambda v: v.reshape(v.shape[0], -1) @ a  # noqa: E731
  x = jnp.full((1, 1, 2, 1), 0.5)
  return phi, x, jnp.full((1, 1, 2, 1), scale, jnp.float32)


def _direction(scale, **kw):
  phi, x, g = _diag_system(scale)
  delta, m = attacks.gauss_newton_direction(phi, x, g, **kw)
  delta = np.asarray(delta).reshape(-1)
  return delta / np.linalg.norm(delta), delta, float(m[0])


def test_cg_runs_its_k_iterations_by_default():
  """The paper's CG (cg_tol=0): K iterations whatever the scale of g. K = 1 is the
  steepest direction g; K = 2 solves the 2x2 system exactly, (J^T J)^-1 g ~ (1, 0.1)."""
  exact = np.array([1.0, 0.1]) / np.linalg.norm([1.0, 0.1])
  for scale in (0.1, 10.0):
    one, _, _ = _direction(scale, cg_steps=1)
    np.testing.assert_allclose(one, [2**-0.5, 2**-0.5], atol=1e-6)
    for k in (2, 5):
      direction, delta, m = _direction(scale, cg_steps=k)
      np.testing.assert_allclose(direction, exact, atol=1e-5)
      np.testing.assert_allclose(delta, scale * np.array([1.0, 0.1]), rtol=1e-4)
      np.testing.assert_allclose(m, np.linalg.norm(delta * [1.0, np.sqrt(10.0)]), rtol=1e-5)


def test_cg_reference_stop_is_on_the_absolute_squared_residual():
  """cg_tol=0.1 is the reference's stop (||r||^2 < 0.1 after at least one iteration, the
  unnormalised gradient the right-hand side). After one iteration r_1 = s (9/11, -9/11),
  ||r_1||^2 = 1.34 s^2: s = 0.1 stops there (direction g), s = 10 goes on to the exact
  solution. (A tolerance relative to ||g|| would treat both scales alike.) Even a tiny g
  gets its one iteration."""
  small, _, _ = _direction(0.1, cg_steps=5, cg_tol=0.1)
  np.testing.assert_allclose(small, [2**-0.5, 2**-0.5], atol=1e-6)
  large, _, _ = _direction(10.0, cg_steps=5, cg_tol=0.1)
  np.testing.assert_allclose(large, np.array([1.0, 0.1]) / np.linalg.norm([1.0, 0.1]),
                             atol=1e-5)
  tiny, delta, m = _direction(1e-3, cg_steps=5, cg_tol=0.1)
  np.testing.assert_allclose(tiny, [2**-0.5, 2**-0.5], atol=1e-6)
  np.testing.assert_allclose(delta, 1e-3 * 2 / 11, rtol=1e-4)  # alpha_0 g = (2/11) g
  assert m > 0
  with pytest.raises(ValueError, match="cg_tol"):
    _direction(1.0, cg_tol=-0.1)


def test_bad_schedule_arguments_raise_named_errors(nets):
  for attack in (attacks.fast_lpa, attacks.lpa):
    with pytest.raises(ValueError, match="convention"):
      attack(nets.self_fn, None, nets.x, nets.y, jax.random.key(0), bound=0.1,
             num_steps=1, convention="code")
  with pytest.raises(ValueError, match="lam_factor"):
    attacks.lpa(nets.self_fn, None, nets.x, nets.y, jax.random.key(0), bound=0.1,
                num_steps=1, lam_factor=0.0)
  with pytest.raises(ValueError, match="cg_tol"):
    attacks.ppgd(nets.self_fn, None, nets.x, nets.y, jax.random.key(0), bound=0.1,
                 num_steps=1, cg_tol=-1.0)
