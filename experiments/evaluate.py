r"""Robustness report of a trained classifier: clean, common corruptions, calibration.

  python experiments/evaluate.py --workdir=runs/fashion_mnist_quickstart \
      [--corruptions=generated|published|none] [--num_examples=N] [--output_dir=DIR]

Reads the run's `config.json` and latest checkpoint from `--workdir` and writes to
`--output_dir` (default `WORKDIR/report`): `report.json`, `report.md` (tables),
`corruption_heatmap.png` (accuracy per corruption x severity) and
`reliability_diagram.png`. Corrupted test sets are either the published tfds
`cifar10_corrupted` (`published`, CIFAR-10 only) or generated with
`adacorr.corruptions` and cached as `<dataset>-C` (`generated`, any dataset).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import tqdm  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from adacorr import attacks  # noqa: E402
from adacorr import corruptions as corruptions_lib  # noqa: E402
from adacorr import data as data_lib  # noqa: E402
from adacorr import metrics  # noqa: E402
from adacorr import parallel  # noqa: E402
from adacorr.data import corrupted  # noqa: E402
from adacorr.train import loop  # noqa: E402
from adacorr.train.checkpoint import restore_params  # noqa: E402

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
flags.mark_flags_as_required(["workdir"])


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
  lines += ["", "![reliability diagram](reliability_diagram.png)", ""]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  workdir = FLAGS.workdir
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise app.UsageError(f"{config_path} not found: --workdir must be a training workdir.")
  with open(config_path, encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  output_dir = FLAGS.output_dir or os.path.join(workdir, "report")
  os.makedirs(output_dir, exist_ok=True)

  mesh = parallel.make_mesh()
  info = data_lib.DATASETS[config.dataset]
  model = loop.build_model(config, info)
  state = restore_params(os.path.join(workdir, "checkpoints"))
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
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
      "method": config.get("method"), "step": int(state["step"]),
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
