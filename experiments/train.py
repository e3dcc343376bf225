r"""Trains a classifier with any registered method and evaluates it.

  python -m experiments.train --config=experiments/configs/fashion_mnist_quickstart.py \
      --workdir=runs/quickstart [--config.num_epochs=2] [--data_dir=...]

Rerunning with the same --workdir resumes from the latest checkpoint (a different config is
an error naming the fields, unless --config.force_resume=True). SIGTERM (preemption) saves a
checkpoint at the next step, in every process, and exits with status 143. `--help` lists
the configs and the methods.

Before anything is read or trained, the config is checked against the schema of
experiments/configs/default.py (`experiments.configs.schema.check_classifier_config`): a
misspelt key, in the file or on the command line, an unknown method / model / dataset or a
bad value (e.g. a negative learning rate) is an error naming it.
"""

import glob
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from adacorr import methods
from adacorr import parallel
from adacorr import run
from adacorr.train import loop
from experiments.configs import default as default_config
from experiments.configs import schema

_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def _is_config_module(path: str) -> bool:
  """A config module of experiments/configs (defines `get_config`; not a helper)."""
  if os.path.basename(path).startswith("_"):
    return False
  with open(path, encoding="utf-8") as f:
    return "def get_config" in f.read()


_CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(_CONFIG_DIR, "*.py"))
                  if _is_config_module(p))

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, experiments/configs/<name>.py; names: "
    + ", ".join(_CONFIGS) + ". Methods (config.method): " + ", ".join(sorted(methods.FACTORIES))
    + ".", lock_config=True)
# Method scripts (e.g. experiments/cifar10_rlat.py) reuse this module's flags and main()
# with their own default config.
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the summary.")
flags.DEFINE_string("data_dir", None, "Overrides config.data_dir (the tfds data_dir; for "
                    "fashion_mnist, also the directory of its IDX files).")
# --config and --workdir are required, checked in `checked_config` (not by an absl validator:
# that would hold in every process that imports this module, e.g. beside another CLI).


def checked_config():
  """FLAGS.config with --data_dir applied, checked (`schema.check_classifier_config`)
  before anything is read or trained; FLAGS.workdir checked too.

  Raises:
    app.UsageError: naming the flag, or the config file and the key, and what is wrong.
  """
  config = schema.load_config(FLAGS)
  schema.check_workdir(FLAGS.workdir)
  if FLAGS.data_dir is not None and not FLAGS.data_dir.strip():
    raise app.UsageError(f"--data_dir={FLAGS.data_dir!r} is empty: give the data directory, "
                         "or leave the flag out.")
  if FLAGS.data_dir:
    with config.unlocked():
      config.data_dir = FLAGS.data_dir
      if config.get("dataset") == "fashion_mnist":
        config.fashion_mnist_dir = FLAGS.data_dir
  try:
    schema.check_classifier_config(config)
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
  if config.get("deepaugment_dirs"):  # DeepAugment configs: the copies, made on first use
    from experiments import make_deepaugment  # pylint: disable=import-outside-toplevel
    make_deepaugment.ensure_copies(config)
  try:
    run.train_and_evaluate(config, FLAGS.workdir)
  except loop.NonFiniteLossError as e:
    logging.error("%s", e)
    print(f"ERROR: {e}", file=sys.stderr)
    sys.exit(1)
  except loop.Preempted as e:  # SIGTERM: the checkpoint is saved; rerun to resume
    print(str(e), file=sys.stderr)
    sys.exit(e.exit_status)


def run_with_default_config(config_name: str, main_fn=main) -> None:
  """Runs `main_fn` with `--config` defaulting to experiments/configs/<config_name>.py."""
  if not any(a == "--config" or a.startswith("--config=") for a in sys.argv[1:]):
    sys.argv.insert(1, f"--config={os.path.join(_CONFIG_DIR, config_name + '.py')}")
  app.run(main_fn, flags_parser=FLAGS_PARSER)


# A --config.KEY override of a key the config lacks: a flags error with a "did you mean".
FLAGS_PARSER = schema.flags_parser(default_config.FREE_FORM)

if __name__ == "__main__":
  app.run(main, flags_parser=FLAGS_PARSER)
