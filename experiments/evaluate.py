r"""Robustness report of a trained classifier: clean, common corruptions, calibration.

  python -m experiments.evaluate --workdir=runs/fashion_mnist_quickstart \
      [--corruptions=generated|published|none] [--num_examples=N] [--output_dir=DIR]

Reads the run's `config.json` and latest checkpoint from `--workdir` and writes to
`--output_dir` (default `WORKDIR/report`): `report.json`, `report.md` (tables),
`corruption_heatmap.png` (accuracy per corruption x severity) and
`reliability_diagram.png`. Corrupted test sets are either the published tfds
`cifar10_corrupted` (`published`, CIFAR-10 only) or generated with
`adacorr.corruptions` and cached as `<dataset>-C` (`generated`, any dataset).

Adversarial robustness on the first test examples: l_p (PGD, APGD-CE/DLR at
`--linf_eps` / `--l2_eps`) and perceptual (Laidlaw et al. 2021): accuracy under LPA at
each LPIPS bound of `--lpips_bounds`, the LPIPS distance computed on the classifier's own
layers (`--lpips_model=self`) or on another trained run's (`--lpips_model=WORKDIR`, e.g.
a `cifar_alexnet` run), plotted in `lpips_robustness_curve.png` (accuracy vs bound).
Noise robustness (Rusak et al. 2020): eps*_GN, the median smallest l2 norm of Gaussian
noise that flips the label, on `--noise_num_examples`.
"""

import os

from absl import app, flags, logging

from adacorr import data as data_lib
from adacorr import evaluation
from adacorr import parallel
from adacorr import perceptual
from adacorr.run import load_classifier

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
flags.DEFINE_string("output_dir", None, "Where the report goes (default: WORKDIR/report).")
flags.DEFINE_integer("num_examples", 0, "Evaluate on the first N test examples (0: all).")
flags.DEFINE_integer("batch_size", 500, "Evaluation batch size (global).")
flags.DEFINE_integer("seed", 0, "Seed of the generated corruptions.")
flags.DEFINE_list("linf_eps", ["1/255", "2/255"], "l_inf radii for PGD/APGD (fractions ok).")
flags.DEFINE_list("l2_eps", ["0.1"], "l2 radii for PGD/APGD.")
flags.DEFINE_integer("lp_num_examples", 1000, "Test examples attacked (0: none, skip l_p).")
flags.DEFINE_integer("pgd_steps", 20, "PGD steps (step size 2.5 eps / steps, random start).")
flags.DEFINE_integer("apgd_steps", 50, "APGD steps (CE and DLR losses).")
flags.DEFINE_integer("noise_num_examples", None, "Test examples for the Gaussian-noise "
                     "robustness eps* (Rusak et al. 2020; default: --lp_num_examples; 0: skip).")
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


def load_run(workdir, flag="--workdir"):
  """(config, dataset info, model, eval variables, step) of a training workdir."""
  try:
    model, variables, config, step = load_classifier(workdir)
  except FileNotFoundError as e:
    raise app.UsageError(f"{flag} must be a training workdir: {e}") from e
  return config, data_lib.DATASETS[config.dataset], model, variables, step


