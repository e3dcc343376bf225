"""Memory planning for per-example attacks: how many examples fit on a device at once.

AdA (`adacorr.attacks.adversarial_augment`) gives every example its own copy of the
corruption net's weights, so a batch vmapped at once holds B weight copies, their
perturbations and gradients, and B sets of activations: at batch 1024 the weight copies
of the paper's EDSR alone are ~5.6 GB per array. Its `chunk_size='auto'` therefore picks
the largest "nano-batch" whose estimated memory fits a budget:

  bytes_per_example  an upper bound on one example's memory in one ascent step
                     (`traced_bytes` of the step's jaxpr, plus the carried state);
  memory_budget      `fraction` of the device's memory (`device.memory_stats()`
                     'bytes_limit'; GPU / TPU) or a fixed `CPU_BUDGET_BYTES` (XLA:CPU
                     reports no limit);
  auto_chunk_size    the largest number of examples per device whose bytes fit the
                     budget, times the number of devices (the nano-batch is global).

`traced_bytes` sums the sizes of every value the computation produces, as if none were
ever freed; XLA reuses buffers, so the real peak is lower (checked against XLA's own
`memory_analysis` in tests/test_ada_memory.py) and 'auto' errs towards smaller
nano-batches, never larger ones. The paper's own settings were 8 examples per device on
CIFAR-10 and 1 on ImageNet (App. B.1; chunk_size='8/device' / '1/device').
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import jax
import numpy as np

# Memory 'auto' may plan for on a device that reports no limit (XLA:CPU), per device.
CPU_BUDGET_BYTES = 2 * 1024 ** 3
# Default fraction of an accelerator's memory for the per-example part of an attack
# (the rest holds the classifier, its optimizer state and the training step's own
# activations).
DEFAULT_FRACTION = 0.5


def _nbytes(aval: Any) -> int:
  shape = getattr(aval, "shape", None)
  dtype = getattr(aval, "dtype", None)
  if shape is None or dtype is None:
    return 0
  try:
    itemsize = np.dtype(dtype).itemsize
  except TypeError:  # extended dtypes (typed PRNG keys)
    itemsize = 8
  return int(np.prod(shape, dtype=np.int64)) * itemsize


def _jaxpr_bytes(jaxpr: Any) -> int:
  """Bytes of every value produced in `jaxpr` and in the jaxprs nested in its equations."""
  total = 0
  for eqn in jaxpr.eqns:
    total += sum(_nbytes(v.aval) for v in eqn.outvars)
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else (param,)):
        inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
        if hasattr(inner, "eqns"):
          total += _jaxpr_bytes(inner)
  return total


def traced_bytes(fn: Callable[..., Any], *args: Any) -> int:
  """An upper bound on the memory `fn(*args)` needs beyond what it closes over: the
  bytes of its arguments plus every value its jaxpr produces (nested jaxprs included),
  none of them freed.

  Values `fn` closes over (e.g. a classifier's weights, shared by every example) are
  not counted. `args` may be arrays or `jax.ShapeDtypeStruct`s; nothing is computed or
  compiled, and it may be called while tracing (inside `jit`).
  """
  closed = jax.make_jaxpr(fn)(*args)
  inputs = sum(_nbytes(v.aval) for v in closed.jaxpr.invars)
  return int(inputs + _jaxpr_bytes(closed.jaxpr))


def memory_budget(fraction: float = DEFAULT_FRACTION, device: Any = None) -> int:
  """Bytes per device an attack may plan for: `fraction` of the device's 'bytes_limit'
  (GPU / TPU memory stats), else `fraction * CPU_BUDGET_BYTES / DEFAULT_FRACTION`
  (`CPU_BUDGET_BYTES` at the default fraction).

  Raises:
    ValueError: unless 0 < fraction <= 1.
  """
  if not 0 < float(fraction) <= 1:
    raise ValueError(f"fraction={fraction!r} must be in (0, 1].")
  device = device or jax.local_devices()[0]
  try:
    stats = device.memory_stats() or {}
  except Exception:  # backends without memory stats
    stats = {}
  limit = stats.get("bytes_limit")
  if not limit:
    return int(fraction * CPU_BUDGET_BYTES / DEFAULT_FRACTION)
  return int(fraction * limit)


def auto_chunk_size(batch_size: int, bytes_per_example: int, budget_bytes: int, *,
                    num_devices: int = 1, max_per_device: int | None = None) -> int | None:
  """The global nano-batch: the largest n per device with n * bytes_per_example <=
  budget_bytes (capped at `max_per_device`), times `num_devices`; None when the whole
  batch fits at once.

  When not even one example fits, returns one example per device and warns (the
  attack cannot be split further).

  Raises:
    ValueError: for a non-positive batch_size, bytes_per_example, budget or device count.
  """
  for name, value in (("batch_size", batch_size), ("bytes_per_example", bytes_per_example),
                      ("budget_bytes", budget_bytes), ("num_devices", num_devices)):
    if int(value) < 1:
      raise ValueError(f"{name}={value!r} must be a positive int.")
  per_device_batch = -(-int(batch_size) // int(num_devices))
  n = int(budget_bytes) // int(bytes_per_example)
  if n < 1:
    warnings.warn(
        f"one example needs an estimated {bytes_per_example / 2**20:.1f} MiB, more than "
        f"the memory budget of {budget_bytes / 2**20:.1f} MiB per device; using one "
        "example per device.", RuntimeWarning, stacklevel=2)
    n = 1
  if max_per_device is not None:
    n = min(n, int(max_per_device))
  if n >= per_device_batch:
    return None
  return n * int(num_devices)
