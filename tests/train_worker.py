"""Runs `train_and_evaluate` in a subprocess for the multi-device, multi-process and resume
tests.

  python tests/train_worker.py WORKDIR [--step_sleep=SECONDS] [--sigterm_at_step=N]
      [--config.x=y ...]

`--step_sleep` slows every step down (a hook), so that a test can kill the process
between two checkpoints. `--sigterm_at_step=N` sends SIGTERM to this process after step N
(what a preempting scheduler does; process 0 only when there are several). With
`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` set, the worker joins
`jax.distributed` as the CLIs do (`adacorr.parallel.initialize_distributed`; CPU collectives
over Gloo) and trains as one of the processes, each with its own devices and its own rows
of every batch.
Exits with the status the CLI gives (143 after a preemption).
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "tiny_synthetic.py"), "Config.")
flags.DEFINE_float("step_sleep", 0.0, "Seconds to sleep after each step.")
flags.DEFINE_integer("sigterm_at_step", 0, "> 0: SIGTERM to this process after this step.")
flags.DEFINE_bool("record_rows", False, "Write the training-set indices this process read "
                  "to WORKDIR/rows_<process_id>.npy (in the order read).")


class _Recording:
  """A `Source` that remembers every index it was asked for."""

  def __init__(self, source):
    self._source, self.read = source, []
    self.num_examples, self.image_shape = source.num_examples, source.image_shape
    self.num_classes = source.num_classes

  def get(self, indices):
    self.read.append(list(map(int, indices)))
    return self._source.get(indices)


def main(argv):
  import jax  # pylint: disable=import-outside-toplevel
  from adacorr import parallel  # pylint: disable=import-outside-toplevel
  FLAGS = flags.FLAGS
  if os.environ.get("JAX_NUM_PROCESSES"):
    parallel.initialize_distributed()
  from adacorr import run  # pylint: disable=import-outside-toplevel
  from adacorr.train import loop  # pylint: disable=import-outside-toplevel
  from adacorr import data as data_lib  # pylint: disable=import-outside-toplevel
  workdir = argv[1]
  recorded = []
  if FLAGS.record_rows:
    load = data_lib.load_dataset

    def load_recording(config, **kwargs):
      info, (train, *rest) = load(config, **kwargs)
      recorded.append(_Recording(train))
      return info, (recorded[-1], *rest)
    data_lib.load_dataset = load_recording
  hooks = []
  if FLAGS.step_sleep > 0:
    hooks.append(lambda step, state, metrics: time.sleep(FLAGS.step_sleep))
  if FLAGS.sigterm_at_step > 0 and jax.process_index() == 0:
    def sigterm(step, state, metrics):
      if step == FLAGS.sigterm_at_step:
        os.kill(os.getpid(), signal.SIGTERM)
    hooks.append(sigterm)
  try:
    summary = run.train_and_evaluate(FLAGS.config, workdir, hooks=hooks)
  except loop.Preempted as e:
    _save_rows(workdir, recorded)
    print(f"PREEMPTED at step {e.step}", flush=True)
    sys.exit(e.exit_status)
  _save_rows(workdir, recorded)
  print(f"FINISHED test_accuracy={summary['test_accuracy']!r} "
        f"test_examples={summary['test_examples']}", flush=True)


def _save_rows(workdir, recorded):
  import numpy as np  # pylint: disable=import-outside-toplevel
  if recorded:
    import jax  # pylint: disable=import-outside-toplevel
    np.save(os.path.join(workdir, f"rows_{jax.process_index()}.npy"),
            np.asarray(recorded[0].read, np.int64))


if __name__ == "__main__":
  app.run(main)
