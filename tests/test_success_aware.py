"""Success-aware iterates (issue 15, item 1): PGD and APGD return a misclassified point
whenever any iterate of any restart was misclassified, not the highest-loss point."""

import jax
import jax.numpy as jnp
import numpy as np

from adacorr import attacks
from adacorr.attacks import ascent, lp

# Log-probabilities along a path s in [0, 1] (s = the single pixel's value): at s = 0.3
# the label 0 has p_y = 0.42 against 0.49 (misclassified, CE 0.80); at s = 1 it has
# p_y = 0.30 against 0.28 (correct, CE 1.20). CE rises from s ~ 0.2 on, and the
# prediction flips back to the label at s ~ 0.75: the highest-loss point is the correct one.
A = np.log([0.45, 0.53, 0.01, 0.01])
B = np.log([0.30, 0.28, 0.28, 0.14])


def logits_fn(x):
  s = x.reshape(x.shape[0], -1)[:, :1]
  return (1 - s) * jnp.asarray(A) + s * jnp.asarray(B)


def _predictions(x):
  return np.asarray(jnp.argmax(logits_fn(x), -1))


def test_greater_is_lexicographic():
  a = (jnp.array([1.0, 0.0, 1.0, 0.0]), jnp.array([0.1, 5.0, 0.3, 2.0]))
  b = (jnp.array([0.0, 1.0, 1.0, 0.0]), jnp.array([9.0, 0.1, 0.2, 2.0]))
  np.testing.assert_array_equal(ascent.greater(a, b), [True, False, True, False])
  it, best = ascent.keep_better(a, b, jnp.arange(4.0), -jnp.arange(4.0))
  np.testing.assert_array_equal(it, [0.0, -1.0, 2.0, -3.0])  # ties keep the old one
  np.testing.assert_array_equal(best[0], [1.0, 1.0, 1.0, 0.0])


def test_success_rank_by_hand():
  logits = jnp.log(jnp.array([[0.30, 0.28, 0.28, 0.14], [0.45, 0.53, 0.01, 0.01]]))
  y = jnp.array([0, 0])
  obj = jnp.array([1.2, 0.8])
  success, score = lp.success_rank(logits, y, obj)
  np.testing.assert_array_equal(success, [0.0, 1.0])
  np.testing.assert_allclose(score, [1.2, np.log(0.53 / 0.45)], rtol=1e-6)
  success, _ = lp.success_rank(logits, jnp.array([1, 1]), obj, targeted=True)
  np.testing.assert_array_equal(success, [0.0, 1.0])  # row 1 is classified as 1


def test_pgd_returns_the_misclassified_iterate_not_the_highest_loss_one():
  x = jnp.full((1, 1, 1, 1), 0.3)
  y = jnp.array([0])
  kw = dict(norm="linf", eps=0.7, step_size=0.35, num_steps=2, random_init=False)
  old = attacks.pgd(logits_fn, x, y, None, success_aware=False, **kw)
  new = attacks.pgd(logits_fn, x, y, None, **kw)
  # Iterates 0.3 (wrong, CE 0.80), 0.65 (wrong), 1.0 (right, CE 1.20).
  np.testing.assert_allclose(old, 1.0)
  assert _predictions(old)[0] == 0  # the old rule counts this example as robust
  assert _predictions(new)[0] != 0  # the new one finds the misclassified iterate
  np.testing.assert_allclose(new, 0.3)  # the largest margin among them
  assert float(jnp.max(jnp.abs(new - x))) <= 0.7 + 1e-6


def test_apgd_and_restarts_keep_misclassified_points():
  n = 64
  x = jnp.full((n, 1, 1, 1), 0.3)
  y = jnp.zeros((n,), jnp.int32)
  key = jax.random.PRNGKey(0)
  kw = dict(norm="linf", eps=0.7, num_steps=4)
  old = _predictions(attacks.apgd(logits_fn, x, y, key, success_aware=False, **kw)) == 0
  new = _predictions(attacks.apgd(logits_fn, x, y, key, **kw)) == 0
  assert not np.any(new & ~old)  # never more robust than before
  assert new.mean() < old.mean(), (new.mean(), old.mean())
  # PGD with random restarts: a misclassified restart wins over a correct one.
  pgd = dict(norm="linf", eps=0.7, step_size=0.35, num_steps=2, restarts=3)
  old = _predictions(attacks.pgd(logits_fn, x, y, key, success_aware=False, **pgd)) == 0
  new = _predictions(attacks.pgd(logits_fn, x, y, key, **pgd)) == 0
  assert not np.any(new & ~old) and new.mean() < old.mean()


