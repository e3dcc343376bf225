"""Top-1 accuracy and shared input checks."""

from __future__ import annotations

import numpy as np

from adacorr.core.checks import check_labels as check_label_values


def check_scores(scores, name: str = "logits_or_probs") -> np.ndarray:
  """`scores` as a float64 `(N, K)` array with `N >= 1`, `K >= 1`, all finite."""
  scores = np.asarray(scores)
  if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
    raise ValueError(f"{name} must have shape (N, K) with N, K >= 1, got {scores.shape}.")
  if not (np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)):
    raise ValueError(f"{name} must be real numbers, got dtype {scores.dtype}.")
  scores = scores.astype(np.float64)
  if not np.all(np.isfinite(scores)):
    raise ValueError(f"{name} must be finite, got NaN or inf.")
  return scores


def check_labels(labels, num_examples: int, num_classes: int) -> np.ndarray:
  """`labels` as an int64 `(num_examples,)` array checked to lie in `[0, num_classes)`."""
  labels = np.asarray(labels)
  check_label_values(labels, num_examples, num_classes, name="labels")
  return labels.astype(np.int64)


def accuracy(logits_or_probs, labels) -> float:
  """Top-1 accuracy in [0, 1].

  Args:
    logits_or_probs: `(N, K)` scores; the prediction is the argmax over `K` (ties go to
      the lowest class), so logits and probabilities give the same result.
    labels: integer `(N,)` in `[0, K)`.
  """
  scores = check_scores(logits_or_probs)
  labels = check_labels(labels, *scores.shape)
  return float(np.mean(np.argmax(scores, axis=-1) == labels))