def lpips_network(config, info, model):
  """(features_fn or None for self, display name, layer names) of --lpips_model."""
  if FLAGS.lpips_model == "self":
    try:
      layers = perceptual.lpips_layers(model)
    except ValueError as e:
      raise app.UsageError(f"--lpips_model=self: {e}") from e
    return None, f"{config.model} (self: {', '.join(layers)})", layers
  net_config, net_info, net_model, net_variables, _ = load_run(FLAGS.lpips_model,
                                                               "--lpips_model")
  if tuple(net_info.image_shape) != tuple(info.image_shape):
    raise app.UsageError(
        f"--lpips_model={FLAGS.lpips_model} takes {net_config.dataset} images "
        f"{tuple(net_info.image_shape)}, the evaluated run {config.dataset} images "
        f"{tuple(info.image_shape)}.")
  layers = perceptual.lpips_layers(net_model)
  return (perceptual.model_features_fn(net_model, net_variables),
          f"{net_config.model} ({', '.join(layers)})", layers)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  workdir = FLAGS.workdir
  config, info, model, variables, step = load_run(workdir)
  if FLAGS.corruptions == "published" and config.dataset != "cifar10":  # fail before the attacks
    raise app.UsageError(f"--corruptions=published exists only for cifar10, not "
                         f"{config.dataset!r}; use --corruptions=generated.")
  try:
    lpips_bounds = [evaluation.parse_radius(b) for b in FLAGS.lpips_bounds]
    names = evaluation.corruption_names(extra=FLAGS.extra, selected=FLAGS.corruption_names)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if any(not b >= 0 for b in lpips_bounds):
    raise app.UsageError(f"--lpips_bounds must be non-negative, got {FLAGS.lpips_bounds}.")
  # Half the l_p examples by default: LPA at the paper's 5 x 40 steps on the 200 examples of
  # `make demo` would add ~60 CPU-seconds (2 cores) to the l_p section's ~110.
  lpa_num_examples = (-(-FLAGS.lp_num_examples // 2) if FLAGS.lpa_num_examples is None
                      else FLAGS.lpa_num_examples)
  if lpa_num_examples > 0 and lpips_bounds:
    lpips_net, lpips_name, lpips_layers = lpips_network(config, info, model)
  output_dir = FLAGS.output_dir or os.path.join(workdir, "report")
  os.makedirs(output_dir, exist_ok=True)

  mesh = parallel.make_mesh()
  _, (test_source,) = data_lib.load_dataset(config, splits=(info.test_split,),
                                             download=FLAGS.download)
  if FLAGS.num_examples > 0:
    test_source = data_lib.first_n(test_source, FLAGS.num_examples)
  clean = evaluation.evaluate_clean(model, variables, test_source, batch_size=FLAGS.batch_size,
                                    mesh=mesh)
  report = {
      "workdir": os.path.abspath(workdir), "dataset": config.dataset, "model": config.model,
      "method": config.get("method"), "step": step,
      "num_examples": clean["num_examples"], "corruptions": FLAGS.corruptions,
      "clean": {"accuracy": clean["accuracy"]}, "calibration": clean["calibration"],
  }
  if config.dataset == "cifar10":
    try:
      _, (cifar10_1,) = data_lib.load_dataset("cifar10_1", splits=("test",),
                                              data_dir=config.get("data_dir"),
                                              download=FLAGS.download)
      report["cifar10_1"] = {"accuracy": evaluation.evaluate_clean(
          model, variables, cifar10_1, batch_size=FLAGS.batch_size, mesh=mesh,
          with_calibration=False)["accuracy"]}
    except FileNotFoundError as e:
      logging.warning("CIFAR-10.1 not available: %s", e)
      report["cifar10_1"] = None

  if FLAGS.lp_num_examples > 0 and (FLAGS.linf_eps or FLAGS.l2_eps):
    lp = evaluation.evaluate_lp(model, variables,
                                data_lib.first_n(test_source, FLAGS.lp_num_examples),
                                radii={"linf": FLAGS.linf_eps, "l2": FLAGS.l2_eps},
                                pgd_steps=FLAGS.pgd_steps, apgd_steps=FLAGS.apgd_steps)
    report["lp_num_examples"], report["lp"] = lp["num_examples"], lp["results"]

  noise_num_examples = (FLAGS.lp_num_examples if FLAGS.noise_num_examples is None
                        else FLAGS.noise_num_examples)
  if noise_num_examples > 0:
    report["noise"] = evaluation.evaluate_noise(
        model, variables, data_lib.first_n(test_source, noise_num_examples),
        batch_size=FLAGS.batch_size, seed=FLAGS.seed)

  if lpa_num_examples > 0 and lpips_bounds:
    r = evaluation.evaluate_lpips(
        model, variables, data_lib.first_n(test_source, lpa_num_examples), bounds=lpips_bounds,
        features_fn=lpips_net, num_steps=FLAGS.lpa_steps, lambda_steps=FLAGS.lpa_lambda_steps,
        projection=FLAGS.lpa_projection, batch_size=FLAGS.batch_size, mesh=mesh)
    report["lpips"] = {
        "model": ("self" if FLAGS.lpips_model == "self"
                  else os.path.abspath(FLAGS.lpips_model)),
        "model_name": lpips_name, "layers": list(lpips_layers), **r,
    }

  if FLAGS.corruptions != "none":
    sources = evaluation.corrupted_sources(
        FLAGS.corruptions, config.dataset, test_source, names,
        cache_dir=FLAGS.corrupted_dir or os.path.join(workdir, f"{config.dataset}-C"),
        seed=FLAGS.seed, params="cifar10", data_dir=config.get("data_dir"),
        download=FLAGS.download)
    report["corrupted"] = evaluation.evaluate_corruptions(
        model, variables, sources, batch_size=FLAGS.batch_size, mesh=mesh,
        num_examples=FLAGS.num_examples)
  print(evaluation.write_report(report, output_dir, names))
  print(f"Report written to {output_dir}")


if __name__ == "__main__":
  app.run(main)
