"""Bad inputs to the data sources, the batch pipeline and the metrics, as a new user would
give them (issue 27): a clear error naming the argument, the value and what is expected,
or a warning where the input is legal but suspicious (probabilities given as logits).

One case per parameter: the exception type and a fragment of its message, or the
warning's fragment. Where a case was silent or a confusing crash before issue 27, its
comment says what happened.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import data, metrics, parallel
from adacorr.core import checks
from adacorr.metrics import noise_robustness

IMAGES = np.zeros((4, 8, 8, 3), np.uint8)
LABELS = np.array([0, 1, 0, 1])
SRC = data.ArraySource(IMAGES, LABELS, 2)
MESH = parallel.make_mesh()
LOGITS = np.array([[2.0, -1.0], [0.1, 0.3]])
PROBS = np.array([[0.2, 0.8], [0.6, 0.4]])
LAB = np.array([0, 1])
X = jnp.full((2, 4, 4, 3), 0.5, jnp.float32)
KEY = jax.random.PRNGKey(0)


def lin(x):
  return jnp.stack([jnp.mean(x, axis=(1, 2, 3)), 1.0 - jnp.mean(x, axis=(1, 2, 3))], -1)


def source(images=IMAGES, labels=LABELS, num_classes=2):
  return data.ArraySource(images, labels, num_classes)


E, T, P = ValueError, TypeError, pytest.param

ERRORS = [
    # --- the cases
    # before: silent, num_classes=2.5 became 2
    P(lambda: source(num_classes=2.5), E, r"^num_classes=2.5 must be a positive int",
      id="source-num-classes-float"),
    # before: silent, an NCHW array was accepted with image_shape (1, 16, 16)
    P(lambda: source(np.zeros((4, 1, 16, 16), np.uint8)), E,
      r"^images of shape \(4, 1, 16, 16\) look like NCHW.*channels must be last.*"
      r"np.transpose\(images, \(0, 2, 3, 1\)\)", id="source-nchw-grey"),
    P(lambda: source(np.zeros((4, 3, 32, 32), np.uint8)), E, r"look like NCHW",
      id="source-nchw-rgb"),
    # --- more bad inputs
    # before: silent, RGBA accepted (the models and corruptions take 1 or 3 channels)
    P(lambda: source(np.zeros((4, 8, 8, 4), np.uint8)), E,
      r"^images must be \(N, H, W, C\) with channels last and C in \(1, 3\)",
      id="source-four-channels"),
    # before: the same error without the fix
    P(lambda: source(np.zeros((4, 8, 8), np.uint8)), E,
      r"^images must be uint8 of shape \(N, H, W, C\).*images\[\.\.\., None\]",
      id="source-grey-without-channel-axis"),
    P(lambda: source(np.zeros((4, 8, 8, 3), np.float32)), E,
      r"^images must be uint8 .*np.round\(images \* 255\)", id="source-float-images"),
    P(lambda: source(labels=np.array([0.0, 1.0, 0.0, 1.0])), E, r"^labels must be integers",
      id="source-float-labels"),
    P(lambda: source(labels=np.array([0, 1, 2, 1])), E, r"^labels must lie in \[0, 2\)",
      id="source-label-out-of-range"),
    P(lambda: source(labels=LABELS[:, None]), E, r"^labels must have shape \(4,\)",
      id="source-labels-column"),
    P(lambda: source(labels=LABELS[:3]), E, r"^labels must have shape \(4,\) to match images",
      id="source-labels-batch-mismatch"),
    # before: a confusing "labels must lie in [0, True)"
    P(lambda: source(num_classes=True), E, r"^num_classes=True must be a positive int",
      id="source-num-classes-bool"),
    # before: TypeError "'<=' not supported between instances of 'str' and 'int'"
    P(lambda: source(num_classes="2"), E, r"^num_classes='2' must be a positive int",
      id="source-num-classes-text"),
    P(lambda: source(num_classes=0), E, r"^num_classes=0 must be a positive int",
      id="source-num-classes-0"),
    P(lambda: SRC.get(np.array([0.0, 1.0])), E, r"^indices must be a 1-D integer array",
      id="source-float-indices"),
    P(lambda: SRC.get(1), E, r"^indices must be a 1-D integer array, got the scalar 1",
      id="source-scalar-index"),
    P(lambda: SRC.get(np.array([4])), E, r"^indices must lie in \[0, 4\)",
      id="source-index-out-of-range"),
    P(lambda: data.first_n(SRC, 0), E, r"^n must be a positive int", id="first-n-0"),
    # before: AttributeError "'tuple' object has no attribute 'num_examples'"
    P(lambda: next(data.train_batches((IMAGES, LABELS), global_batch_size=2, seed=0,
                                      mesh=MESH)), T,
      r"^source must be a Source .* got tuple.*ArraySource\(images, labels, num_classes\)",
      id="train-batches-arrays-not-a-source"),
    # before: AttributeError "'numpy.ndarray' object has no attribute 'num_examples'"
    P(lambda: data.steps_per_epoch(IMAGES, 2), T, r"^source must be a Source .* got ndarray",
      id="steps-per-epoch-array"),
    # before: AttributeError "'NoneType' object has no attribute 'devices'"
    P(lambda: next(data.eval_batches(SRC, global_batch_size=2, mesh=None)), T,
      r"^mesh must be a jax.sharding.Mesh", id="eval-batches-no-mesh"),
    P(lambda: next(data.train_batches(SRC, global_batch_size=0, seed=0, mesh=MESH)), E,
      r"^global_batch_size must be a positive int, got 0", id="train-batches-batch-size-0"),
    P(lambda: next(data.train_batches(SRC, global_batch_size=2.0, seed=0, mesh=MESH)), E,
      r"^global_batch_size must be a positive int, got 2.0", id="train-batches-batch-float"),
    P(lambda: next(data.train_batches(SRC, global_batch_size=8, seed=0, mesh=MESH)), E,
      r"^global_batch_size=8 is larger than the dataset \(4 examples\)",
      id="train-batches-batch-larger-than-data"),
    P(lambda: next(data.train_batches(SRC, global_batch_size=2, seed=-1, mesh=MESH)), E,
      r"^seed must be a non-negative int", id="train-batches-negative-seed"),
    P(lambda: next(data.eval_batches(SRC, global_batch_size=2, mesh=MESH, prefetch=-1)), E,
      r"^prefetch must be a non-negative int", id="eval-batches-negative-prefetch"),
    P(lambda: data.batch_indices(10, 2, step=-1, seed=0), E, r"^step must be a non-negative",
      id="batch-indices-negative-step"),
    # --- metrics
    P(lambda: metrics.ece(LOGITS, LAB), E, r"^probs must be non-negative with rows summing "
      r"to 1.*pass softmax\(logits\), not logits", id="ece-given-logits"),
    P(lambda: metrics.ece(PROBS, np.array([0.0, 1.0])), E,
      r"^labels must be integer class labels", id="ece-float-labels"),
    P(lambda: metrics.ece(PROBS, np.array([0, 2])), E, r"^labels must lie in \[0, 2\)",
      id="ece-label-out-of-range"),
    P(lambda: metrics.ece(PROBS, np.array([0, 1, 1])), E, r"^labels must have shape \(B,\) = "
      r"\(2,\)", id="ece-label-batch-mismatch"),
    P(lambda: metrics.ece(PROBS, LAB, num_bins=0), E, r"^num_bins must be an int >= 1",
      id="ece-no-bins"),
    P(lambda: metrics.ece(PROBS[0], LAB), E, r"^probs must have shape \(N, K\)",
      id="ece-one-row-flat"),
    P(lambda: metrics.ece_after_temperature(LOGITS, LAB, 0.0), E,
      r"^temperature must be a finite number > 0, got 0.0", id="temperature-0"),
    # before: silent, True became T = 1
    P(lambda: metrics.ece_after_temperature(LOGITS, LAB, True), E,
      r"^temperature must be a finite number > 0, got True", id="temperature-bool"),
    # before: silent, '2' became 2.0
    P(lambda: metrics.softmax(LOGITS, "2"), E, r"^temperature must be a finite number > 0, "
      r"got '2'", id="temperature-text"),
    P(lambda: metrics.fit_temperature(LOGITS, LAB, bounds=(2.0, 1.0)), E,
      r"^bounds must be \(T_min, T_max\)", id="fit-temperature-bounds-reversed"),
    P(lambda: metrics.accuracy(np.array([[np.nan, 1.0], [0.0, 1.0]]), LAB), E,
      r"^logits_or_probs must be finite", id="accuracy-nan-scores"),
    P(lambda: metrics.error_table({("fog", s): 90.0 for s in range(1, 6)}), E,
      r"must be in \[0, 1\] \(a fraction, not a percent\)", id="error-table-percent"),
    P(lambda: metrics.error_table({("fogg", s): 0.9 for s in range(1, 6)}), E,
      r"^accuracies has an unknown corruption 'fogg'", id="error-table-unknown-corruption"),
    # before: silent, a negative "norm" lowered the median
    P(lambda: metrics.eps_star([-1.0, 2.0]), E, r"^norms must be >= 0", id="eps-star-negative"),
    P(lambda: metrics.eps_star([]), E, r"^norms must not be empty", id="eps-star-empty"),
    # before: silent; an infinite max_norm made NaN norms
    P(lambda: noise_robustness.minimal_noise_norm(lin, X, jnp.array([0, 1]), KEY,
                                                  max_norm=float("inf")), E,
      r"^max_norm=inf must be finite", id="minimal-noise-norm-max-inf"),
    # before: the lambda's TypeError naming no argument
    P(lambda: noise_robustness.minimal_noise_norm(lambda v, x: lin(x), X, jnp.array([0, 1]),
                                                  None, max_norm=1.0), E,
      r"^logits_fn failed on x of shape \(2, 4, 4, 3\)", id="minimal-noise-norm-bad-model"),
]


@pytest.mark.parametrize("make,exc,match", ERRORS)
def test_bad_input_is_a_clear_error(make, exc, match):
  with pytest.raises(exc, match=match):
    make()


PROBS_WARNING = r"^logits look like probabilities, not logits"

WARNINGS = [
    # before: silent; softmax of probabilities is a flattened, wrong answer
    P(lambda: metrics.softmax(PROBS), id="softmax-given-probabilities"),
    P(lambda: metrics.nll(PROBS, LAB), id="nll-given-probabilities"),
    P(lambda: metrics.fit_temperature(PROBS, LAB), id="fit-temperature-given-probabilities"),
    P(lambda: metrics.ece_after_temperature(PROBS, LAB, 1.5),
      id="ece-after-temperature-given-probabilities"),
    P(lambda: checks.warn_if_probabilities(jnp.asarray(PROBS, jnp.float32), "logits"),
      id="core-helper-on-a-jax-array"),
]


@pytest.mark.parametrize("make", WARNINGS)
def test_probabilities_given_as_logits_warn(make):
  with pytest.warns(UserWarning, match=PROBS_WARNING):
    make()


def test_logits_do_not_warn():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    metrics.softmax(LOGITS)
    metrics.fit_temperature(LOGITS, LAB)
    # rows in [0, 1] not summing to 1, and rows summing to 1 outside [0, 1]: logits
    assert not checks.warn_if_probabilities(np.array([[0.2, 0.3], [0.9, 0.05]]))
    assert not checks.warn_if_probabilities(np.array([[2.0, -1.0], [0.5, 0.5 + 1e-2]]))
    assert not checks.warn_if_probabilities(np.zeros((0, 3)))  # empty
    assert not checks.warn_if_probabilities(np.ones((4, 1)))   # one class: no evidence


def test_the_source_checks_accept_what_they_should():
  """Grey and RGB, channels last (an H of 1 or 3 with C <= 4 is not NCHW), numpy ints."""
  assert source(np.zeros((2, 3, 3, 3), np.uint8), LABELS[:2], np.int64(2)).image_shape == (3, 3, 3)
  assert source(np.zeros((2, 1, 16, 1), np.uint8), LABELS[:2]).image_shape == (1, 16, 1)
  assert source(np.zeros((2, 16, 16, 1), np.uint8), LABELS[:2]).num_classes == 2
