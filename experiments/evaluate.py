r"""Robustness report of a trained classifier: clean, common corruptions, calibration.

  python experiments/evaluate.py --workdir=runs/fashion_mnist_quickstart \
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

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tqdm  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from adacorr import attacks  # noqa: E402
from adacorr import corruptions as corruptions_lib  # noqa: E402
from adacorr import data as data_lib  # noqa: E402
from adacorr import metrics  # noqa: E402
from adacorr import parallel  # noqa: E402
from adacorr import perceptual  # noqa: E402
from adacorr.attacks.perceptual import lpa  # noqa: E402
from adacorr.data import corrupted  # noqa: E402
from adacorr.metrics import noise_robustness as noise_metrics  # noqa: E402
from adacorr.run import load_classifier  # noqa: E402

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
flags.mark_flags_as_required(["workdir"])


def load_run(workdir, flag="--workdir"):
  """(config, dataset info, model, eval variables, step) of a training workdir."""
  try:
    model, variables, config, step = load_classifier(workdir)
  except FileNotFoundError as e:
    raise app.UsageError(f"{flag} must be a training workdir: {e}") from e
  return config, data_lib.DATASETS[config.dataset], model, variables, step


def predict(model, variables, source, *, batch_size, mesh):
  """Logits (N, K) and labels (N,) of every example of `source`."""
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  batch_size = min(batch_size, source.num_examples)
  batch_size -= batch_size % mesh.devices.size
  logits, labels = [], []
  for batch in data_lib.eval_batches(source, global_batch_size=batch_size, mesh=mesh):
    keep = np.asarray(batch["mask"]) > 0
    logits.append(np.asarray(apply(variables, batch["image"]))[keep])
    labels.append(np.asarray(batch["label"])[keep])
  return np.concatenate(logits), np.concatenate(labels)


class _Subset:
  """The first `n` examples of a source."""

  def __init__(self, source, n):
    self._source, self.num_examples = source, min(n, source.num_examples)
    self.image_shape, self.num_classes = source.image_shape, source.num_classes

  def get(self, indices):
    return self._source.get(indices)


def corrupted_sources(mode, dataset, test_source, names, *, cache_dir, seed, params):
  """(name, severity) -> Source of the corrupted test set."""
  if mode == "published":
    if dataset != "cifar10":
      raise app.UsageError(f"--corruptions=published exists only for cifar10, not {dataset!r};"
                           " use --corruptions=generated.")
    return {(n, s): corrupted.load_cifar10_corrupted(n, s) for n in names
            for s in corruptions_lib.SEVERITIES}
  corrupted.build_corrupted(test_source, cache_dir, corruptions=names, seed=seed, params=params)
  return {(n, s): corrupted.load_corrupted(cache_dir, n, s) for n in names
          for s in corruptions_lib.SEVERITIES}


def _radius(text: str) -> float:
  num, _, den = text.partition("/")
  return float(num) / float(den) if den else float(num)


def lp_robustness(logits_fn, x, y, *, pgd_steps, apgd_steps, radii):
  """Accuracy under PGD, APGD-CE and APGD-DLR, and the per-example worst case, per radius."""
  results = []
  for norm, eps_list in radii.items():
    for text in eps_list:
      eps = _radius(text)
      suite = {
          f"PGD-{pgd_steps}": lambda a, b, k, n=norm, e=eps: attacks.pgd(
              logits_fn, a, b, k, norm=n, eps=e, step_size=2.5 * e / pgd_steps,
              num_steps=pgd_steps),
          "APGD-CE": lambda a, b, k, n=norm, e=eps: attacks.apgd(
              logits_fn, a, b, k, norm=n, eps=e, num_steps=apgd_steps, loss="ce"),
          "APGD-DLR": lambda a, b, k, n=norm, e=eps: attacks.apgd(
              logits_fn, a, b, k, norm=n, eps=e, num_steps=apgd_steps, loss="dlr"),
      }
      r = attacks.robust_accuracy(logits_fn, x, y, jax.random.PRNGKey(0), suite,
                                  batch_size=250)
      results.append({"norm": norm, "eps": text, "clean": r["clean_accuracy"],
                      **{k: float(v) for k, v in r["per_attack"].items()},
                      "worst_case": r["robust_accuracy"]})
  return results


def noise_robustness(model, variables, source, *, batch_size, seed):
  """eps*_GN (Rusak et al. 2020, Eq. 4): the median over `source` of the smallest l2 norm
  of (clipping-aware rescaled) Gaussian noise that changes the prediction, searched up to
  the largest possible norm sqrt(H * W * C)."""
  images, labels = source.get(np.arange(source.num_examples))
  max_norm = float(np.sqrt(np.prod(images.shape[1:])))
  logits_fn = lambda x: model.apply(variables, x, train=False)
  search = jax.jit(lambda x, y, k: noise_metrics.minimal_noise_norm(
      logits_fn, x, y, k, max_norm=max_norm))
  norms = []
  for start in range(0, len(labels), batch_size):
    x = jnp.asarray(images[start:start + batch_size], jnp.float32) / 255.0
    y = jnp.asarray(labels[start:start + batch_size])
    norms.append(np.asarray(search(x, y, jax.random.fold_in(jax.random.PRNGKey(seed), start))))
  norms = np.concatenate(norms)
  return {"num_examples": int(len(norms)), "max_norm": max_norm,
          "eps_star": noise_metrics.eps_star(norms),
          "fraction_unflipped": float(np.mean(np.isinf(norms))),
          "fraction_misclassified_clean": float(np.mean(norms == 0))}


def lpips_robustness(model, variables, source, *, bounds, features_fn=None, num_steps,
                     lambda_steps, projection, batch_size, mesh, seed=0):
  """Accuracy under LPA (Laidlaw et al. 2021) per LPIPS bound on every example of `source`.

  Self-bounded (`features_fn=None`: the LPIPS distance on `model`'s own layers) or
  bounded by `features_fn(x) -> [f_l]` (another network). One jit-compiled attack serves
  every bound (the bound is traced); batches of `batch_size` are sharded over `mesh`. The
  last batch is padded with copies of its own examples and their keys (an example's
  result depends only on its image, label and key, so the copies finish with the
  originals and do not keep LPA's early-exit loop running). An example counts as robust
  if it is classified correctly both clean and at LPA's output.

  Returns:
    dict with 'clean_accuracy', and per bound (lists in the order of `bounds`)
    'accuracy', 'mean_distance', 'max_distance', 'num_outside' (distance > bound + 1e-4)
    and 'seconds'.
  """
  logits_fn = perceptual.model_logits_fn(model, variables)
  if features_fn is None:
    attack_fns = (perceptual.features_and_logits_fn(model, variables), None)
    distance_features = perceptual.model_features_fn(model, variables)
  else:
    attack_fns = (logits_fn, features_fn)
    distance_features = features_fn

  @jax.jit
  def attack(images, labels, keys, bound):
    x = images.astype(jnp.float32) / 255.0
    x_adv = lpa(*attack_fns, x, labels, keys, bound=bound, num_steps=num_steps,
                lambda_steps=lambda_steps, projection=projection)
    clean_ok = jnp.argmax(logits_fn(x), -1) == labels
    adv_ok = jnp.argmax(logits_fn(x_adv), -1) == labels
    return clean_ok, adv_ok, perceptual.lpips_distance(distance_features, x, x_adv)

  n = source.num_examples
  images, labels = source.get(np.arange(n))
  keys = np.asarray(jax.random.split(jax.random.PRNGKey(seed), n))
  devices = mesh.devices.size
  bs = max(devices, min(batch_size, n) - min(batch_size, n) % devices)
  rows = parallel.host_local_slice(bs, mesh)
  starts = range(0, n, bs)
  result = {"clean_accuracy": None, "accuracy": [], "mean_distance": [], "max_distance": [],
            "num_outside": [], "seconds": []}
  progress = tqdm.tqdm(total=len(bounds) * len(starts), desc="LPA", file=sys.stdout)
  for bound in bounds:
    tic = time.time()
    clean_ok, adv_ok, dist = (np.zeros((n,), bool), np.zeros((n,), bool),
                              np.zeros((n,), np.float32))
    for start in starts:
      progress.set_postfix(bound=bound)
      num_real = min(bs, n - start)
      idx = start + np.arange(bs) % num_real  # padding: copies of this batch's examples
      batch = parallel.shard_batch((images[idx][rows], labels[idx][rows].astype(np.int32),
                                    keys[idx][rows]), mesh)
      out = attack(*batch, jnp.float32(bound))
      c, a, d = (np.asarray(o)[:num_real] for o in out)
      clean_ok[start:start + num_real], adv_ok[start:start + num_real] = c, a
      dist[start:start + num_real] = d
      progress.update()
    outside = int(np.sum(dist > bound + 1e-4))
    if outside:
      logging.warning("LPA at LPIPS bound %g: %d of %d adversarial examples lie outside the "
                      "bound (max distance %.5f).", bound, outside, n, float(dist.max()))
    if result["clean_accuracy"] is None:
      result["clean_accuracy"] = float(clean_ok.mean())
    result["accuracy"].append(float((clean_ok & adv_ok).mean()))
    result["mean_distance"].append(float(dist.mean()))
    result["max_distance"].append(float(dist.max()))
    result["num_outside"].append(outside)
    result["seconds"].append(time.time() - tic)
  progress.close()
  return result


def save_lpips_curve(lpips, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  points = sorted(zip([0.0] + list(lpips["bounds"]),
                      [lpips["clean_accuracy"]] + list(lpips["accuracy"])))
  fig, ax = plt.subplots(figsize=(5, 3.8))
  ax.plot([b for b, _ in points], [100 * a for _, a in points], "o-", label="LPA")
  ax.set_xlabel(f"LPIPS bound\n(distance on {lpips['model_name']})", fontsize=9)
  ax.set_ylabel("accuracy under LPA (%)")
  ax.set_ylim(0, 100)
  ax.set_xlim(left=0)
  ax.grid(alpha=0.3)
  ax.set_title(f"Perceptual robustness ({lpips['num_examples']} test examples, LPA "
               f"{lpips['lambda_steps']}x{lpips['steps']} steps)", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


def save_heatmap(accuracy, names, clean_accuracy, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  table = np.array([[accuracy[n][s - 1] for s in corruptions_lib.SEVERITIES] for n in names])
  fig, ax = plt.subplots(figsize=(6.5, 0.38 * len(names) + 1.6))
  im = ax.imshow(100 * table, cmap="viridis", vmin=0, vmax=100, aspect="auto")
  ax.set_xticks(range(5), [str(s) for s in corruptions_lib.SEVERITIES])
  ax.set_yticks(range(len(names)), names)
  ax.set_xlabel("severity")
  for i in range(table.shape[0]):
    for j in range(5):
      ax.text(j, i, f"{100 * table[i, j]:.1f}", ha="center", va="center", fontsize=7,
              color="white" if table[i, j] < 0.6 else "black")
  ax.set_title(f"Accuracy (%) under corruption; clean {100 * clean_accuracy:.1f}%")
  fig.colorbar(im, ax=ax, label="accuracy (%)")
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


def save_reliability_diagram(bins, ece_value, ece_half, ece_scaled, temperature, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  edges = np.asarray(bins["edges"], float)
  centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
  counts = np.asarray(bins["count"], float)
  acc, conf = np.asarray(bins["accuracy"], float), np.asarray(bins["confidence"], float)
  used = counts > 0
  fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
  ax.bar(centers[used], acc[used], width=width, edgecolor="black", label="accuracy")
  ax.bar(centers[used], np.abs(conf - acc)[used], bottom=np.minimum(conf, acc)[used],
         width=width, color="tab:red", alpha=0.3, hatch="//", edgecolor="tab:red",
         label="gap to confidence")
  ax.plot([0, 1], [0, 1], "k--", lw=1)
  ax.set_ylabel("accuracy")
  ax.set_title(f"Reliability (all test examples): ECE {100 * ece_value:.2f}%\n"
               f"held-out half: {100 * ece_half:.2f}% -> {100 * ece_scaled:.2f}% "
               f"after T={temperature:.2f}", fontsize=10)
  ax.legend(loc="upper left")
  ax_count.bar(centers, counts / max(counts.sum(), 1), width=width, color="gray")
  ax_count.set_xlabel("confidence")
  ax_count.set_ylabel("fraction")
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


def markdown_report(report, names):
  lines = [f"# Robustness report: {report['model']} on {report['dataset']}", "",
           f"Checkpoint step {report['step']} in `{report['workdir']}`; corrupted test sets: "
           f"{report['corruptions']} ({report['num_examples']} test examples).", "",
           "| metric | value |", "|---|---|",
           f"| clean accuracy | {100 * report['clean']['accuracy']:.2f}% |",
           f"| ECE (15 bins), all test examples | {100 * report['calibration']['ece']:.2f}% |",
           f"| ECE on the held-out half: before -> after temperature scaling (T = "
           f"{report['calibration']['temperature']:.3f}, fitted on the other half) | "
           f"{100 * report['calibration']['ece_before_temperature_same_half']:.2f}% -> "
           f"{100 * report['calibration']['ece_after_temperature']:.2f}% |"]
  if report.get("cifar10_1") is not None:
    lines.append(f"| CIFAR-10.1 accuracy | {100 * report['cifar10_1']['accuracy']:.2f}% |")
  if "corrupted" in report:
    c = report["corrupted"]
    if c["mean_accuracy"] is not None:
      lines.append(f"| mean accuracy over the benchmark corruptions evaluated x 5 | "
                   f"{100 * c['mean_accuracy']:.2f}% |")
    lines.append("| mCE, CIFAR style (100 - mean accuracy over the 15) | " +
                 (f"{c['mce']:.2f} |" if c["mce"] is not None else "n/a (not all 15 run) |"))
    lines += ["",
              "## Accuracy (%) per corruption and severity", "",
              "| corruption | 1 | 2 | 3 | 4 | 5 | mean |", "|---|---|---|---|---|---|---|"]
    for n in names:
      acc = c["accuracy"][n]
      extra = "" if n in corruptions_lib.BENCHMARK_CORRUPTIONS else " (extra)"
      lines.append(f"| {n}{extra} | " + " | ".join(f"{100 * a:.1f}" for a in acc) +
                   f" | {100 * np.mean(acc):.1f} |")
    lines += ["", "![accuracy heatmap](corruption_heatmap.png)"]
  if report.get("lp"):
    attack_names = [k for k in report["lp"][0] if k not in ("norm", "eps", "clean", "worst_case")]
    lines += ["", f"## l_p robustness ({report['lp_num_examples']} test examples; accuracy %, "
              "worst case = correct under every attack)", "",
              "| norm | eps | clean | " + " | ".join(attack_names) + " | worst case |",
              "|---|---|---|" + "---|" * (len(attack_names) + 1)]
    for r in report["lp"]:
      lines.append(f"| {r['norm']} | {r['eps']} | {100 * r['clean']:.1f} | " +
                   " | ".join(f"{100 * r[a]:.1f}" for a in attack_names) +
                   f" | {100 * r['worst_case']:.1f} |")
  if report.get("noise"):
    n = report["noise"]
    lines += ["", f"## Noise robustness ({n['num_examples']} test examples)", "",
              "| metric | value |", "|---|---|",
              f"| eps*_GN: median smallest l2 norm of Gaussian noise that flips the label "
              f"(inf counts as +inf; 0 for misclassified) | {n['eps_star']:.3f} |",
              f"| examples no noise up to l2 {n['max_norm']:.1f} flips | "
              f"{100 * n['fraction_unflipped']:.1f}% |"]
  if report.get("lpips"):
    p = report["lpips"]
    lines += ["", f"## Perceptual (LPIPS) robustness ({p['num_examples']} test examples; LPA, "
              f"{p['lambda_steps']} x {p['steps']} steps, {p['projection']} projection; LPIPS "
              f"on {p['model_name']})", "",
              "| LPIPS bound | accuracy (%) | mean LPIPS distance | max LPIPS distance |",
              "|---|---|---|---|",
              f"| 0 (clean) | {100 * p['clean_accuracy']:.1f} | 0 | 0 |"]
    for b, a, md, mx in zip(p["bounds"], p["accuracy"], p["mean_distance"],
                            p["max_distance"]):
      lines.append(f"| {b:g} | {100 * a:.1f} | {md:.4f} | {mx:.4f} |")
    lines += ["", "![LPIPS robustness curve](lpips_robustness_curve.png)"]
  lines += ["", "![reliability diagram](reliability_diagram.png)", ""]
  return "\n".join(lines)


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
  lpips_bounds = [_radius(b) for b in FLAGS.lpips_bounds]
  if any(not b >= 0 for b in lpips_bounds):
    raise app.UsageError(f"--lpips_bounds must be non-negative, got {FLAGS.lpips_bounds}.")
  # Half the l_p examples by default: LPA at the paper's 5 x 40 steps on the 200 examples of
  # `make demo` would add ~60 CPU-seconds (2 cores) to the l_p section's ~110.
  lpa_num_examples = (-(-FLAGS.lp_num_examples // 2) if FLAGS.lpa_num_examples is None
                      else FLAGS.lpa_num_examples)
  lpips_net = None
  if lpa_num_examples > 0 and lpips_bounds:
    if FLAGS.lpips_model == "self":
      try:
        lpips_layers = perceptual.lpips_layers(model)
      except ValueError as e:
        raise app.UsageError(f"--lpips_model=self: {e}") from e
      lpips_name = f"{config.model} (self: {', '.join(lpips_layers)})"
    else:
      net_config, net_info, net_model, net_variables, _ = load_run(FLAGS.lpips_model,
                                                                   "--lpips_model")
      if tuple(net_info.image_shape) != tuple(info.image_shape):
        raise app.UsageError(
            f"--lpips_model={FLAGS.lpips_model} takes {net_config.dataset} images "
            f"{tuple(net_info.image_shape)}, the evaluated run {config.dataset} images "
            f"{tuple(info.image_shape)}.")
      lpips_layers = perceptual.lpips_layers(net_model)
      lpips_net = perceptual.model_features_fn(net_model, net_variables)
      lpips_name = f"{net_config.model} ({', '.join(lpips_layers)})"
  output_dir = FLAGS.output_dir or os.path.join(workdir, "report")
  os.makedirs(output_dir, exist_ok=True)

  mesh = parallel.make_mesh()
  load_kwargs = {"data_dir": config.get("data_dir")}
  if config.dataset == "fashion_mnist":
    load_kwargs["fashion_mnist_dir"] = config.get("fashion_mnist_dir")
  test_source = data_lib.load_split(config.dataset, info.test_split, **load_kwargs)
  if FLAGS.num_examples > 0:
    test_source = _Subset(test_source, FLAGS.num_examples)
  run = lambda source: predict(model, variables, source, batch_size=FLAGS.batch_size, mesh=mesh)

  logits, labels = run(test_source)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  half = len(labels) // 2  # temperature fitted on one half, ECE after it on the other
  temperature = float(metrics.fit_temperature(logits[:half], labels[:half]))
  scaled = np.asarray(jax.nn.softmax(logits[half:] / temperature, axis=-1))
  report = {
      "workdir": os.path.abspath(workdir), "dataset": config.dataset, "model": config.model,
      "method": config.get("method"), "step": step,
      "num_examples": int(len(labels)), "corruptions": FLAGS.corruptions,
      "clean": {"accuracy": float(metrics.accuracy(logits, labels))},
      "calibration": {
          "ece": float(metrics.ece(probs, labels, num_bins=15)),
          "temperature": temperature,
          "ece_after_temperature": float(metrics.ece(scaled, labels[half:], num_bins=15)),
          "ece_before_temperature_same_half": float(
              metrics.ece(probs[half:], labels[half:], num_bins=15)),
          "reliability": {k: np.asarray(v).tolist() for k, v in
                          metrics.reliability_bins(probs, labels, num_bins=15).items()},
      },
  }
  if config.dataset == "cifar10":
    try:
      cifar10_1 = data_lib.load_split("cifar10_1", "test", data_dir=config.get("data_dir"))
      l1, y1 = run(cifar10_1)
      report["cifar10_1"] = {"accuracy": float(metrics.accuracy(l1, y1))}
    except FileNotFoundError as e:
      logging.warning("CIFAR-10.1 not available: %s", e)
      report["cifar10_1"] = None

  if FLAGS.lp_num_examples > 0 and (FLAGS.linf_eps or FLAGS.l2_eps):
    lp_source = _Subset(test_source, FLAGS.lp_num_examples)
    images, lp_labels = lp_source.get(np.arange(lp_source.num_examples))
    logits_fn = jax.jit(lambda x: model.apply(variables, x, train=False))
    report["lp_num_examples"] = int(lp_source.num_examples)
    report["lp"] = lp_robustness(
        logits_fn, jnp.asarray(images, jnp.float32) / 255.0, jnp.asarray(lp_labels),
        pgd_steps=FLAGS.pgd_steps, apgd_steps=FLAGS.apgd_steps,
        radii={"linf": FLAGS.linf_eps, "l2": FLAGS.l2_eps})

  noise_num_examples = (FLAGS.lp_num_examples if FLAGS.noise_num_examples is None
                        else FLAGS.noise_num_examples)
  if noise_num_examples > 0:
    report["noise"] = noise_robustness(model, variables, _Subset(test_source, noise_num_examples),
                                       batch_size=FLAGS.batch_size, seed=FLAGS.seed)

  if lpa_num_examples > 0 and lpips_bounds:
    r = lpips_robustness(
        model, variables, _Subset(test_source, lpa_num_examples), bounds=lpips_bounds,
        features_fn=lpips_net, num_steps=FLAGS.lpa_steps, lambda_steps=FLAGS.lpa_lambda_steps,
        projection=FLAGS.lpa_projection, batch_size=FLAGS.batch_size, mesh=mesh)
    report["lpips"] = {
        "model": ("self" if FLAGS.lpips_model == "self"
                  else os.path.abspath(FLAGS.lpips_model)),
        "model_name": lpips_name, "layers": list(lpips_layers), "attack": "LPA",
        "num_examples": min(lpa_num_examples, test_source.num_examples),
        "steps": FLAGS.lpa_steps, "lambda_steps": FLAGS.lpa_lambda_steps,
        "projection": FLAGS.lpa_projection, "bounds": lpips_bounds, **r,
    }
    save_lpips_curve(report["lpips"], os.path.join(output_dir, "lpips_robustness_curve.png"))

  names = list(corruptions_lib.BENCHMARK_CORRUPTIONS)
  if FLAGS.extra:
    names += list(corruptions_lib.EXTRA_CORRUPTIONS)
  if FLAGS.corruption_names:
    unknown = sorted(set(FLAGS.corruption_names) - set(corruptions_lib.ALL_CORRUPTIONS))
    if unknown:
      raise app.UsageError(f"--corruption_names: unknown {unknown}; known: "
                           f"{', '.join(corruptions_lib.ALL_CORRUPTIONS)}.")
    names = [n for n in corruptions_lib.ALL_CORRUPTIONS if n in FLAGS.corruption_names]
  if FLAGS.corruptions != "none":
    cache_dir = FLAGS.corrupted_dir or os.path.join(workdir, f"{config.dataset}-C")
    sources = corrupted_sources(FLAGS.corruptions, config.dataset, test_source, names,
                                cache_dir=cache_dir, seed=FLAGS.seed, params="cifar10")
    accuracy = {n: [0.0] * 5 for n in names}
    for (n, s), source in tqdm.tqdm(sorted(sources.items()), desc="corrupted test sets",
                                    file=sys.stdout):
      if FLAGS.num_examples > 0:
        source = _Subset(source, FLAGS.num_examples)
      lc, yc = run(source)
      accuracy[n][s - 1] = float(metrics.accuracy(lc, yc))
    benchmark = [n for n in corruptions_lib.BENCHMARK_CORRUPTIONS if n in accuracy]
    complete = len(benchmark) == len(corruptions_lib.BENCHMARK_CORRUPTIONS)
    report["corrupted"] = {
        "accuracy": accuracy,
        "mean_accuracy": float(np.mean([accuracy[n] for n in benchmark])) if benchmark else None,
        "mce": (float(metrics.mce({n: [1.0 - a for a in accuracy[n]] for n in benchmark},
                                  style="cifar")) if complete else None),
    }
    save_heatmap(accuracy, names, report["clean"]["accuracy"],
                 os.path.join(output_dir, "corruption_heatmap.png"))
  save_reliability_diagram(report["calibration"]["reliability"],
                           report["calibration"]["ece"],
                           report["calibration"]["ece_before_temperature_same_half"],
                           report["calibration"]["ece_after_temperature"], temperature,
                           os.path.join(output_dir, "reliability_diagram.png"))
  with open(os.path.join(output_dir, "report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  markdown = markdown_report(report, names)
  with open(os.path.join(output_dir, "report.md"), "w", encoding="utf-8") as f:
    f.write(markdown)
  print(markdown)
  print(f"Report written to {output_dir}")


if __name__ == "__main__":
  app.run(main)
