"""What a corruption is: the `Corruption` record, the parameter tables and severities.

The corruption families (`noise`, `blur`, `weather`, `digital`) build their
`Corruption`s from this module; `core` collects them into the registry. Keeping the
record here lets `core` import the families at the top without an import cycle.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax

PARAM_TABLES = ("cifar10", "imagenet")
SEVERITIES = (1, 2, 3, 4, 5)

ImageFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


@dataclasses.dataclass(frozen=True)
class Corruption:
  """One corruption.

  Attributes:
    name: its name in the benchmark (e.g. 'gaussian_noise').
    fn: `fn(image (H, W, 3) float32 in [0, 1], key, p) -> (H, W, 3)`; jittable in
      `image` and `key`, with `p` static.
    params: table name ('cifar10', 'imagenet') -> the five per-severity entries `p`.
    random: whether the result depends on `key`.
  """
  name: str
  fn: ImageFn
  params: Mapping[str, Sequence[Any]]
  random: bool
