r"""Pretrains an AdA corruption net (EDSR, CAE, VQ-VAE or U-Net) and evaluates it.

  python -m experiments.train_corruption_net \
      --config=experiments/configs/corruption_nets/fashion_mnist_edsr_tiny.py \
      --workdir=runs/corruption_nets/fashion_mnist_edsr_tiny [--config.num_epochs=2] \
      [--data_dir=...] [--fashion_mnist_dir=...]

Rerunning with the same --workdir resumes from the latest checkpoint. The run writes
`config.json`, `metrics.jsonl`, `checkpoints/` and `summary.json` (test PSNR/SSIM) to the
workdir; `adacorr.run.load_corruption_net(workdir)` loads the net.

Before anything is read or trained, the config is checked against the schema of
experiments/configs/corruption_nets/__init__.py (`experiments.configs.schema.
check_corruption_net_config`): a misspelt key, in the file or on the command line, or a
bad value is an error naming it.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from adacorr import parallel
from adacorr.train import corruption_nets, loop
from experiments.configs import corruption_nets as corruption_net_defaults
from experiments.configs import schema

FLAGS = flags.FLAGS
# Guarded, so this module can share a process with experiments/train.py (same flag names).
if "config" not in FLAGS:
  config_flags.DEFINE_config_file("config", None, "Corruption-net config file "
                                  "(experiments/configs/corruption_nets/*.py).",
                                  lock_config=True)
if "workdir" not in FLAGS:
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the summary.")
if "data_dir" not in FLAGS:
  flags.DEFINE_string("data_dir", None, "Overrides config.data_dir (the tfds data_dir; for "
                      "fashion_mnist, also the directory of its IDX files).")
if "fashion_mnist_dir" not in FLAGS:
  flags.DEFINE_string("fashion_mnist_dir", None, "Overrides config.fashion_mnist_dir (the "
                      "directory of the four Fashion-MNIST IDX .gz files).")


def checked_config():
  """FLAGS.config with --data_dir / --fashion_mnist_dir applied, checked
  (`schema.check_corruption_net_config`) before anything is read or trained; FLAGS.workdir
  checked too.

  Raises:
    app.UsageError: naming the flag, or the config file and the key, and what is wrong.
  """
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required.")
  config = schema.load_config(FLAGS)
  schema.check_workdir(FLAGS.workdir)
  for name in ("data_dir", "fashion_mnist_dir"):
    if FLAGS[name].value is not None and not FLAGS[name].value.strip():
      raise app.UsageError(f"--{name}={FLAGS[name].value!r} is empty: give the directory, or "
                           "leave the flag out.")
  with config.unlocked():
    if FLAGS.data_dir:
      config.data_dir = FLAGS.data_dir
      if config.get("dataset") == "fashion_mnist":
        config.fashion_mnist_dir = FLAGS.data_dir
    if FLAGS.fashion_mnist_dir:
      config.fashion_mnist_dir = FLAGS.fashion_mnist_dir
  try:
    schema.check_corruption_net_config(config)
  except ValueError as e:
    raise app.UsageError(f"--config={schema.config_filename(FLAGS)}: {e}") from e
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # orbax logs every file it writes at INFO
    logging.set_verbosity(logging.WARNING)
  config = checked_config()
  if os.environ.get("ADACORR_DISTRIBUTED") == "1":  # several hosts: see BUILD.md
    parallel.initialize_distributed()
  try:
    corruption_nets.pretrain(config, FLAGS.workdir)  # app.run exits with main's value
  except loop.NonFiniteLossError as e:
    logging.error("%s", e)
    print(f"ERROR: {e}", file=sys.stderr)
    sys.exit(1)
  except loop.Preempted as e:  # SIGTERM: the checkpoint is saved; rerun to resume
    print(str(e), file=sys.stderr)
    sys.exit(e.exit_status)


if __name__ == "__main__":
  app.run(main, flags_parser=schema.flags_parser(corruption_net_defaults.FREE_FORM))
