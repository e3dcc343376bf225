"""Metrics to a JSONL file and to TensorBoard in the workdir (process 0 only)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Mapping

import jax


class MetricWriter:
  """Appends `{"step", "split", "time", **scalars}` lines to `workdir/metrics.jsonl` and
  writes the same scalars as `split/name` to TensorBoard (`workdir/tensorboard`) when
  TensorFlow is available. Non-finite values are written as null in JSONL."""

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self._active = jax.process_index() == 0
    self._tb = None
    self.path = os.path.join(workdir, "metrics.jsonl")
    if not self._active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._file = open(self.path, "a", encoding="utf-8")
    if tensorboard:
      try:
        from flax.metrics import tensorboard as flax_tb  # imports TensorFlow
        self._tb = flax_tb.SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError as e:  # TensorBoard is optional
        logging.warning("TensorBoard logging disabled (%s); writing JSONL only.", e)

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    if not self._active:
      return
    values = {k: float(v) for k, v in scalars.items()}
    record = {"step": int(step), "split": split, "time": time.time(),
              **{k: (v if math.isfinite(v) else None) for k, v in values.items()}}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for name, value in values.items():
        self._tb.scalar(f"{split}/{name}", value, step)
      self._tb.flush()

  def close(self) -> None:
    if self._active:
      self._file.close()
      if self._tb is not None:
        self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """The records of `workdir/metrics.jsonl`, in order."""
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
