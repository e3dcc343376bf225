"""Evaluators by name, in the spirit of big_vision's evaluators.

Every evaluator is called as `EVALUATORS[name](model, variables, data, **options)` and
returns a dict of numbers (plain floats, ints and lists, ready for JSON); `data` is a
`data.Source` of the test set, or for 'corruptions' the `{(name, severity): Source}` of
`corruptions.corrupted_sources`. They read no run directory: the caller loads the model
and the data.
"""

from __future__ import annotations

from typing import Callable

from adacorr.evaluation.lp import evaluate_lp
from adacorr.evaluation.lpips import evaluate_lpips
from adacorr.evaluation.noise import evaluate_noise
from adacorr.evaluation.robustness import evaluate_clean, evaluate_corruptions

EVALUATORS: dict[str, Callable[..., dict]] = {
    "clean": evaluate_clean,
    "corruptions": evaluate_corruptions,
    "lp": evaluate_lp,
    "lpips": evaluate_lpips,
    "noise": evaluate_noise,
}


def get_evaluator(name: str) -> Callable[..., dict]:
  """The evaluator registered as `name` (a key of `EVALUATORS`).

  Raises:
    ValueError: for an unknown `name`, naming the accepted ones.
  """
  if not isinstance(name, str) or name not in EVALUATORS:
    raise ValueError(f"Unknown evaluator name={name!r}; accepted: "
                     f"{', '.join(sorted(EVALUATORS))}.")
  return EVALUATORS[name]
