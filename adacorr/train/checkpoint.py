"""Checkpoints with orbax: save every N steps and at the end, keep the last K, resume.

Orbax writes each checkpoint into a temporary directory and renames it into place
only once every file is written (an atomic rename on local and POSIX file systems; a
commit marker on object stores). A save that is interrupted midway (SIGKILL, power
loss) therefore leaves at most a temporary directory, which `latest_step` never
returns and which is cleaned up at the next start.

The train state is the whole run's state: parameters, BatchNorm statistics, optimizer
state, step and PRNG key. The input position is a pure function of the step (see
`adacorr.data.batch_indices`), so restoring the state resumes the run exactly.
"""

from __future__ import annotations

import os
from typing import Any

import flax
import jax
import orbax.checkpoint as ocp

from adacorr.train.state import TrainState

_LEGACY_FIELDS = ("step", "params", "batch_stats", "opt_state", "rng")


@flax.struct.dataclass
class _LegacyTrainState:
  """`TrainState` as saved before it had `method_state`."""
  step: Any
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: Any


class Checkpointer:
  """Saves and restores a pytree (the `TrainState`) by step in `directory`."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep={max_to_keep} must be >= 1.")
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    """Saves `state` as checkpoint `step` (in the background when async)."""
    self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True)

  def restore(self, target: Any, step: int | None = None) -> Any:
    """Restores checkpoint `step` (default: latest) into the structure and shardings
    of `target` (a pytree of arrays or `jax.ShapeDtypeStruct`s).

    A `TrainState` checkpoint written before `TrainState.method_state` existed restores
    into a target whose method state is empty (a stateless method's).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No complete checkpoint in {self.directory}.")
    abstract = jax.tree.map(_abstract, target)
    if isinstance(target, TrainState) and "method_state" not in self._saved_keys(step):
      if jax.tree.leaves(target.method_state):
        raise ValueError(f"Checkpoint {step} in {self.directory} has no method_state, but "
                         "the training method needs one: it was written by another method.")
      legacy = _LegacyTrainState(**{f: getattr(abstract, f) for f in _LEGACY_FIELDS})
      restored = self._manager.restore(int(step), args=ocp.args.StandardRestore(legacy))
      return TrainState(**{f: getattr(restored, f) for f in _LEGACY_FIELDS},
                        method_state=target.method_state)
    return self._manager.restore(int(step), args=ocp.args.StandardRestore(abstract))

  def _saved_keys(self, step: int) -> set[str]:
    """The top-level keys of the tree saved as checkpoint `step`."""
    item_path = os.path.join(self.directory, str(step), "default")
    with ocp.StandardCheckpointer() as checkpointer:
      tree = checkpointer.metadata(item_path).item_metadata.tree
    return set(tree) if isinstance(tree, dict) else set()

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _abstract(x):
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))


def restore_params(directory: str, step: int | None = None) -> dict[str, Any]:
  """Reads a checkpoint as a tree of numpy arrays, without a target (analysis, tests).

  Works whatever the number of devices it was saved from: the arrays are read onto one
  local device, with the structure, shapes and dtypes recorded in the checkpoint.
  """
  directory = os.path.abspath(directory)
  with ocp.CheckpointManager(directory,
                             options=ocp.CheckpointManagerOptions(read_only=True)) as manager:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No complete checkpoint in {directory}.")
    item_path = os.path.join(directory, str(step), "default")  # CheckpointManager's item
    with ocp.StandardCheckpointer() as checkpointer:
      tree = checkpointer.metadata(item_path).item_metadata.tree
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree.map(
          lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
      return jax.device_get(checkpointer.restore(item_path, target))


def checkpoint_steps(directory: str) -> list[int]:
  """The steps of the complete checkpoints in `directory`, ascending (reads only)."""
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    return []
  # Not `read_only=True`, which logs three warnings per use.
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      create=False, cleanup_tmp_directories=False,
      enable_async_checkpointing=False)) as manager:
    return sorted(int(s) for s in manager.all_steps())


def latest_checkpoint_step(directory: str) -> int | None:
  """The step of the newest complete checkpoint in `directory`, or None (reads only)."""
  steps = checkpoint_steps(directory)
  return steps[-1] if steps else None