def _linear_logits(x):
  v = x.reshape(x.shape[0], -1)
  return jnp.stack([v.mean(1), 1.0 - v.mean(1), 0.2 * jnp.ones(x.shape[0])], -1)


def test_robust_accuracy_checks_the_threat_model_and_names_the_attack():
  x = jnp.full((4, 2, 2, 1), 0.8)
  y = jnp.zeros((4,), jnp.int32)
  key = jax.random.PRNGKey(0)
  inside = lambda a, b, k: jnp.clip(a - 8 / 255, 0, 1)  # noqa: E731
  too_far = lambda a, b, k: jnp.clip(a - 9 / 255, 0, 1)  # noqa: E731
  zeros = lambda a, b, k: jnp.zeros_like(a)  # noqa: E731
  r = attacks.robust_accuracy(_linear_logits, x, y, key, {"in": inside},
                              threat_model=("linf", 8 / 255))
  assert r["robust_accuracy"] == 1.0
  with np.testing.assert_raises_regex(ValueError, "'far'.*outside the threat model"):
    attacks.robust_accuracy(_linear_logits, x, y, key, {"in": inside, "far": too_far},
                            threat_model=("linf", 8 / 255))
  with np.testing.assert_raises_regex(ValueError, "'zeros'"):  # zeros: far outside l2 0.5
    attacks.robust_accuracy(_linear_logits, x, y, key, {"zeros": zeros},
                            threat_model=("l2", 0.5))
  with np.testing.assert_raises_regex(ValueError, r"outside \[0, 1\]"):
    attacks.robust_accuracy(_linear_logits, x, y, key, {"up": lambda a, b, k: a + 0.3},
                            threat_model=("linf", 0.5))


def test_robust_accuracy_only_robust_attacks_the_survivors_with_the_same_worst_case():
  n = 24
  x = jax.random.uniform(jax.random.PRNGKey(1), (n, 2, 2, 1), minval=0.45, maxval=0.75)
  y = jnp.zeros((n,), jnp.int32)
  seen = []

  def shift(amount):
    def attack(a, b, k):
      seen.append(a.shape[0])
      return jnp.clip(a - amount, 0, 1)
    return attack

  suite = {"small": shift(0.05), "large": shift(0.1)}
  full = attacks.robust_accuracy(_linear_logits, x, y, jax.random.PRNGKey(0), suite)
  seen.clear()
  lean = attacks.robust_accuracy(_linear_logits, x, y, jax.random.PRNGKey(0), suite,
                                 only_robust=True)
  np.testing.assert_array_equal(full["robust"], lean["robust"])
  assert lean["per_attack"]["large"] == lean["robust_accuracy"]  # cumulative
  clean = int(np.sum(np.asarray(jnp.argmax(_linear_logits(x), -1)) == 0))
  after_small = int(round(lean["per_attack"]["small"] * n))
  # The first attack sees the clean-correct examples, the second the survivors, each padded
  # to a power of two, at least MIN_PADDED (32) and at most the batch (24 here).
  assert 0 < after_small < clean <= n
  assert seen == [n, n]
  seen.clear()
  big = jnp.concatenate([x] * 4)  # 96 examples
  lean = attacks.robust_accuracy(_linear_logits, big, jnp.zeros((4 * n,), jnp.int32),
                                 jax.random.PRNGKey(0), suite, only_robust=True)
  pad = lambda m: min(4 * n, max(32, 1 << int(np.ceil(np.log2(m)))))
  assert seen == [pad(4 * clean), pad(4 * after_small)]
  assert lean["num_attacked"] == {"small": 4 * clean, "large": 4 * after_small}
