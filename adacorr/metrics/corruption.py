"""Corruption errors on <dataset>-C: mCE (CIFAR and ImageNet style) and relative mCE.

Conventions: an *error table* maps a corruption name to its 5 top-1 errors in [0, 1],
one per severity 1..5. Only the 15 `BENCHMARK_CORRUPTIONS` enter mCE; other names
(e.g. the 4 extra corruptions) are ignored. Results are in percent.
"""

from __future__ import annotations

from typing import Mapping, Sequence, Union

import numpy as np

from adacorr.core.checks import check_fraction
from adacorr.corruptions import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, SEVERITIES

# Corruption name -> its 5 per-severity values (accuracies or errors, in [0, 1]).
CorruptionResults = Mapping[str, Sequence[float]]

# AlexNet top-1 error on ImageNet-C, averaged over the 5 severities, per corruption
# (Hendrycks & Dietterich 2019; the constants of their ImageNet-C evaluation code).
ALEXNET_ERR: dict[str, float] = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
# AlexNet top-1 error on clean ImageNet validation images, the reference of Relative
# mCE in Hendrycks & Dietterich 2019 ("Benchmarking Neural Network Robustness to
# Common Corruptions and Perturbations", ICLR); it is torchvision's AlexNet
# (top-1 accuracy 56.52%).
ALEXNET_CLEAN_ERR = 0.4348

_STYLES = ("cifar", "imagenet")


def _check_fraction(value, name: str) -> np.ndarray:
  value = np.asarray(value, np.float64)
  check_fraction(value, name)
  return value


def _benchmark_table(table: Mapping, argname: str, *, allow_scalar: bool = False
                     ) -> dict[str, np.ndarray]:
  """The 15 benchmark rows of `table`, each `(5,)` (or `()` if `allow_scalar`)."""
  if not isinstance(table, Mapping):
    raise ValueError(f"{argname} must map corruption names to values, got "
                     f"{type(table).__name__}.")
  missing = [c for c in BENCHMARK_CORRUPTIONS if c not in table]
  if missing:
    raise ValueError(f"{argname} is missing benchmark corruptions: {', '.join(missing)}.")
  rows = {}
  for c in BENCHMARK_CORRUPTIONS:
    row = _check_fraction(table[c], f"{argname}[{c!r}]")
    if row.shape != (len(SEVERITIES),) and not (allow_scalar and row.shape == ()):
      raise ValueError(f"{argname}[{c!r}] must hold {len(SEVERITIES)} values (severities "
                       f"1..5){' or one mean' if allow_scalar else ''}, got shape "
                       f"{row.shape}.")
    rows[c] = row
  return rows


def error_table(accuracies: Union[Mapping[tuple[str, int], float], CorruptionResults]
                ) -> dict[str, np.ndarray]:
  """Accuracies -> error table: corruption name -> `(5,)` errors `1 - acc`.

  Args:
    accuracies: either `(name, severity) -> accuracy` or `name -> 5 accuracies`
      (severities 1..5), accuracies in [0, 1]. Every name present needs all 5
      severities.
  """
  if not isinstance(accuracies, Mapping) or not accuracies:
    raise ValueError("accuracies must be a non-empty mapping.")
  if all(isinstance(k, tuple) for k in accuracies):
    names = list(dict.fromkeys(k[0] for k in accuracies))
    by_name = {}
    for name in names:
      missing = [s for s in SEVERITIES if (name, s) not in accuracies]
      if missing:
        raise ValueError(f"accuracies lacks severities {missing} of {name!r}.")
      by_name[name] = [accuracies[(name, s)] for s in SEVERITIES]
    extra = [k for k in accuracies if k[1] not in SEVERITIES]
    if extra:
      raise ValueError(f"accuracies has keys with severities outside 1..5: {extra}.")
  else:
    by_name = dict(accuracies)
  table = {}
  for name, accs in by_name.items():
    if name not in ALL_CORRUPTIONS:
      raise ValueError(f"accuracies has an unknown corruption {name!r}; known: "
                       f"{', '.join(ALL_CORRUPTIONS)}.")
    accs = _check_fraction(accs, f"accuracies[{name!r}]")
    if accs.shape != (len(SEVERITIES),):
      raise ValueError(f"accuracies[{name!r}] must hold 5 values, got shape {accs.shape}.")
    table[name] = 1.0 - accs
  return table


