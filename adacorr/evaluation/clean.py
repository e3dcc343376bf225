"""Clean evaluation: a model's logits on a test set, its accuracy and its calibration."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from adacorr import data as data_lib
from adacorr import metrics
from adacorr import parallel
from adacorr.attacks import lp as lp_attacks
from adacorr.core import checks


class _ById:
  """A static jit argument that hashes by identity (a module with list attributes, e.g.
  read from a config's JSON, cannot be hashed by its fields)."""

  def __init__(self, obj):
    self.obj = obj

  def __hash__(self):
    return id(self.obj)

  def __eq__(self, other):
    return isinstance(other, _ById) and other.obj is self.obj


def _static(model):
  try:
    hash(model)
    return model
  except TypeError:
    return _ById(model)


@functools.lru_cache(maxsize=16)
def _eval_apply_of(static_model):
  model = static_model.obj if isinstance(static_model, _ById) else static_model
  return jax.jit(lambda v, x: model.apply(v, x, train=False))


def eval_apply(model):
  """`(variables, x) -> logits` of `model` in evaluation mode, jitted, the same object for
  the same model: with `attacks.lp.traced_logits_fn(eval_apply(model), variables)` the
  attacks trace the variables and reuse their compilations across calls and models."""
  return _eval_apply_of(_static(model))


def _host_rows(rows, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
  """`(images, labels or None)` of `rows` (an array or a `data.Source`) at `positions`."""
  if isinstance(rows, data_lib.Source):
    return rows.get(positions)
  return np.asarray(rows[positions]), None


@functools.partial(jax.jit, static_argnums=(0, 1))
def _logits_batch(mesh, transform, logits_fn, xb, key_data):
  """Logits of one sharded batch (uint8 images -> float / 255 first; then `transform(xb,
  keys)` if given), replicated on every device: every process holds the whole batch's
  logits. `logits_fn` is a pytree (`attacks.lp.as_pytree`): a `traced_logits_fn` traces
  the model's variables, so every model of one architecture shares the compilation."""
  if xb.dtype == jnp.uint8:
    xb = xb.astype(jnp.float32) / 255.0
  if transform is not None:
    xb = transform(xb, jax.random.wrap_key_data(key_data))
  return jax.lax.with_sharding_constraint(logits_fn(xb), parallel.replicated_sharding(mesh))


def logits_of(logits_fn: Callable[[jax.Array], jax.Array], rows, *, batch_size: int,
              mesh=None, transform: Callable | None = None, keys=None
              ) -> tuple[np.ndarray, np.ndarray | None]:
  """Logits of every row of `rows`, in order: the one prediction loop of the evaluation
  (`robustness.evaluate`'s clean and corruption sections, hence the run report's).

  Args:
    logits_fn: x (B, H, W, C) float32 in [0, 1] -> logits (B, K); a plain callable
      (static: compared by identity) or an `attacks.traced_logits_fn` (its variables
      traced: one compilation per architecture).
    rows: images (N, H, W, C), uint8 (0-255) or float in [0, 1] (numpy, jax or any array
      indexable by an int array, e.g. a memmap), or a `data.Source` (its uint8 images and
      labels).
    batch_size: examples per global batch, rounded up to a multiple of the mesh's device
      count (capped at N rounded up so); the last batch is padded with copies of the
      last row, whose logits are dropped.
    mesh: the devices (default `parallel.make_mesh()`: every device of every process).
      With several processes every process passes the same `rows`; each reads only its
      rows of every batch, and every process gets all the logits.
    transform: None, or `transform(x, keys) -> x` (hashable: equal transforms share a
      compilation) applied on device to each batch of float images, with `keys` the
      batch's rows of `keys`.
    keys: typed PRNG keys (N,) for `transform`.

  Returns:
    `(logits, labels)`: float32 (N, K) numpy and, for a `Source`, its int labels (N,)
    (else None).
  """
  checks.check_steps(batch_size, "batch_size", minimum=1)
  mesh = parallel.make_mesh() if mesh is None else mesh
  n = rows.num_examples if isinstance(rows, data_lib.Source) else int(rows.shape[0])
  if n < 1:
    raise ValueError("rows is empty: nothing to evaluate.")
  d = mesh.devices.size
  bs = -(-min(batch_size, n) // d) * d
  local = parallel.host_local_slice(bs, mesh)
  key_data = None if keys is None else np.asarray(jax.random.key_data(keys))
  fn = lp_attacks.as_pytree(logits_fn)
  logits, labels = [], []
  for start in range(0, n, bs):
    positions = np.minimum(np.arange(start, start + bs), n - 1)
    images, y = _host_rows(rows, positions[local])
    batch = {"x": images}
    if key_data is not None:
      batch["k"] = key_data[positions[local]]
    batch = parallel.shard_batch(batch, mesh)
    out = _logits_batch(mesh, transform, fn, batch["x"], batch.get("k"))
    logits.append(np.asarray(out)[:min(bs, n - start)])
    if y is not None:
      labels.append(y)
  logits = np.concatenate(logits)
  if not labels:
    return logits, None
  if jax.process_count() > 1:  # every process read its rows: gather the labels
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    labels = [np.asarray(multihost_utils.process_allgather(np.stack(labels)))]
    labels = [np.swapaxes(labels[0], 0, 1).reshape(-1)]
  return logits, np.concatenate(labels)[:n].astype(np.int64)


def predict(model, variables, source: data_lib.Source, *, batch_size: int,
            mesh=None) -> tuple[np.ndarray, np.ndarray]:
  """Logits and labels of every example of `source`, in order (`logits_of` with the
  model in evaluation mode, its variables traced).

  Args:
    model: a Flax module called as `model.apply(variables, x, train=False)` on images
      x (B, H, W, C) float32 in [0, 1], returning logits (B, K).
    variables: its variables ('params', 'batch_stats').
    source: a `data.Source` of uint8 images.
    batch_size, mesh: as for `logits_of`.

  Returns:
    `(logits, labels)`: float32 (N, K) and int (N,) numpy arrays, N = source.num_examples.
  """
  return logits_of(lp_attacks.traced_logits_fn(eval_apply(model), variables), source,
                   batch_size=batch_size, mesh=mesh)


def calibration(logits: np.ndarray, labels: np.ndarray, *, num_bins: int = 15) -> dict[str, Any]:
  """Calibration of logits (N, K) for int labels (N,), N >= 2.

  Returns:
    dict with 'ece' (on all examples), 'temperature' (fitted on the first half),
    'ece_after_temperature' and 'ece_before_temperature_same_half' (both on the second
    half) and 'reliability' (the bins of all examples, as lists). ECEs are in [0, 1].
  """
  logits, labels = np.asarray(logits), np.asarray(labels)
  checks.warn_if_probabilities(logits, "logits")  # softmax(probabilities) is a wrong ECE
  if logits.ndim != 2 or labels.shape != logits.shape[:1] or len(labels) < 2:
    raise ValueError(f"logits (N, K) and labels (N,) with N >= 2 are needed, got shapes "
                     f"{logits.shape} and {labels.shape}.")
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  half = len(labels) // 2  # temperature fitted on one half, ECE after it on the other
  temperature = float(metrics.fit_temperature(logits[:half], labels[:half]))
  scaled = np.asarray(jax.nn.softmax(logits[half:] / temperature, axis=-1))
  return {
      "ece": float(metrics.ece(probs, labels, num_bins=num_bins)),
      "temperature": temperature,
      "ece_after_temperature": float(metrics.ece(scaled, labels[half:], num_bins=num_bins)),
      "ece_before_temperature_same_half": float(
          metrics.ece(probs[half:], labels[half:], num_bins=num_bins)),
      "reliability": {k: np.asarray(v).tolist() for k, v in
                      metrics.reliability_bins(probs, labels, num_bins=num_bins).items()},
  }
