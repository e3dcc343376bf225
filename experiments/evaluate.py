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

import os

from absl import app, flags, logging
import jax

from adacorr import evaluation
from adacorr import parallel
from adacorr.evaluation.lp import check_radii
from adacorr.run import report as report_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints/).")
flags.DEFINE_enum("corruptions", "generated", ["generated", "published", "none"],
                  "Corrupted test sets: generated with adacorr.corruptions, the published "
                  "tfds cifar10_corrupted, or none.")
flags.DEFINE_bool("extra", True, "Also evaluate the 4 extra corruptions (not in the mCE).")
flags.DEFINE_list("corruption_names", None, "Evaluate only these corruptions (default: the 15 "
                  "benchmark ones, plus the extras with --extra); the mCE needs all 15.")
flags.DEFINE_string("corrupted_dir", None, "Cache of the generated <dataset>-C "
                    "(default: WORKDIR/<dataset>-C).")
flags.DEFINE_integer("step", None, "The checkpoint evaluated (default: the latest).")
flags.DEFINE_string("output_dir", None, "Where the report goes (default: WORKDIR/report, "
                    "WORKDIR/report_step<N> with --step).")
flags.DEFINE_integer("num_examples", 0, "Evaluate on the first N test examples (0: all).")
flags.DEFINE_integer("batch_size", 500, "Evaluation batch size (global).")
flags.DEFINE_integer("seed", 0, "Seed of the generated corruptions.")
flags.DEFINE_list("linf_eps", None, "l_inf radii (fractions ok; default: the dataset's "
                  "standard radii, e.g. CIFAR-10 1/255,2/255,8/255; empty: none).")
flags.DEFINE_list("l2_eps", None, "l2 radii (default: the dataset's, e.g. CIFAR-10 0.1,0.5).")
flags.DEFINE_enum("attacks", "standard", ["standard", "fast", "none"],
                  "AutoAttack version beside PGD/APGD: standard (APGD-CE, APGD-T, FAB-T, "
                  "Square; the RobustBench number), fast (APGD-CE + APGD-T, a quick look) "
                  "or none.")
flags.DEFINE_integer("masking_steps", 100, "Steps of the PGD run compared with PGD-"
                     "--pgd_steps in the gradient-masking check (0: skip).")
flags.DEFINE_integer("aa_steps", 100, "AutoAttack's APGD and FAB iterations (reference 100).")
flags.DEFINE_integer("square_queries", 5000, "Square's queries (reference 5000).")
flags.DEFINE_integer("aa_targets", 9, "AutoAttack's APGD-T and FAB-T target classes "
                     "(reference 9).")
flags.DEFINE_integer("lp_num_examples", 1000, "Test examples attacked (0: none, skip l_p).")
flags.DEFINE_integer("pgd_steps", 20, "PGD steps (step size 2.5 eps / steps, random start).")
flags.DEFINE_integer("apgd_steps", 50, "APGD steps (CE and DLR losses; 0: skip them).")
flags.DEFINE_integer("noise_num_examples", None, "Test examples for the Gaussian-noise "
                     "robustness eps* (Rusak et al. 2020; default: --lp_num_examples; 0: skip).")
flags.DEFINE_integer("an_steps", 200, "Adam steps of eps*_AN's noise generator (0: skip "
                     "eps*_AN).")
flags.DEFINE_integer("an_batch_size", 128, "Batch of eps*_AN's generator training.")
flags.DEFINE_list("lpips_bounds", ["0.25", "0.5", "1.0"],
                  "LPIPS bounds for LPA (fractions ok; empty: skip the perceptual section).")
flags.DEFINE_string("lpips_model", "self", "LPIPS network: 'self' (the evaluated classifier's "
                    "own LPIPS layers) or a training workdir of another run (e.g. a "
                    "cifar_alexnet run) whose layers bound the attack.")
flags.DEFINE_integer("lpa_num_examples", None, "Test examples attacked by LPA (default: half "
                     "of --lp_num_examples, rounded up; 0: skip the perceptual section).")
flags.DEFINE_integer("lpa_steps", 40, "LPA steps per lambda round (the paper evaluates with 40).")
flags.DEFINE_integer("lpa_lambda_steps", 5, "LPA lambda rounds (the paper's S = 5).")
flags.DEFINE_enum("lpa_projection", "newton", ["newton", "bisection"],
                  "LPA's final projection onto the LPIPS ball.")
flags.DEFINE_bool("download", False, "Let tfds download missing data (needs internet); "
                  "default: fail at once with where the data was looked for.")
flags.mark_flags_as_required(["workdir"])


OPTIONS = ("corruptions", "extra", "corruption_names", "corrupted_dir", "num_examples",
           "batch_size", "seed", "linf_eps", "l2_eps", "lp_num_examples", "pgd_steps",
           "apgd_steps", "masking_steps", "aa_steps", "square_queries", "aa_targets",
           "noise_num_examples", "an_steps", "an_batch_size",
           "lpips_bounds", "lpips_model",
           "lpa_num_examples", "lpa_steps", "lpa_lambda_steps", "lpa_projection", "download")


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
        FLAGS.workdir, step=FLAGS.step, autoattack=FLAGS.attacks,
        **{name: FLAGS[name].value for name in OPTIONS})
  except ValueError as e:  # a bad flag or workdir: the message names it
    raise app.UsageError(str(e)) from e
  output_dir = FLAGS.output_dir or os.path.join(
      FLAGS.workdir, "report" if FLAGS.step is None else f"report_step{FLAGS.step}")
  if jax.process_index() == 0:  # every process holds the global numbers; one writes
    print(evaluation.write_report(report, output_dir, names))
    print(f"Report written to {output_dir}")


if __name__ == "__main__":
  app.run(main)
