"""FAB-T (adacorr.attacks.fab): the exact hyperplane-box projections, the minimal distance
on a linear classifier, accuracy drop and ball/box membership on the tiny trained MLP,
per-example independence, input checks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr.attacks import lp
from adacorr.attacks.fab import (
    fab, fab_targeted, project_hyperplane_box_l2, project_hyperplane_box_linf)
from tests.tiny_classifier import trained_mlp

PROJ = {"linf": project_hyperplane_box_linf, "l2": project_hyperplane_box_l2}
NORM = {"linf": lambda v: np.max(np.abs(v), axis=-1),
        "l2": lambda v: np.sqrt(np.sum(np.square(v), axis=-1))}


# --------------------------------------------------------------------------- projections


def _kkt_projection(t, w, b, norm):
  """Independent float64 reference for one row: the minimiser of ||d||_p subject to
  w . (t + d) = b, t + d in [0, 1] has the form d(lam) = clip(-lam u, -t, 1 - t) with
  u = sign(c) w (l2) or sign(c) sign(w) (linf), c = w . t - b; w . d(lam) is monotone in
  lam, so bisect it. Where the plane misses the box, the box corner closest to it."""
  c = w @ t - b
  u = np.sign(c) * (w if norm == "l2" else np.sign(w))
  d_of = lambda lam: np.clip(-lam * u, -t, 1 - t) * (w != 0)
  gap = lambda lam: np.sign(c) * (w @ d_of(lam) + c)  # decreasing from |c| in lam
  lo, hi = 0.0, 1e6
  if gap(hi) > 0:  # infeasible: the whole box is on one side
    return d_of(hi)
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if gap(mid) > 0 else (lo, mid)
  return d_of(hi)


def _random_problems(rng, n, rows, feasible=True):
  """`rows` problems in dimension n: t (rows, n), w (rows, n) (some w_i = 0), b (rows,),
  float32 values held in float64; the plane meets the box iff `feasible`."""
  t = rng.uniform(0, 1, (rows, n))
  w = rng.normal(size=(rows, n))
  w[rng.uniform(size=(rows, n)) < 0.15] = 0.0  # zero normals stay 0
  if feasible:
    b = np.sum(w * rng.uniform(0, 1, (rows, n)), axis=1)
  else:
    b = np.sum(w * t, 1) + np.sign(rng.normal(size=rows)) * (np.abs(w).sum(1) + 1.0)
  as32 = lambda v: v.astype(np.float32).astype(np.float64)
  return as32(t), as32(w), as32(b)


_JIT_PROJ = {norm: jax.jit(fn) for norm, fn in PROJ.items()}


def _project(norm, t, w, b):
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  return np.asarray(_JIT_PROJ[norm](f32(t), f32(w), f32(b))).astype(np.float64)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_exact_on_random_problems(norm):
  rng = np.random.default_rng(0)
  for n in (5, 6, 8):
    t, w, b = _random_problems(rng, n, 16)
    d = _project(norm, t, w, b)
    assert np.all(t + d >= -1e-6) and np.all(t + d <= 1 + 1e-6)  # in the box
    np.testing.assert_array_less(np.abs(np.sum(w * (t + d), 1) - b),
                                 1e-4 * (1 + np.abs(w).sum(1)))  # on the plane
    assert np.all(d[w == 0] == 0)
    for i in range(len(b)):
      ref = _kkt_projection(t[i], w[i], b[i], norm)
      assert NORM[norm](d[i]) <= NORM[norm](ref) + 1e-5
      np.testing.assert_allclose(d[i], ref, atol=2e-5)  # the same minimiser


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_not_beaten_by_a_generic_solver(norm):
  """The norm is no larger than scipy's LP (linf) / SLSQP (l2) solution."""
  from scipy import optimize  # pylint: disable=import-outside-toplevel  (a jax dependency)
  rng = np.random.default_rng(1)
  for n in (5, 7):
    ts, ws, bs = _random_problems(rng, n, 6)
    ds = _project(norm, ts, ws, bs)
    for t, w, b, d in zip(ts, ws, bs, ds):
      if norm == "linf":  # variables (d, s): min s, -s <= d_i <= s, w . d = b - w . t
        a_ub = np.block([[np.eye(n), -np.ones((n, 1))], [-np.eye(n), -np.ones((n, 1))]])
        res = optimize.linprog(np.r_[np.zeros(n), 1.0], A_ub=a_ub, b_ub=np.zeros(2 * n),
                               A_eq=np.r_[w, 0.0][None], b_eq=[b - w @ t],
                               bounds=[(-ti, 1 - ti) for ti in t] + [(0, None)])
        assert res.success
        best = res.fun
      else:
        res = optimize.minimize(
            lambda v: v @ v, np.zeros(n), jac=lambda v: 2 * v, method="SLSQP",
            bounds=[(-ti, 1 - ti) for ti in t],
            constraints=[{"type": "eq", "fun": lambda v, w=w, t=t, b=b: w @ (t + v) - b,
                          "jac": lambda v, w=w: w}], options={"ftol": 1e-12})
        assert res.success
        best = np.sqrt(res.fun)
      assert NORM[norm](d) <= best + 1e-5


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_closed_form_and_infeasible(norm):
  # The box does not bind: -(w.t - b) w / ||w||^2 (l2), -(w.t - b) sign(w) / ||w||_1 (linf).
  t = np.full(6, 0.5)
  w = np.array([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])
  b = w @ t + 0.3
  want = (-(w @ t - b) * w / (w @ w) if norm == "l2"
          else -(w @ t - b) * np.sign(w) / np.abs(w).sum())
  np.testing.assert_allclose(_project(norm, t[None], w[None], np.array([b]))[0], want,
                             atol=1e-6)
  # The plane misses the box: the corner closest to it (w.(t+d) as near b as the box allows).
  t, w, b = _random_problems(np.random.default_rng(2), 6, 10, feasible=False)
  d = _project(norm, t, w, b)
  above = (b > np.sum(w * t, 1))[:, None]
  corner = np.where(above == (w > 0), 1.0, 0.0)
  np.testing.assert_allclose(d, (corner - t) * (w != 0), atol=1e-6)


