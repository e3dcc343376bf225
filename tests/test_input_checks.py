"""Bad input gets a clear error naming the argument, never a silent wrong answer (issue 13, item 7).

Each case below gave a silent wrong answer or a confusing crash before the shared checks of
`adacorr.core.checks`; the tests pin the error type and that the message names the argument.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import attacks, augment, corruptions
from adacorr.core import checks
from adacorr.metrics import noise_robustness

X = jnp.full((2, 8, 8, 3), 0.5, jnp.float32)
Y = jnp.array([0, 1])
KEY = jax.random.PRNGKey(0)


def _logits(x):
  return jnp.mean(x, axis=(1, 2)) * jnp.arange(1.0, 4.0)  # (B, 3)


def _pgd(x=X, y=Y, key=KEY, logits_fn=_logits, **kw):
  kw = {"norm": "linf", "eps": 0.1, "step_size": 0.05, "num_steps": 2, **kw}
  return attacks.pgd(logits_fn, x, y, key, **kw)


def test_pgd_rejects_a_nan_eps():
  with pytest.raises(ValueError, match=r"eps=nan"):
    _pgd(eps=float("nan"))


@pytest.mark.parametrize("bad", [-1, 3])
def test_pgd_rejects_labels_outside_the_classes(bad):
  with pytest.raises(ValueError, match=r"y must lie in \[0, 3\)"):
    _pgd(y=jnp.array([0, bad]))


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8])
def test_pgd_rejects_integer_images_and_says_how_to_convert(dtype):
  with pytest.raises(ValueError, match=r"x must be floating point.*convert to float32 in \[0, 1\]"):
    _pgd(x=jnp.ones((2, 8, 8, 3), dtype))


def test_pgd_key_none_needs_random_init_false():
  with pytest.raises(ValueError, match=r"key is required"):
    _pgd(key=None, random_init=True)
  # Without a random start no key is needed, and the result is the keyed one's.
  np.testing.assert_array_equal(_pgd(key=None, random_init=False),
                                _pgd(key=KEY, random_init=False))


def test_apgd_needs_a_key():
  with pytest.raises(ValueError, match=r"key is required"):
    attacks.apgd(_logits, X, Y, None, norm="linf", eps=0.1, num_steps=2)


def test_pgd_rejects_rank_one_logits():
  with pytest.raises(ValueError, match=r"logits_fn must return logits of shape \(B, K\)"):
    _pgd(logits_fn=lambda x: jnp.mean(x, axis=(1, 2, 3)))


def test_pgd_warns_on_an_eps_that_looks_like_0_255():
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    _pgd(eps=8.0)
  assert any("eps=8.0" in str(w.message) for w in caught), [str(w.message) for w in caught]


def test_corrupt_rejects_nan_images():
  with pytest.raises(ValueError, match=r"images contains NaN"):
    corruptions.corrupt(X.at[0, 0, 0, 0].set(jnp.nan), "fog", 1, KEY)


def test_corrupt_rejects_an_empty_batch():
  with pytest.raises(ValueError, match=r"images is an empty batch"):
    corruptions.corrupt(jnp.zeros((0, 8, 8, 3)), "fog", 1, KEY)


def test_clip_aware_rescale_rejects_mismatched_shapes_and_out_of_range_images():
  with pytest.raises(ValueError, match=r"x and delta must have the same shape"):
    augment.clip_aware_rescale(X, jnp.ones((2, 4, 4, 3)), 1.0)
  with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
    augment.clip_aware_rescale(X + 1.0, jnp.ones_like(X), 1.0)


def test_minimal_noise_norm_rejects_0_255_images():
  with pytest.raises(ValueError, match=r"x must lie in \[0, 1\].*255"):
    noise_robustness.minimal_noise_norm(_logits, X * 255, Y, KEY, max_norm=10.0)


@pytest.mark.parametrize("value", [float("nan"), -0.5])
def test_shared_checker_names_the_argument(value):
  with pytest.raises(ValueError, match=r"^my_radius="):
    checks.check_nonnegative(value, "my_radius")
