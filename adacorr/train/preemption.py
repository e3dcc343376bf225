"""Preemption: SIGTERM makes a run checkpoint at the next step boundary and stop.

A preempting scheduler (spot/preemptible TPU and GPU VMs, SLURM's `--signal`, Kubernetes)
sends SIGTERM and kills the process some seconds later. `PreemptionWatch.reached(step)`,
asked once per step by the loop, turns the signal into a step at which to save:

- With `jax.distributed` initialised (several processes), JAX's preemption notifier
  catches SIGTERM in whichever process receives it and its coordination service picks
  one step for all of them (`jax.experimental.multihost_utils.
  reached_preemption_sync_point`): every process saves the same step together, which a
  multi-process checkpoint needs (each writes its shards, then they agree).
- Otherwise a Python handler sets a flag, and the next step boundary saves.

The loop then saves a checkpoint at that step, waits for it, and raises `Preempted`; the
CLIs exit with status 143 (128 + SIGTERM, what the scheduler would have seen anyway), so
a rerun of the same command resumes exactly (see `adacorr.train.loop`).
"""

from __future__ import annotations

import signal
import threading

import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
  """The run received SIGTERM and saved a checkpoint at `step`; rerun to resume."""

  exit_status = 128 + signal.SIGTERM

  def __init__(self, step: int, directory: str):
    self.step, self.directory = int(step), directory
    super().__init__(f"Preempted (SIGTERM): saved a checkpoint at step {step} in {directory}; "
                     "rerun the same command to resume from it.")


class PreemptionWatch:
  """Watches for SIGTERM over a run; `close()` restores the previous handler."""

  def __init__(self):
    self._signalled = False
    self._previous = None
    self.synced = jax.distributed.is_initialized()
    if not self.synced and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self._signalled = True

  def reached(self, step: int) -> bool:
    """Whether to save and stop after `step` (every process gets the same answer when
    called at every step with the same `step`)."""
    if self.synced:
      return bool(multihost_utils.reached_preemption_sync_point(int(step)))
    return self._signalled

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