# --------------------------------------------------------------------------- linear model


def _linear_model(rng, bsz=6):
  """3 classes on 4x4x1 images near 0.5; class 2 can never win, so for target 1 the
  decision boundary is the hyperplane (W1 - W0) . x + c1 - c0 = 0 (all labels 0)."""
  d = 16
  wm = rng.normal(size=(d, 3)).astype(np.float32)
  c = np.zeros(3, np.float32)
  c[1] = -(wm[:, 1] - wm[:, 0]).sum() * 0.5 - 1.0
  c[2] = -100.0
  x = (0.5 + 0.02 * rng.uniform(-1, 1, (bsz, 4, 4, 1))).astype(np.float32)
  logits_fn = lambda v: v.reshape(v.shape[0], -1) @ wm + c
  wd = wm[:, 1] - wm[:, 0]
  f = x.reshape(bsz, -1) @ wd + c[1] - c[0]
  assert np.all(f < 0)
  dist = {"l2": -f / np.linalg.norm(wd), "linf": -f / np.abs(wd).sum()}
  return logits_fn, jnp.asarray(x), jnp.zeros((bsz,), jnp.int32), dist


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_classifier_minimal_distance(norm):
  logits_fn, x, y, dist = _linear_model(np.random.default_rng(3))
  dist = dist[norm]
  target = jnp.ones_like(y)
  xa, norms = fab_targeted(logits_fn, x, y, target, None, norm=norm, num_steps=20)
  norms = np.asarray(norms)
  assert np.all(np.argmax(logits_fn(xa), -1) == 1)
  np.testing.assert_allclose(norms, NORM[norm](np.asarray(xa - x).reshape(len(y), -1)),
                             rtol=1e-6)
  assert np.all(norms >= dist * (1 - 1e-4))  # no misclassified point is closer
  np.testing.assert_allclose(norms, dist, rtol=1e-2)  # FAB finds (close to) the minimum
  # fab: within eps just above the distance -> that point; just below -> x unchanged.
  above = fab(logits_fn, x, y, None, norm=norm, eps=float(dist.max()) * 1.02,
              num_steps=20, num_targets=2)
  assert np.all(np.argmax(logits_fn(above), -1) != 0)
  below = fab(logits_fn, x, y, None, norm=norm, eps=float(dist.min()) * 0.98,
              num_steps=20, num_targets=2)
  np.testing.assert_array_equal(np.asarray(below), np.asarray(x))


