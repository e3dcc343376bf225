"""Calibration: expected calibration error, reliability diagrams, temperature scaling.

ECE follows Guo et al. 2017 ("On Calibration of Modern Neural Networks"): the top-1
confidence `max_k p_k` is put in `num_bins` equal-width bins `((b-1)/M, b/M]` and
`ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)|`, in [0, 1].
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np

from adacorr.core.checks import warn_if_probabilities
from adacorr.metrics.classification import check_labels, check_scores

_SUM_ATOL = 1e-3  # float32 softmax rows sum to 1 within ~1e-6; this only catches logits


class ReliabilityBins(TypedDict):
  """Per-bin statistics of a reliability diagram (`M = num_bins`), a plain dict.

  Keys:
    edges: `(M + 1,)` bin edges `0, 1/M, ..., 1`; bin `b` is `(edges[b], edges[b+1]]`.
    confidence: `(M,)` mean top-1 confidence of the bin's examples (0 if empty).
    accuracy: `(M,)` top-1 accuracy of the bin's examples (0 if empty).
    count: `(M,)` int64 number of examples in the bin.
  """
  edges: np.ndarray
  confidence: np.ndarray
  accuracy: np.ndarray
  count: np.ndarray


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
  """Row-wise `softmax(logits / temperature)`: float64 `(N, K)` probabilities.

  Warns (`UserWarning`) when `logits` look like probabilities (rows in [0, 1] summing
  to 1): a softmax of probabilities is a flattened, wrong answer.
  """
  z = check_scores(logits, "logits")
  warn_if_probabilities(z, "logits")
  z = z / _check_temperature(temperature)
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def nll(logits, labels, temperature: float = 1.0) -> float:
  """Mean negative log-likelihood of `labels` under `softmax(logits / temperature)`.

  Args:
    logits: `(N, K)` unnormalised log-probabilities.
    labels: integer `(N,)` in `[0, K)`.
    temperature: `T > 0`.

  Warns when `logits` look like probabilities (see `softmax`).
  """
  z = check_scores(logits, "logits")
  warn_if_probabilities(z, "logits")
  labels = check_labels(labels, *z.shape)
  return _nll(z, labels, _check_temperature(temperature))


def _nll(z: np.ndarray, labels: np.ndarray, temperature: float) -> float:
  z = z / temperature
  m = z.max(axis=-1)
  lse = m + np.log(np.exp(z - m[:, None]).sum(axis=-1))
  return float(np.mean(lse - z[np.arange(z.shape[0]), labels]))


def _check_temperature(temperature) -> float:
  if isinstance(temperature, (str, bytes, bool, np.bool_)) or np.ndim(temperature) != 0:
    raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
  t = float(temperature)
  if not (math.isfinite(t) and t > 0):
    raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
  return t


def _check_probs(probs) -> np.ndarray:
  probs = check_scores(probs, "probs")
  if probs.min() < 0 or not np.allclose(probs.sum(axis=-1), 1.0, rtol=0, atol=_SUM_ATOL):
    raise ValueError(
        "probs must be non-negative with rows summing to 1 (got row sums in "
        f"[{probs.sum(-1).min():.4g}, {probs.sum(-1).max():.4g}] and min {probs.min():.4g}); "
        "pass softmax(logits), not logits.")
  return probs


def _check_num_bins(num_bins) -> int:
  if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
    raise ValueError(f"num_bins must be an int >= 1, got {num_bins!r}.")
  return int(num_bins)


def reliability_bins(probs, labels, num_bins: int = 15) -> ReliabilityBins:
  """Per-bin confidence, accuracy and count for a reliability diagram.

  Args:
    probs: `(N, K)` probabilities (rows sum to 1).
    labels: integer `(N,)` in `[0, K)`.
    num_bins: number `M >= 1` of equal-width confidence bins on [0, 1].
  """
  probs = _check_probs(probs)
  labels = check_labels(labels, *probs.shape)
  num_bins = _check_num_bins(num_bins)
  conf = probs.max(axis=-1)
  correct = (probs.argmax(axis=-1) == labels).astype(np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  # right=True: bin b holds edges[b] < conf <= edges[b+1]; conf = 0 joins bin 0.
  bins = np.clip(np.digitize(conf, edges, right=True) - 1, 0, num_bins - 1)
  count = np.bincount(bins, minlength=num_bins).astype(np.int64)
  safe = np.maximum(count, 1)  # empty bins: sums are 0, so 0 / 1 = 0
  confidence = np.bincount(bins, weights=conf, minlength=num_bins) / safe
  acc = np.bincount(bins, weights=correct, minlength=num_bins) / safe
  return ReliabilityBins(edges=edges, confidence=confidence, accuracy=acc, count=count)


def ece(probs, labels, num_bins: int = 15) -> float:
  """Expected calibration error in [0, 1] (Guo et al. 2017, equal-width bins).

  Args:
    probs: `(N, K)` probabilities (rows sum to 1), e.g. `softmax(logits)`.
    labels: integer `(N,)` in `[0, K)`.
    num_bins: number of equal-width confidence bins (15 as in Guo et al.).
  """
  bins = reliability_bins(probs, labels, num_bins)
  weights = bins["count"] / bins["count"].sum()  # empty bins weigh 0
  return float(np.sum(weights * np.abs(bins["accuracy"] - bins["confidence"])))


def fit_temperature(logits, labels, *, bounds: tuple[float, float] = (0.05, 20.0),
                    tol: float = 1e-6) -> float:
  """The temperature `T > 0` minimising the NLL of `softmax(logits / T)` (Guo et al.).

  Fit on held-out data (not the test set). The NLL is convex in `1 / T`, hence
  unimodal in `log T`, so a golden-section search on `log T` over `bounds` finds the
  minimiser deterministically (to `tol` in `log T`); an optimum outside `bounds` is
  returned as the nearer bound.

  Args:
    logits: `(N, K)` logits.
    labels: integer `(N,)` in `[0, K)`.
    bounds: `(T_min, T_max)`, `0 < T_min < T_max`.
    tol: width in `log T` at which the search stops.

  Returns:
    The fitted temperature as a Python float.

  Warns when `logits` look like probabilities (see `softmax`).
  """
  z = check_scores(logits, "logits")
  warn_if_probabilities(z, "logits")
  labels = check_labels(labels, *z.shape)
  lo, hi = (float(b) for b in bounds)
  if not (0 < lo < hi and math.isfinite(hi)):
    raise ValueError(f"bounds must be (T_min, T_max) with 0 < T_min < T_max, got {bounds!r}.")
  if not tol > 0:
    raise ValueError(f"tol must be > 0, got {tol!r}.")
  f = lambda log_t: _nll(z, labels, math.exp(log_t))
  a, b = math.log(lo), math.log(hi)
  inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
  c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
  fc, fd = f(c), f(d)
  while b - a > tol:
    if fc <= fd:  # the minimum lies in [a, d]
      b, d, fd = d, c, fc
      c = b - inv_phi * (b - a)
      fc = f(c)
    else:  # in [c, b]
      a, c, fc = c, d, fd
      d = a + inv_phi * (b - a)
      fd = f(d)
  candidates = [(f(a), a), (fc, c), (fd, d), (f(b), b)]
  return math.exp(min(candidates)[1])


def ece_after_temperature(logits, labels, temperature: float, num_bins: int = 15) -> float:
  """ECE in [0, 1] of `softmax(logits / temperature)`; `temperature` from `fit_temperature`
  on held-out data.

  Args:
    logits: `(N, K)` logits of the evaluation set.
    labels: integer `(N,)` in `[0, K)`.
    temperature: `T > 0`.
    num_bins: number of equal-width confidence bins.

  Warns when `logits` look like probabilities (see `softmax`).
  """
  return ece(softmax(logits, temperature), labels, num_bins)
