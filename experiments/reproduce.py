r"""Reproduce the papers' tables: every method of a suite at an equal budget over seeds.

  python -m experiments.reproduce --suite=fashion_mnist [--quick] [--seeds=3] \
      [--methods=l2_at,rlat] [--workdir=runs/reproduce/fashion_mnist] [--jobs=1]
  python -m experiments.reproduce --suite=cifar10 --dry_run   # configs resolve, print them
  python -m experiments.reproduce --suite=fashion_mnist --table_only  # the table so far

Trains each run of the suite (`experiments/configs/suites.py`) with the same model, data,
steps, batch, schedule and seeds, evaluates every run with the same robustness report,
and writes to --workdir: table.md / table.json (mean ± std per column over seeds, the best
in bold, the papers' orderings checked), bars.png (with 95% confidence intervals) and
heatmap.png (run x corruption). Finished runs are reused and interrupted ones resume, so
rerunning a killed suite continues it; --jobs runs several runs in parallel processes.
"""

import json
import os
import sys
import time

from absl import app, flags, logging
import ml_collections

from adacorr.run import corruption_nets
from adacorr.run import reproduce
from experiments.configs import suites

from experiments.configs import schema

flags.DEFINE_enum("suite", "fashion_mnist", sorted(suites.SUITES), "The suite.")
flags.DEFINE_bool("quick", False, "Only the suite's quick subset, 1 seed (unless --seeds).")
flags.DEFINE_integer("seeds", None, "Seeds 0..N-1 (default 3; 1 with --quick).")
flags.DEFINE_list("methods", None, "Only these runs (and the baseline).")
if "workdir" not in flags.FLAGS:  # shared with experiments/train.py in one (test) process
  flags.DEFINE_string("workdir", None, "Default: runs/reproduce/<suite>[_quick].")
flags.DEFINE_integer("jobs", 1, "Runs trained in parallel processes.")
flags.DEFINE_bool("dry_run", False, "Resolve every config and print the plan; train nothing.")
flags.DEFINE_bool("table_only", False, "Write the table and plots from the runs finished so "
                  "far (e.g. of a suite still running); train and evaluate nothing.")
flags.DEFINE_string("member", None, "Internal (--jobs): run only NAME:SEED.")
FLAGS = flags.FLAGS


def check_args(*, seeds, jobs, workdir, member, methods) -> None:
  """The flags' values, before any config is built: --seeds (None or >= 1), --jobs
  (>= 1), --workdir (None or a non-empty path), --member ('NAME:SEED', SEED an int >= 0),
  --methods (no empty name).

  Raises:
    app.UsageError: naming the flag, the value given and what is expected.
  """
  if seeds is not None and seeds < 1:
    raise app.UsageError(f"--seeds={seeds} must be >= 1 (seeds 0..N-1; leave it out for "
                         "the default: 3, or 1 with --quick).")
  if jobs is None or jobs < 1:
    raise app.UsageError(f"--jobs={jobs} must be >= 1 (runs trained in parallel).")
  schema.check_workdir(workdir, required=False)
  if methods is not None and (not methods or any(not m.strip() for m in methods)):
    raise app.UsageError(f"--methods={','.join(methods)!r} has an empty run name; give a "
                         "comma-separated list of the suite's runs.")
  if member is not None:
    name, sep, seed = member.rpartition(":")
    if not sep or not name or not seed.isdigit():
      raise app.UsageError(f"--member={member!r} must be NAME:SEED, e.g. 'rlat:0' (an "
                           "internal flag of --jobs).")


def check_suite_configs(suite_name: str, configs) -> None:
  """Every run's config against the schema (`schema.check_classifier_config`), before
  anything is trained.

  Raises:
    app.UsageError: naming the run, the key and what is wrong.
  """
  for name, config in configs.items():
    try:
      schema.check_classifier_config(config)
    except ValueError as e:
      raise app.UsageError(f"suite {suite_name!r}, run {name!r}: {e}") from e


