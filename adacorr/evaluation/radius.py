"""Radii and bounds written as text: '8/255', '0.5' -> float."""

from __future__ import annotations

import numbers


def parse_radius(text: str | float) -> float:
  """`text` as a float: a number, or a string 'a' or a fraction 'a/b' (e.g. '8/255').

  Raises:
    ValueError: if `text` is neither a number nor such a string.
  """
  if isinstance(text, numbers.Real) and not isinstance(text, bool):
    return float(text)
  if not isinstance(text, str):
    raise ValueError(f"text={text!r} must be a number or a string like '0.5' or '8/255'.")
  num, _, den = text.partition("/")
  try:
    return float(num) / float(den) if den else float(num)
  except (ValueError, ZeroDivisionError) as e:
    raise ValueError(f"text={text!r} is not a number or a fraction like '8/255' ({e}).") from e
