"""Tests of adacorr.metrics: accuracy, mCE / relative mCE, ECE and temperature scaling."""

import numpy as np
import pytest

from adacorr import metrics
from adacorr.corruptions import BENCHMARK_CORRUPTIONS

# ---------------------------------------------------------------- accuracy


def test_accuracy_logits_and_probs_agree():
  logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
  labels = np.array([0, 1, 0, 2])
  assert metrics.accuracy(logits, labels) == 0.5
  assert metrics.accuracy(metrics.softmax(logits), labels) == 0.5


@pytest.mark.parametrize("logits, labels, match", [
    (np.zeros((3, 2)), np.zeros(4, int), "labels"),
    (np.zeros(3), np.zeros(3, int), "logits_or_probs"),
    (np.zeros((3, 2)), np.zeros(3), "labels"),  # float labels
    (np.zeros((3, 2)), np.array([0, 1, 2]), "labels"),  # out of range
    (np.full((2, 2), np.nan), np.zeros(2, int), "logits_or_probs"),
])
def test_accuracy_bad_inputs(logits, labels, match):
  with pytest.raises(ValueError, match=match):
    metrics.accuracy(logits, labels)


# ---------------------------------------------------------------- mCE


def _table(fn):
  return {c: [fn(i, s) for s in range(5)] for i, c in enumerate(BENCHMARK_CORRUPTIONS)}


def test_error_table_formats():
  by_pair = {(c, s): 0.9 - 0.1 * s for c in BENCHMARK_CORRUPTIONS for s in range(1, 6)}
  by_name = {c: [0.9 - 0.1 * s for s in range(1, 6)] for c in BENCHMARK_CORRUPTIONS}
  t1, t2 = metrics.error_table(by_pair), metrics.error_table(by_name)
  assert set(t1) == set(BENCHMARK_CORRUPTIONS)
  for c in BENCHMARK_CORRUPTIONS:
    np.testing.assert_allclose(t1[c], [0.2, 0.3, 0.4, 0.5, 0.6])
    np.testing.assert_allclose(t2[c], t1[c])
  del by_pair[("fog", 3)]
  with pytest.raises(ValueError, match=r"accuracies.*\[3\].*fog"):
    metrics.error_table(by_pair)
  with pytest.raises(ValueError, match="unknown corruption 'blur'"):
    metrics.error_table({"blur": [0.5] * 5})


def test_mce_cifar_is_100_minus_mean_accuracy():
  rng = np.random.default_rng(0)
  accs = {c: rng.uniform(0.3, 0.95, 5) for c in BENCHMARK_CORRUPTIONS}
  errors = metrics.error_table(accs)
  errors["speckle_noise"] = np.ones(5)  # extra corruptions are ignored
  mean_acc = np.mean([accs[c] for c in BENCHMARK_CORRUPTIONS])
  assert metrics.mce(errors) == pytest.approx(100 * (1 - mean_acc))
  ce = metrics.corruption_errors(errors)
  assert ce["fog"] == pytest.approx(100 * np.mean(1 - accs["fog"]))


def test_mce_imagenet():
  # Errors equal to AlexNet's (any per-severity split with that mean) -> 100.
  same = _table(lambda i, s: metrics.ALEXNET_ERR[BENCHMARK_CORRUPTIONS[i]] + 0.02 * (s - 2))
  assert metrics.mce(same, style="imagenet") == pytest.approx(100.0)
  # Half of AlexNet's error everywhere -> 50.
  half = _table(lambda i, s: metrics.ALEXNET_ERR[BENCHMARK_CORRUPTIONS[i]] / 2)
  assert metrics.mce(half, style="imagenet") == pytest.approx(50.0)
  # Hand case with a custom reference: CE_c = mean_s E / ref_c = 0.3 / 0.6.
  flat = _table(lambda i, s: 0.3)
  ref = {c: 0.6 for c in BENCHMARK_CORRUPTIONS}
  assert metrics.mce(flat, style="imagenet", alexnet_errors=ref) == pytest.approx(50.0)
  ref_per_sev = {c: [0.4, 0.5, 0.6, 0.7, 0.8] for c in BENCHMARK_CORRUPTIONS}
  assert metrics.mce(flat, style="imagenet", alexnet_errors=ref_per_sev) == pytest.approx(50.0)
  assert len(metrics.ALEXNET_ERR) == 15
  assert metrics.ALEXNET_ERR["gaussian_noise"] == 0.886428
  assert metrics.ALEXNET_ERR["jpeg_compression"] == 0.606500