# --------------------------------------------------------------------------- trained MLP


@pytest.mark.parametrize("norm,eps", [("linf", 16 / 255), ("l2", 1.0)])
def test_fab_lowers_accuracy_within_ball(norm, eps):
  logits_fn, x, y = trained_mlp()
  attack = jax.jit(lambda xx, yy, e: fab(logits_fn, xx, yy, None, norm=norm, eps=e,
                                         num_steps=10, num_targets=3))
  xa = attack(x, y, eps)  # eps traced
  pred = lambda v: np.asarray(jnp.argmax(logits_fn(v), -1))
  clean = np.mean(pred(x) == np.asarray(y))
  robust = np.mean(pred(xa) == np.asarray(y))
  print(f"FAB-T {norm} eps={eps:.4f} (10 steps, 3 targets): clean {clean:.3f}, "
        f"FAB-T {robust:.3f}")
  assert robust < clean - 0.2
  delta = np.asarray(xa - x).reshape(len(y), -1)
  assert np.all(NORM[norm](delta) <= eps * (1 + 1e-6))
  assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
  changed = np.any(delta != 0, axis=1)  # only misclassified points are returned
  assert np.all(pred(xa)[changed] != np.asarray(y)[changed])


def test_per_example_independence_with_restarts():
  logits_fn, x, y = trained_mlp()
  one_at_a_time = lambda v: jax.lax.map(lambda xi: logits_fn(xi[None])[0], v)
  x, y = x[:8], y[:8]
  keys = jax.random.split(jax.random.key(7), 8)
  attack = jax.jit(functools.partial(fab, one_at_a_time, norm="linf", eps=16 / 255,
                                     num_steps=5, num_targets=2, restarts=2))
  batch = np.asarray(attack(x, y, keys))
  for i in range(8):
    alone = np.asarray(attack(x[i:i + 1], y[i:i + 1], keys[i:i + 1]))
    np.testing.assert_allclose(alone[0], batch[i], atol=1e-6)
  perm = np.array([3, 7, 0, 5, 1, 6, 2, 4])
  permuted = np.asarray(attack(x[perm], y[perm], keys[perm]))
  np.testing.assert_allclose(permuted, batch[perm], atol=1e-6)
  # The random restart only adds candidates: the smallest norm never grows.
  _, n1 = fab_targeted(logits_fn, x, y, jnp.argsort(logits_fn(x), -1)[:, -2], None,
                       norm="linf", num_steps=5)
  _, n2 = fab_targeted(logits_fn, x, y, jnp.argsort(logits_fn(x), -1)[:, -2], keys,
                       norm="linf", num_steps=5, restarts=2, eps=16 / 255)
  assert np.all(np.asarray(n2) <= np.asarray(n1))


# --------------------------------------------------------------------------- input checks


def test_bad_inputs_raise():
  logits_fn, x, y = trained_mlp()
  x, y = x[:2], y[:2]
  key = jax.random.key(0)
  cases = [
      (dict(eps=-0.1), "eps"),
      (dict(eps=0.1, num_targets=10), "num_targets"),  # K = 10
      (dict(eps=0.1, num_targets=0), "num_targets"),
      (dict(eps=0.1, restarts=2, key=None), "key"),
      (dict(eps=0.1, restarts=0), "restarts"),
      (dict(eps=0.1, num_steps=2.5), "num_steps"),
      (dict(eps=0.1, norm="l1"), "norm"),
      (dict(eps=0.1, beta=1.5), "beta"),
  ]
  for kw, name in cases:
    kw = {"key": key, **kw}
    with pytest.raises(ValueError, match=name):
      fab(logits_fn, x, y, kw.pop("key"), **kw)
  with pytest.raises(ValueError, match="target"):
    fab_targeted(logits_fn, x, y, jnp.array([0, 10]), None, norm="l2")
  with pytest.raises(ValueError, match="eps"):
    fab_targeted(logits_fn, x, y, jnp.array([0, 1]), key, norm="l2", restarts=2)
  # restarts=1 needs no key; the result is a valid point.
  out = fab(logits_fn, x, y, None, norm="l2", eps=0.5, num_steps=1, num_targets=1)
  assert out.shape == x.shape and np.all(lp.l2_norm(out - x) <= 0.5 * (1 + 1e-6))