def corruption_errors(errors: CorruptionResults, *, style: str = "cifar",
                      alexnet_errors: Mapping[str, float | Sequence[float]] | None = None
                      ) -> dict[str, float]:
  """Per-corruption CE_c in percent, for the 15 benchmark corruptions.

  'cifar': `CE_c = 100 * mean_s E_{c,s}`. 'imagenet': `CE_c = 100 * sum_s E_{c,s} /
  sum_s E^AlexNet_{c,s} = 100 * mean_s E_{c,s} / mean_s E^AlexNet_{c,s}`, with
  `alexnet_errors` (name -> mean error or 5 per-severity errors; default `ALEXNET_ERR`).
  """
  if style not in _STYLES:
    raise ValueError(f"style={style!r} must be one of {_STYLES}.")
  rows = _benchmark_table(errors, "errors")
  if style == "cifar":
    if alexnet_errors is not None:
      raise ValueError("alexnet_errors is only used with style='imagenet'.")
    return {c: 100.0 * float(np.mean(e)) for c, e in rows.items()}
  ref = _benchmark_table(ALEXNET_ERR if alexnet_errors is None else alexnet_errors,
                         "alexnet_errors", allow_scalar=True)
  out = {}
  for c, e in rows.items():
    denom = float(np.mean(ref[c]))
    if denom <= 0:
      raise ValueError(f"alexnet_errors[{c!r}] must be positive, got {ref[c]}.")
    out[c] = 100.0 * float(np.mean(e)) / denom
  return out


def mce(errors: CorruptionResults, *, style: str = "cifar",
        alexnet_errors: Mapping[str, float | Sequence[float]] | None = None) -> float:
  """Mean corruption error in percent over the 15 benchmark corruptions x 5 severities.

  Args:
    errors: corruption name -> 5 top-1 errors in [0, 1] (severities 1..5); must
      contain every name in `BENCHMARK_CORRUPTIONS` (others are ignored).
    style: 'cifar' (CIFAR-10-C: unnormalised, `100 - mean accuracy`) or 'imagenet'
      (ImageNet-C: each corruption normalised by AlexNet's error, 100 = AlexNet).
    alexnet_errors: for 'imagenet', AlexNet's error per corruption (mean over
      severities, or 5 values); default the published `ALEXNET_ERR`.
  """
  return float(np.mean(list(corruption_errors(errors, style=style,
                                               alexnet_errors=alexnet_errors).values())))


def relative_corruption_errors(
    errors: CorruptionResults, clean_error: float,
    alexnet_errors: Mapping[str, float | Sequence[float]] | None = None,
    alexnet_clean_error: float | None = None) -> dict[str, float]:
  """Per-corruption Relative CE_c in percent (Hendrycks & Dietterich 2019).

  `Relative CE_c = 100 * sum_s (E_{c,s} - E_clean) / sum_s (E^AlexNet_{c,s} -
  E^AlexNet_clean)`. Arguments as in `relative_mce`.
  """
  rows = _benchmark_table(errors, "errors")
  ref = _benchmark_table(ALEXNET_ERR if alexnet_errors is None else alexnet_errors,
                         "alexnet_errors", allow_scalar=True)
  clean = float(_check_fraction(clean_error, "clean_error"))
  ref_clean = float(_check_fraction(
      ALEXNET_CLEAN_ERR if alexnet_clean_error is None else alexnet_clean_error,
      "alexnet_clean_error"))
  out = {}
  for c, e in rows.items():
    # sum_s (A_s - A_clean) = 5 * (mean_s A_s - A_clean); a scalar row is that mean.
    denom = float(np.mean(ref[c])) - ref_clean
    if denom <= 0:
      raise ValueError(f"alexnet_errors[{c!r}] (mean {np.mean(ref[c]):.4g}) must exceed "
                       f"alexnet_clean_error ({ref_clean:.4g}).")
    out[c] = 100.0 * (float(np.mean(e)) - clean) / denom
  return out


def relative_mce(errors: CorruptionResults, clean_error: float,
                 alexnet_errors: Mapping[str, float | Sequence[float]] | None = None,
                 alexnet_clean_error: float | None = None) -> float:
  """Relative mCE in percent: the mean of `relative_corruption_errors` over 15 corruptions.

  Args:
    errors: corruption name -> 5 top-1 errors in [0, 1]; every benchmark name needed.
    clean_error: the model's top-1 error on clean images, in [0, 1].
    alexnet_errors: the reference's errors per corruption (mean over severities, or 5
      values); default `ALEXNET_ERR` (ImageNet-C).
    alexnet_clean_error: the reference's clean error; default `ALEXNET_CLEAN_ERR`
      (0.4348, ImageNet).

  Can be negative (a model that is more accurate on corrupted than on clean images).
  """
  return float(np.mean(list(relative_corruption_errors(
      errors, clean_error, alexnet_errors, alexnet_clean_error).values())))