def test_relative_mce_hand_case():
  # E_{c,s} = 0.3 for all, E_clean = 0.1; reference 0.6 and clean 0.2:
  # sum_s (0.3 - 0.1) / sum_s (0.6 - 0.2) = 0.5 -> 50.
  flat = _table(lambda i, s: 0.3)
  ref = {c: [0.6] * 5 for c in BENCHMARK_CORRUPTIONS}
  assert metrics.relative_mce(flat, 0.1, ref, 0.2) == pytest.approx(50.0)
  # Per-severity values: sum_s (E_s - 0.1) = (0.1+0.2+0.3+0.4+0.5) - 0.5 = 1.0;
  # sum_s (A_s - 0.2) = (0.5+0.6+0.7+0.8+0.9) - 1.0 = 2.5 -> 40.
  rising = _table(lambda i, s: 0.1 * (s + 1))
  ref_rising = {c: [0.5, 0.6, 0.7, 0.8, 0.9] for c in BENCHMARK_CORRUPTIONS}
  assert metrics.relative_mce(rising, 0.1, ref_rising, 0.2) == pytest.approx(40.0)
  # Defaults: the published AlexNet numbers; AlexNet itself scores 100.
  alex = {c: [e] * 5 for c, e in metrics.ALEXNET_ERR.items()}
  assert metrics.relative_mce(alex, metrics.ALEXNET_CLEAN_ERR) == pytest.approx(100.0)
  assert metrics.ALEXNET_CLEAN_ERR == 0.4348


def test_mce_bad_inputs():
  errors = _table(lambda i, s: 0.2)
  missing = {c: e for c, e in errors.items() if c not in ("fog", "snow")}
  with pytest.raises(ValueError, match="errors is missing benchmark corruptions: snow, fog"):
    metrics.mce(missing)
  with pytest.raises(ValueError, match="alexnet_errors is missing.*frost"):
    metrics.mce(errors, style="imagenet",
                alexnet_errors={c: 0.5 for c in BENCHMARK_CORRUPTIONS if c != "frost"})
  with pytest.raises(ValueError, match="style"):
    metrics.mce(errors, style="imagenet-c")
  with pytest.raises(ValueError, match=r"errors\['fog'\].*5 values"):
    metrics.mce({**errors, "fog": [0.2] * 4})
  with pytest.raises(ValueError, match=r"errors\['fog'\].*\[0, 1\]"):
    metrics.mce({**errors, "fog": [20.0] * 5})  # percent by mistake
  with pytest.raises(ValueError, match="clean_error"):
    metrics.relative_mce(errors, 1.5)
  with pytest.raises(ValueError, match="alexnet_errors.*must exceed alexnet_clean_error"):
    metrics.relative_mce(errors, 0.1, {c: 0.3 for c in BENCHMARK_CORRUPTIONS}, 0.4)
  with pytest.raises(ValueError, match="missing benchmark corruptions"):
    metrics.relative_mce(missing, 0.1)


# ---------------------------------------------------------------- calibration


def test_ece_two_bins_by_hand():
  # Bin (0, .5]: confidences .4 (right), .45 (wrong) -> |0.5 - 0.425| = .075.
  # Bin (.5, 1]: confidences .6, .8, 1.0 (right), .9 (wrong) -> |0.75 - 0.825| = .075.
  conf = np.array([0.4, 0.45, 0.6, 0.8, 0.9, 1.0])
  probs = np.stack([conf, 1 - conf], axis=1)
  probs = np.concatenate([probs, np.zeros((6, 2))], axis=1)  # 4 classes; max is column 0
  probs[:2] = [[0.4, 0.2, 0.2, 0.2], [0.45, 0.2, 0.2, 0.15]]
  labels = np.array([0, 3, 0, 0, 1, 0])
  expected = 2 / 6 * abs(0.5 - 0.425) + 4 / 6 * abs(0.75 - 0.825)
  assert metrics.ece(probs, labels, num_bins=2) == pytest.approx(expected)
  bins = metrics.reliability_bins(probs, labels, num_bins=2)
  assert set(bins) == {"edges", "confidence", "accuracy", "count"}  # a plain dict
  np.testing.assert_allclose(bins["edges"], [0, 0.5, 1])
  np.testing.assert_array_equal(bins["count"], [2, 4])
  np.testing.assert_allclose(bins["confidence"], [0.425, 0.825])
  np.testing.assert_allclose(bins["accuracy"], [0.5, 0.75])


