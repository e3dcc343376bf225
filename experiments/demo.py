r"""`make demo`: nominal training vs AdA(EDSR) on real Fashion-MNIST, side by side.

  python -m experiments.demo [--workdir=runs/demo] [--num_examples=2000] \
      [--num_examples=1000] [--lp_num_examples=100] [--figure_examples=256]

Trains (or reuses) two runs with the same SmallCNN, data, standard augmentation, steps,
batch, schedule and seed:
  WORKDIR/nominal    configs/fashion_mnist_ada_nominal.py
  WORKDIR/ada_edsr   configs/fashion_mnist_ada.py (its tiny EDSR is pretrained on first
                     use into runs/corruption_nets/fashion_mnist_edsr_tiny)
then evaluates both on the test split (clean accuracy on the first --num_examples test
images, the generated Fashion-MNIST-C on the same images, l_inf PGD-20, APGD-CE/DLR and
AutoAttack-fast (APGD-CE + APGD-T at --aa_steps iterations) on the first
--lp_num_examples) and writes
  WORKDIR/comparison.md, .json   the side-by-side table (also printed)
  WORKDIR/ada_ssim.png, .json    Figure 2 of the AdA run: SSIM(clean, AdA image) per nu,
                                 the unperturbed EDSR included
  WORKDIR/<run>/report/          each run's full report (heatmap, reliability diagram)
A second call reuses the finished runs and reports. The paper's claim the table tests:
AdA(EDSR) keeps clean accuracy within about 2 points of nominal training and raises
corruption accuracy (Calian et al. 2022, Table 1).
"""

import json
import math
import os
import time

from absl import app, flags, logging

from adacorr.core.radius import parse_radius
from adacorr.evaluation import comparison
from adacorr.run import ensure_trained
from adacorr.run import report as report_lib
from experiments.configs import fashion_mnist_ada, fashion_mnist_ada_nominal
from experiments.configs import schema

DEFAULT_WORKDIR = "runs/demo"
if "workdir" not in flags.FLAGS:  # shared with experiments/train.py in one (test) process
  flags.DEFINE_string("workdir", DEFAULT_WORKDIR, "Where the two runs and the comparison go.")
flags.DEFINE_integer("num_examples", 1000, "Test images for clean and corruption accuracy "
                     "(the generated Fashion-MNIST-C: 75 sets of them).")
flags.DEFINE_integer("lp_num_examples", 100, "Test images attacked (l_inf).")
flags.DEFINE_list("linf_eps", ["1/255", "2/255"], "l_inf radii.")
flags.DEFINE_integer("figure_examples", 256, "Test images of the Figure 2 SSIM plot.")
# AutoAttack-standard (APGD-CE, APGD-T, FAB-T, Square; ~2,000 gradient evaluations per
# example and four compilations per model) does not fit the 10-minute demo: it runs the
# 'fast' version (APGD-CE + APGD-T) at a fifth of the iterations. `python -m
# experiments.evaluate` runs the full standard version by default; benchmarks/RESULTS.md
# has its numbers for these models.
flags.DEFINE_integer("aa_steps", 20, "AutoAttack's APGD iterations (reference: 100).")
flags.DEFINE_integer("square_queries", 1000, "Square's queries (unused by 'fast').")
FLAGS = flags.FLAGS

RUNS = (("nominal", fashion_mnist_ada_nominal), ("ada_edsr", fashion_mnist_ada))