def _plan():
  check_args(seeds=FLAGS.seeds, jobs=FLAGS.jobs, workdir=FLAGS.workdir, member=FLAGS.member,
             methods=FLAGS.methods)
  suite = suites.get_suite(FLAGS.suite, quick=FLAGS.quick, methods=FLAGS.methods)
  check_suite_configs(FLAGS.suite, suite["configs"])
  num_seeds = FLAGS.seeds or (1 if FLAGS.quick else 3)
  workdir = FLAGS.workdir if FLAGS.workdir is not None else os.path.join(
      "runs", "reproduce", FLAGS.suite + ("_quick" if FLAGS.quick else ""))
  return suite, list(range(num_seeds)), workdir


def _member_command(name, seed):
  argv = [sys.executable, "-m", "experiments.reproduce", f"--suite={FLAGS.suite}",
          f"--workdir={_plan()[2]}", f"--member={name}:{seed}"]
  if FLAGS.quick:
    argv.append("--quick")
  if FLAGS.methods:
    argv.append("--methods=" + ",".join(FLAGS.methods))
  return argv


def _prepare(config) -> None:
  """What a run needs on disk before it trains: AdA's pretrained corruption nets and
  DeepAugment's stored copies of the training set (each made on first use)."""
  for spec in config.method_kwargs.get("backbones", ()):
    if spec.get("workdir") and spec.get("pretrain") is not None:
      corruption_nets.ensure_pretrained(ml_collections.ConfigDict(dict(spec["pretrain"])),
                                        spec["workdir"])
  if config.get("deepaugment_dirs"):
    from experiments import make_deepaugment  # pylint: disable=import-outside-toplevel
    make_deepaugment.ensure_copies(config)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    suite, seeds, workdir = _plan()
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  configs, baseline = suite["configs"], suite["baseline"]
  if FLAGS.dry_run:
    for name, config in configs.items():
      steps = config.get("num_steps", -1)  # > 0 overrides num_epochs (train.loop)
      budget = f"{steps} steps" if steps > 0 else f"{config.get('num_epochs')} epochs"
      print(f"{name}: {config.method} on {config.dataset}, {config.model}, "
            f"{budget} of {config.global_batch_size}")
    print(f"{len(configs)} runs x {len(seeds)} seeds -> {workdir}")
    return
  if not FLAGS.table_only:
    reproduce.enable_compilation_cache(workdir)
  if FLAGS.member:
    name, seed = FLAGS.member.rsplit(":", 1)
    if name not in configs:
      raise app.UsageError(f"--member={FLAGS.member!r}: {name!r} is not a run of suite "
                           f"{FLAGS.suite!r} (runs: {sorted(configs)}).")
    _prepare(configs[name])  # done already by the parent; only checks
    r = reproduce.run_member(name, configs[name], int(seed), workdir, suite["report"],
                             baseline=baseline)
    print(reproduce.MEMBER_LINE.format(**r), flush=True)  # read by the parent
    return
  os.makedirs(workdir, exist_ok=True)
  tic = time.time()
  if not FLAGS.table_only:
    for config in configs.values():  # once here, not by two parallel members at once
      _prepare(config)
    print(f"{FLAGS.suite}: {len(configs)} runs x {len(seeds)} seeds -> {workdir}", flush=True)
    _run(configs, seeds, workdir, suite, baseline)
  _write(configs, seeds, workdir, suite, baseline, tic)


def _run(configs, seeds, workdir, suite, baseline):
  reproduce.run_suite(configs, seeds, workdir, suite["report"], baseline=baseline,
                      jobs=FLAGS.jobs, command=_member_command,
                      log=lambda line: print(line, flush=True))


def _write(configs, seeds, workdir, suite, baseline, tic):
  results = reproduce.suite_results(list(configs), seeds, workdir, baseline=baseline)
  command = "python -m experiments.reproduce " + " ".join(sys.argv[1:])
  markdown = reproduce.write_suite(
      workdir, results, title=f"Suite {FLAGS.suite}", reference=suite["reference"],
      claims=suite["claims"], notes=suite.get("notes"),
      extra={"command": command, "wall_seconds_this_call": time.time() - tic,
             "budget": {n: {k: c.get(k) for k in ("num_steps", "global_batch_size", "model")}
                        for n, c in configs.items()}})
  print(markdown)
  print(f"wrote {os.path.join(workdir, 'table.md')} ({time.time() - tic:.0f} s)")
  with open(os.path.join(workdir, "configs.json"), "w", encoding="utf-8") as f:
    json.dump({n: json.loads(c.to_json_best_effort()) for n, c in configs.items()}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