def test_ece_bin_edges_are_right_closed():
  # Confidence exactly 0.6 belongs to (0.4, 0.6] with 5 bins, whatever the float error.
  probs = np.array([[0.6, 0.4]])
  bins = metrics.reliability_bins(probs, np.array([0]), num_bins=5)
  np.testing.assert_array_equal(bins["count"], [0, 0, 1, 0, 0])
  np.testing.assert_array_equal(bins["confidence"], [0, 0, 0.6, 0, 0])  # empty bins: 0
  np.testing.assert_array_equal(bins["accuracy"], [0, 0, 1, 0, 0])


def test_ece_extremes():
  rng = np.random.default_rng(0)
  # Perfectly calibrated: labels drawn from the predicted distribution with confidences
  # exactly at bin-constant values -> ECE -> 0 (up to sampling noise).
  n = 200_000
  conf = rng.choice([0.55, 0.7, 0.85, 0.95], n)
  probs = np.stack([conf, 1 - conf], axis=1)
  labels = (rng.uniform(size=n) > conf).astype(int)
  assert metrics.ece(probs, labels) < 0.005
  # Exactly calibrated by construction (no sampling): 0.
  probs = np.array([[0.75, 0.25]] * 4)
  assert metrics.ece(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
  # All confident and all wrong -> ~1.
  probs = np.tile([0.999, 0.001], (50, 1))
  assert metrics.ece(probs, np.ones(50, int)) == pytest.approx(0.999)


def test_ece_bad_inputs():
  probs, labels = np.array([[0.3, 0.7], [0.5, 0.5]]), np.array([1, 0])
  with pytest.raises(ValueError, match="labels must have shape"):
    metrics.ece(probs, np.array([1, 0, 1]))
  with pytest.raises(ValueError, match="probs must be non-negative with rows summing to 1"):
    metrics.ece(np.array([[2.0, -1.0], [0.5, 0.5]]), labels)
  with pytest.raises(ValueError, match="probs must be non-negative with rows summing to 1"):
    metrics.ece(np.array([[3.0, 1.0], [0.5, 0.5]]), labels)  # logits
  for num_bins in (0, -3, 2.5, True):
    with pytest.raises(ValueError, match="num_bins"):
      metrics.ece(probs, labels, num_bins=num_bins)
  with pytest.raises(ValueError, match="probs must have shape"):
    metrics.reliability_bins(probs[0], labels[:1])


def _sampled(true_temperature, n=20_000, k=10, seed=0):
  """Logits `true * T_true` with labels drawn from softmax(true): the fit recovers T_true."""
  rng = np.random.default_rng(seed)
  true_logits = rng.normal(0.0, 2.5, (n, k))
  p = metrics.softmax(true_logits)
  labels = (p.cumsum(axis=1) > rng.uniform(size=(n, 1))).argmax(axis=1)
  return true_logits * true_temperature, labels


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_fit_temperature_recovers_known_temperature(t_true):
  logits, labels = _sampled(t_true)
  t = metrics.fit_temperature(logits, labels)
  assert t == pytest.approx(t_true, rel=0.05)
  assert metrics.nll(logits, labels, t) <= metrics.nll(logits, labels) + 1e-12
  assert metrics.fit_temperature(logits, labels) == t  # deterministic
  # Scaled probabilities are calibrated on fresh data from the same distribution.
  test_logits, test_labels = _sampled(t_true, seed=1)
  before = metrics.ece(metrics.softmax(test_logits), test_labels)
  after = metrics.ece_after_temperature(test_logits, test_labels, t)
  assert after < 0.02 < before


def test_fit_temperature_calibrated_stays_near_one_and_bounds():
  logits, labels = _sampled(1.0)
  assert metrics.fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.05)
  # Optimum outside the bounds -> the nearer bound.
  assert metrics.fit_temperature(logits * 10, labels, bounds=(0.5, 2.0)) == pytest.approx(
      2.0, rel=1e-5)


def test_temperature_bad_inputs():
  logits, labels = np.zeros((4, 3)), np.array([0, 1, 2, 0])
  with pytest.raises(ValueError, match="labels"):
    metrics.fit_temperature(logits, labels[:3])
  with pytest.raises(ValueError, match="bounds"):
    metrics.fit_temperature(logits, labels, bounds=(2.0, 1.0))
  with pytest.raises(ValueError, match="temperature"):
    metrics.ece_after_temperature(logits, labels, 0.0)
  with pytest.raises(ValueError, match="temperature"):
    metrics.nll(logits, labels, -1.0)
  assert metrics.nll(logits, labels) == pytest.approx(np.log(3))