def check_args(*, workdir, num_examples, lp_num_examples, linf_eps, figure_examples,
               aa_steps, square_queries) -> list[float]:
  """The flags' values, before anything is trained: --workdir (a non-empty path),
  --num_examples and --lp_num_examples (>= 0; 0: all test images / no attacks),
  --figure_examples, --aa_steps and --square_queries (>= 1), and --linf_eps (radii like
  '2/255' or '0.01', each finite and in (0, 1]); returns the radii as floats.

  Raises:
    app.UsageError: naming the flag, the value given and what is expected.
  """
  schema.check_workdir(workdir)
  for flag, value, zero in (("num_examples", num_examples, "all test images"),
                            ("lp_num_examples", lp_num_examples, "no l_inf attacks")):
    if value is None or value < 0:
      raise app.UsageError(f"--{flag}={value} must be >= 0 (0: {zero}).")
  for flag, value in (("figure_examples", figure_examples), ("aa_steps", aa_steps),
                      ("square_queries", square_queries)):
    if value is None or value < 1:
      raise app.UsageError(f"--{flag}={value} must be >= 1.")
  if not linf_eps:
    raise app.UsageError("--linf_eps is empty: give l_inf radii such as 1/255,2/255.")
  radii = []
  for text in linf_eps:
    try:
      eps = parse_radius(text, "--linf_eps")
    except ValueError as e:
      raise app.UsageError(str(e)) from e
    if not (math.isfinite(eps) and 0 < eps <= 1):
      raise app.UsageError(f"--linf_eps={text!r} must be a radius in (0, 1] (images are in "
                           "[0, 1]), e.g. 2/255.")
    radii.append(eps)
  return radii


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  start = time.time()
  workdir = FLAGS.workdir if FLAGS.workdir is not None else DEFAULT_WORKDIR
  check_args(workdir=workdir, num_examples=FLAGS.num_examples,
             lp_num_examples=FLAGS.lp_num_examples, linf_eps=FLAGS.linf_eps,
             figure_examples=FLAGS.figure_examples, aa_steps=FLAGS.aa_steps,
             square_queries=FLAGS.square_queries)
  for name, module in RUNS:
    try:
      schema.check_classifier_config(module.get_config())
    except ValueError as e:
      raise app.UsageError(f"{module.__name__} (run {name!r}): {e}") from e
  options = dict(corruptions="generated", extra=False, num_examples=FLAGS.num_examples,
                 corrupted_dir=os.path.join(workdir, f"fashion_mnist-C-{FLAGS.num_examples}"),
                 linf_eps=list(FLAGS.linf_eps), l2_eps=[],
                 lp_num_examples=FLAGS.lp_num_examples, noise_num_examples=0,
                 lpips_bounds=[], autoattack="fast", aa_steps=FLAGS.aa_steps,
                 square_queries=FLAGS.square_queries, masking_steps=0)
  rows = {}

  def elapsed():
    return f"[{time.time() - start:.0f} s]"

  for name, module in RUNS:
    run_dir = os.path.join(workdir, name)
    summary, reused = ensure_trained(module.get_config(), run_dir)
    print(f"{elapsed()} [{name}] {'reused' if reused else 'trained'}: {summary['steps']} "
          f"steps, test accuracy {100 * summary['test_accuracy']:.2f}%", flush=True)
    report, _, reused = report_lib.ensure_report(run_dir, **options)
    print(f"{elapsed()} [{name}] report {'reused' if reused else 'written'}: "
          f"{os.path.join(run_dir, 'report')}", flush=True)
    rows[name] = comparison.comparison_row(report)

  figure = os.path.join(workdir, "ada_ssim.png")
  print(f"{elapsed()} [ada_edsr] Figure 2: SSIM(clean, AdA image) before the line search",
        flush=True)
  ssim = report_lib.ada_ssim_figure(os.path.join(workdir, "ada_edsr"), figure,
                                    nu_fractions=(0.5, 1.0), num_examples=FLAGS.figure_examples)

  config = fashion_mnist_ada.get_config()
  title = (f"Nominal vs AdA(EDSR) on Fashion-MNIST: SmallCNN, {config.num_steps} steps of "
           f"{config.global_batch_size}, seed {config.seed}; accuracies (%) on the first "
           f"{FLAGS.num_examples} test images, generated Fashion-MNIST-C (15 corruptions x 5 "
           f"severities; mCE unnormalised, lower is better), l_inf = worst case of PGD-20, "
           f"APGD-CE/DLR and AutoAttack-fast; the AutoAttack-fast column alone is named by "
           f"what ran (APGD-CE + APGD-T, 9 targets, {FLAGS.aa_steps} iterations each; the "
           f"reference: 100), on the first {FLAGS.lp_num_examples}")
  table = comparison.format_comparison(rows, title=title)
  nominal, ada = rows["nominal"], rows["ada_edsr"]
  verdict = (f"AdA(EDSR) - nominal: clean {100 * (ada['clean'] - nominal['clean']):+.2f} "
             f"points (paper: within ~2), -C mean accuracy "
             f"{100 * (ada['c_mean'] - nominal['c_mean']):+.2f} points, mCE "
             f"{ada['mce'] - nominal['mce']:+.2f} (paper: lower).")
  edsr = ssim["ssim"][next(iter(ssim["ssim"]))]
  figure_line = ("Figure 2 (mean SSIM to the clean image): " + ", ".join(
      f"{'unperturbed' if float(nu) == 0 else f'nu={float(nu):g}'} {s['mean']:.3f}"
      for nu, s in edsr.items()) + f" -> {figure}")
  text = "\n\n".join([table, verdict, figure_line])
  with open(os.path.join(workdir, "comparison.md"), "w", encoding="utf-8") as f:
    f.write(text + "\n")
  with open(os.path.join(workdir, "comparison.json"), "w", encoding="utf-8") as f:
    json.dump({"rows": rows, "ssim": ssim["ssim"], "options": options}, f, indent=2)
  print()
  print(text)
  print(f"\nWritten to {workdir} in {time.time() - start:.0f} s.")


if __name__ == "__main__":
  app.run(main)
