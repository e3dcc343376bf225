"""Runs `train_and_evaluate` in a subprocess for the multi-device and resume tests.

  python tests/train_worker.py WORKDIR [--step_sleep=SECONDS] [--config.x=y ...]

`--step_sleep` slows every step down (a hook), so that a test can kill the process
between two checkpoints.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from adacorr import run  # noqa: E402

config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "tiny_synthetic.py"), "Config.")
flags.DEFINE_float("step_sleep", 0.0, "Seconds to sleep after each step.")


def main(argv):
  workdir = argv[1]
  hooks = []
  if flags.FLAGS.step_sleep > 0:
    hooks.append(lambda step, state, metrics: time.sleep(flags.FLAGS.step_sleep))
  run.train_and_evaluate(flags.FLAGS.config, workdir, hooks=hooks)


if __name__ == "__main__":
  app.run(main)
