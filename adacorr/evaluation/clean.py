"""Clean evaluation: a model's logits on a test set, its accuracy and its calibration."""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from adacorr import data as data_lib
from adacorr import metrics
from adacorr import parallel
from adacorr.core import checks


def predict(model, variables, source: data_lib.Source, *, batch_size: int,
            mesh=None) -> tuple[np.ndarray, np.ndarray]:
  """Logits and labels of every example of `source`, in order.

  Args:
    model: a Flax module called as `model.apply(variables, x, train=False)` on images
      x (B, H, W, C) float32 in [0, 1], returning logits (B, K).
    variables: its variables ('params', 'batch_stats').
    source: a `data.Source` of uint8 images.
    batch_size: global batch size (capped at the source's size, rounded down to a
      multiple of the device count); the last batch is padded and the padding dropped.
    mesh: the device mesh of the batches (default: `parallel.make_mesh()`).

  Returns:
    `(logits, labels)`: float32 (N, K) and int (N,) numpy arrays, N = source.num_examples.
  """
  checks.check_steps(batch_size, "batch_size", minimum=1)
  mesh = parallel.make_mesh() if mesh is None else mesh
  batch_size = min(batch_size, source.num_examples)
  batch_size -= batch_size % mesh.devices.size
  if batch_size < 1:
    raise ValueError(f"batch_size must be at least the device count {mesh.devices.size} "
                     f"(and the source must have as many examples, it has "
                     f"{source.num_examples}).")
  logits, labels = [], []
  for batch in data_lib.eval_batches(source, global_batch_size=batch_size, mesh=mesh):
    out = jax.device_get(_predict_batch(_static(model), mesh, variables, batch))
    keep = out["mask"] > 0
    logits.append(out["logits"][keep])
    labels.append(out["label"][keep])
  return np.concatenate(logits), np.concatenate(labels)


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


@functools.partial(jax.jit, static_argnums=(0, 1))
def _predict_batch(model, mesh, variables, batch):
  """Logits, labels and mask of one sharded batch, replicated on every device: every
  process (host) then holds the whole batch's results. Compiled once per (model, mesh,
  batch shape): flax modules hash by their fields (`_static`)."""
  model = model.obj if isinstance(model, _ById) else model
  out = {"logits": model.apply(variables, batch["image"], train=False),
         "label": batch["label"], "mask": batch["mask"]}
  return jax.lax.with_sharding_constraint(out, parallel.replicated_sharding(mesh))


def calibration(logits: np.ndarray, labels: np.ndarray, *, num_bins: int = 15) -> dict[str, Any]:
  """Calibration of logits (N, K) for int labels (N,), N >= 2.

  Returns:
    dict with 'ece' (on all examples), 'temperature' (fitted on the first half),
    'ece_after_temperature' and 'ece_before_temperature_same_half' (both on the second
    half) and 'reliability' (the bins of all examples, as lists). ECEs are in [0, 1].
  """
  logits, labels = np.asarray(logits), np.asarray(labels)
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


def evaluate_clean(model, variables, source: data_lib.Source, *, batch_size: int = 500,
                   mesh=None, with_calibration: bool = True) -> dict[str, Any]:
  """Clean accuracy (and calibration) of `model` on every example of `source`.

  Returns:
    dict with 'num_examples', 'accuracy' (in [0, 1]) and, if `with_calibration`,
    'calibration' (see `calibration`).
  """
  logits, labels = predict(model, variables, source, batch_size=batch_size, mesh=mesh)
  out = {"num_examples": int(len(labels)), "accuracy": float(metrics.accuracy(logits, labels))}
  if with_calibration:
    out["calibration"] = calibration(logits, labels)
  return out
