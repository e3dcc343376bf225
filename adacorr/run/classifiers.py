"""Classifiers from training workdirs: the run layer's reading of what the engine wrote."""

from __future__ import annotations

import json
import os

import ml_collections

from adacorr import data as data_lib
from adacorr.train.checkpoint import checkpoint_steps, restore_params
from adacorr.train.loop import build_model


def load_classifier(workdir: str, step: int | None = None):
  """A trained classifier from a training workdir: `(model, variables, config, step)`.

  Reads `workdir/config.json` (written by `adacorr.train.loop.train_and_evaluate`) and the checkpoint
  `step` (default: latest) of `workdir/checkpoints`; `variables` holds 'params' and
  'batch_stats' for `model.apply(variables, x, train=False)`. Used to load an external
  LPIPS network (e.g. a CifarAlexNet run) and by `experiments/evaluate.py`.

  Raises:
    FileNotFoundError: if `workdir` has no config.json or no complete checkpoint (of `step`).
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: {workdir!r} is not a training workdir "
                            "(run python -m experiments.train with --workdir first).")
  with open(path, encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  model = build_model(config, data_lib.DATASETS[config.dataset])
  if step is not None:
    steps = checkpoint_steps(os.path.join(workdir, "checkpoints"))
    if step not in steps:
      raise FileNotFoundError(f"step={step}: {workdir} has no checkpoint of that step; it has "
                              f"{steps or 'none'}.")
  state = restore_params(os.path.join(workdir, "checkpoints"), step)
  variables = {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
  return model, variables, config, int(state["step"])
