r"""Robustness report of a trained classifier: clean, common corruptions, calibration.

  python -m experiments.evaluate --workdir=runs/fashion_mnist_quickstart \
      [--step=N] [--corruptions=generated|published|none] [--num_examples=N] [--output_dir=DIR]

Reads the run's `config.json` and latest checkpoint (or checkpoint `--step`) from
`--workdir` and writes to `--output_dir` (default `WORKDIR/report`, or
`WORKDIR/report_step<N>`): `report.json`, `report.md` (tables),
`corruption_heatmap.png` (accuracy per corruption x severity) and
`reliability_diagram.png`. Corrupted test sets are either the published tfds
`cifar10_corrupted` (`published`, CIFAR-10 only) or generated with
`adacorr.corruptions` and cached as `<dataset>-C` (`generated`, any dataset).

Adversarial robustness on the first test examples: l_p at `--linf_eps` / `--l2_eps`
(default per dataset: CIFAR-10 l_inf 1/255, 2/255 (the papers') and 8/255, l2 0.1 and 0.5
(RobustBench); Fashion-MNIST l_inf 8/255, 0.1 and l2 0.5, 1.5; see
`adacorr.evaluation.standard_radii`): PGD-20, PGD-100, APGD-CE/DLR and AutoAttack
(`--attacks=standard`: APGD-CE, APGD-T, FAB-T, Square; `fast`: APGD-CE + APGD-T), the
per-example worst case, gradient-masking warnings and `lp_robustness_curves.png`;
perceptual (Laidlaw et al. 2021): accuracy under LPA and PPGD at each LPIPS bound of
`--lpips_bounds`, the LPIPS distance computed on the classifier's own
layers (`--lpips_model=self`) or on another trained run's (`--lpips_model=WORKDIR`, e.g.
a `cifar_alexnet` run), plotted in `lpips_robustness_curve.png` (accuracy vs bound).
Noise robustness (Rusak et al. 2020): eps*_GN, the median smallest l2 norm of Gaussian
noise that flips the label, on `--noise_num_examples`.
"""

import dataclasses
import os

from absl import app, flags, logging
import jax

from adacorr import evaluation
from adacorr import parallel
from adacorr.evaluation.lp import check_radii
from adacorr.run import report as report_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints/).")
flags.DEFINE_integer("step", None, "The checkpoint evaluated (default: the latest).")
flags.DEFINE_string("output_dir", None, "Where the report goes (default: WORKDIR/report, "
                    "WORKDIR/report_step<N> with --step).")
flags.DEFINE_bool("download", False, "Let tfds download missing data (needs internet); "
                  "default: fail at once with where the data was looked for.")
flags.mark_flags_as_required(["workdir"])


def define_option_flags() -> dict[str, str]:
  """One flag per `report.ReportOptions` field (its default, help and kind; the flag is
  named by the field's `flag` metadata where it differs): the options are spelled once,
  there. Returns {flag name: option name}."""
  names = {}
  for field in dataclasses.fields(report_lib.ReportOptions):
    meta = field.metadata
    flag = meta.get("flag", field.name)
    default = field.default
    if meta["kind"] == "enum":
      flags.DEFINE_enum(flag, default, list(meta["choices"]), meta["help"])
    elif meta["kind"] == "list":
      flags.DEFINE_list(flag, None if default is None else list(default), meta["help"])
    else:
      getattr(flags, f"DEFINE_{meta['kind']}")(flag, default, meta["help"])
    names[flag] = field.name
  return names


OPTION_FLAGS = define_option_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if os.environ.get("ADACORR_DISTRIBUTED") == "1":  # several hosts: see BUILD.md
    parallel.initialize_distributed()
  for norm in ("linf", "l2"):  # bad radii fail now, not after the clean and corruption sections
    if FLAGS[f"{norm}_eps"].value:
      try:
        check_radii({norm: FLAGS[f"{norm}_eps"].value})
      except ValueError as e:
        raise app.UsageError(f"--{norm}_eps: {e}") from e
  try:
    report, names = report_lib.robustness_report(
        FLAGS.workdir, {option: FLAGS[flag].value for flag, option in OPTION_FLAGS.items()},
        step=FLAGS.step, download=FLAGS.download)
  except ValueError as e:  # a bad flag or workdir: the message names it
    raise app.UsageError(str(e)) from e
  output_dir = FLAGS.output_dir or os.path.join(
      FLAGS.workdir, "report" if FLAGS.step is None else f"report_step{FLAGS.step}")
  if jax.process_index() == 0:  # every process holds the global numbers; one writes
    print(evaluation.write_report(report, output_dir, names))
    print(f"Report written to {output_dir}")


if __name__ == "__main__":
  app.run(main)
