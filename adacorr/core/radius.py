"""Radii written as numbers or text, parsed in one place for every entry point.

A radius (an l_p ball's eps, an LPIPS bound) may be given as a number (0.03, 8 / 255,
a numpy scalar) or as text: a decimal '0.03' or a fraction '8/255'. The attacks
(`adacorr.attacks`), the threat-model checks and the evaluators all parse it here, then
check it (`adacorr.core.checks`: the attacks' `check_nonnegative` + warnings, the
evaluators' stricter `check_radius_for_evaluation`), so every entry point accepts the
same forms with the same messages.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["as_radius", "parse_radius"]


def _is_real(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def parse_radius(text, name: str = "text") -> float:
  """`text` as a float: a real number, or a string 'a' or a fraction 'a/b' (e.g. '8/255').

  The value is not range-checked here ('nan', '-1' parse); see the checks of
  `adacorr.core.checks`.

  Args:
    text: a number (not a bool) or a string.
    name: the argument's name in the messages.
  Raises:
    ValueError: if `text` is neither a number nor such a string (or divides by 0).
  """
  if _is_real(text):
    return float(text)
  if not isinstance(text, str):
    raise ValueError(f"{name}={text!r} must be a number or a string like '0.5' or '8/255'.")
  num, _, den = text.partition("/")
  try:
    return float(num) / float(den) if den else float(num)
  except (ValueError, ZeroDivisionError) as e:
    raise ValueError(f"{name}={text!r} is not a number or a fraction like '8/255' ({e}).") from e


def as_radius(eps, name: str = "eps"):
  """`eps` with text parsed (`parse_radius`: '8/255' -> 0.0313...); anything else that is
  not a bool returned unchanged (numbers, arrays of radii, traced values, None: the
  caller's checks say what is wrong with them).

  Raises:
    ValueError: for a string that is not a radius, or a bool (True is not a radius).
  """
  if isinstance(eps, (str, bytes)):
    if isinstance(eps, bytes):
      eps = eps.decode(errors="replace")
    return parse_radius(eps, name)
  if isinstance(eps, (bool, np.bool_)):
    raise ValueError(f"{name}={eps!r} is a bool, not a radius; pass a number such as 8/255 "
                     f"or '8/255'.")
  return eps
