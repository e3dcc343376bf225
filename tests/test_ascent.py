"""The shared ascent loop (`adacorr.attacks.ascent`): hand-computed cases, pytrees, best
tracking, and PGD / FGSM / AT / AdA as configurations of it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adacorr import attacks
from adacorr.attacks import ascent
from adacorr.methods import adversarial_training as at


def _quadratic(c):
  """Per-example objective -(it - c)^2 summed over each example (maximum at it = c)."""
  def loss(it):
    per = -jnp.sum((it - c) ** 2, axis=tuple(range(1, it.ndim)))
    return jnp.sum(per), per
  return loss


def test_signed_steps_walk_to_the_maximum_by_hand():
  # 1-D, step 0.25 from 0 towards c = 0.6: 0.25, 0.5, 0.75 (then oscillates), box [0, 0.7].
  c = jnp.array([[0.6]])
  out = [ascent.ascend(_quadratic(c), jnp.zeros((1, 1)), num_steps=n,
                       update=ascent.signed_step(0.25),
                       project=lambda it: jnp.clip(it, 0.0, 0.7))[0, 0] for n in range(4)]
  np.testing.assert_allclose(out, [0.0, 0.25, 0.5, 0.7], atol=1e-7)


@pytest.mark.parametrize("unroll", [False, True])
def test_loop_and_unrolled_give_the_same_iterate(unroll):
  c = jax.random.uniform(jax.random.PRNGKey(0), (3, 4))
  kw = dict(num_steps=5, update=ascent.signed_step(0.1), project=lambda it: it)
  ref = ascent.ascend(_quadratic(c), jnp.zeros((3, 4)), **kw)
  np.testing.assert_array_equal(ascent.ascend(_quadratic(c), jnp.zeros((3, 4)), unroll=unroll,
                                              **kw), ref)


def test_l2_direction_has_unit_norm_per_example_and_keeps_zero():
  g = jnp.stack([jnp.full((2, 2), 3.0), jnp.zeros((2, 2))])
  d = ascent.l2_direction(g)
  np.testing.assert_allclose(jnp.sqrt(jnp.sum(d[0] ** 2)), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(d[1], 0.0)


def test_track_best_returns_the_best_iterate_not_the_last():
  # Signed steps of 1 from 0 around the maximum at c = 1.4 oscillate: iterates 0, 1, 2, 1, 2
  # with objectives -1.96, -0.16, -0.36, -0.16, -0.36. Last: 2; best: 1 (-0.16).
  c = jnp.array([[1.4]])
  kw = dict(num_steps=4, update=ascent.signed_step(1.0), project=lambda it: it)
  best, obj = ascent.ascend(_quadratic(c), jnp.zeros((1, 1)), track_best=True, **kw)
  np.testing.assert_allclose(best, [[1.0]])
  np.testing.assert_allclose(obj, [-0.16], rtol=1e-5)
  np.testing.assert_allclose(ascent.ascend(_quadratic(c), jnp.zeros((1, 1)), **kw), [[2.0]])


def test_keep_better_is_per_example_and_keeps_ties():
  it, best = {"a": jnp.ones((3, 2))}, {"a": jnp.zeros((3, 2))}
  new, obj = ascent.keep_better(jnp.array([1.0, 0.0, -1.0]), jnp.zeros(3), it, best)
  np.testing.assert_array_equal(new["a"][:, 0], [1.0, 0.0, 0.0])
  np.testing.assert_array_equal(obj, [1.0, 0.0, 0.0])


def test_pytree_iterates_are_projected_leaf_by_leaf():
  c = {"w": jnp.full((2, 3), 5.0), "b": jnp.full((2,), -5.0)}

  def loss(it):
    per = -jnp.sum((it["w"] - c["w"]) ** 2, 1) - (it["b"] - c["b"]) ** 2
    return jnp.sum(per), per

  out = ascent.ascend(loss, jax.tree.map(jnp.zeros_like, c), num_steps=10,
                      update=ascent.signed_step(0.5),
                      project=lambda it: jax.tree.map(lambda v: jnp.clip(v, -1.0, 1.0), it))
  np.testing.assert_array_equal(out["w"], 1.0)
  np.testing.assert_array_equal(out["b"], -1.0)


def _linear_model(key):
  w = jax.random.normal(key, (4 * 4 * 3, 5))
  return lambda x: x.reshape(x.shape[0], -1) @ w


def test_pgd_equals_a_hand_written_pgd_loop():
  logits_fn = _linear_model(jax.random.PRNGKey(1))
  x = jax.random.uniform(jax.random.PRNGKey(2), (4, 4, 4, 3))
  y = jnp.array([0, 1, 2, 3])
  eps, step, n = 0.05, 0.02, 4
  xa = x
  for _ in range(n):  # Madry et al.: x <- clip(x + a sign(grad CE), ball, box)
    g = jax.grad(lambda v: jnp.sum(
        optax.softmax_cross_entropy_with_integer_labels(logits_fn(v), y)))(xa)
    xa = jnp.clip(x + jnp.clip(xa + step * jnp.sign(g) - x, -eps, eps), 0.0, 1.0)
  out = attacks.pgd(logits_fn, x, y, None, norm="linf", eps=eps, step_size=step, num_steps=n,
                    random_init=False, track_best=False)
  np.testing.assert_allclose(out, xa, atol=1e-6)


def test_fgsm_is_one_signed_step_clipped_to_the_box():
  logits_fn = _linear_model(jax.random.PRNGKey(3))
  x = jax.random.uniform(jax.random.PRNGKey(4), (2, 4, 4, 3))
  y = jnp.array([1, 4])
  g = jax.grad(lambda v: jnp.sum(
      optax.softmax_cross_entropy_with_integer_labels(logits_fn(v), y)))(x)
  np.testing.assert_allclose(attacks.fgsm(logits_fn, x, y, eps=0.1),
                             jnp.clip(x + 0.1 * jnp.sign(g), 0.0, 1.0), atol=1e-7)


@pytest.mark.parametrize("norm,eps", [("linf", 0.03), ("l2", 0.2)])
def test_training_attack_stays_in_its_ball_and_raises_the_loss(norm, eps):
  logits_fn = _linear_model(jax.random.PRNGKey(5))
  x = jax.random.uniform(jax.random.PRNGKey(6), (6, 4, 4, 3))
  y = jnp.arange(6) % 5
  x_adv = at.input_attack(logits_fn, x, y, jax.random.PRNGKey(7), norm=norm, eps=eps,
                          step_size=eps / 2, num_steps=3, random_init=True)
  d = (x_adv - x).reshape(6, -1)
  size = jnp.max(jnp.abs(d), 1) if norm == "linf" else jnp.sqrt(jnp.sum(d ** 2, 1))
  assert float(jnp.max(size)) <= eps * (1 + 1e-5)
  assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
  ce = lambda v: float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      logits_fn(v), y)))
  assert ce(x_adv) > ce(x)
