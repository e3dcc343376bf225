"""The report's figures: corruption heatmap, reliability diagram, LPIPS robustness curve,
and the AdA SSIM densities (the paper's Figure 2).

matplotlib (Agg backend) is imported only when a figure is drawn.
"""

from __future__ import annotations

import numpy as np

from adacorr import corruptions as corruptions_lib
from adacorr.evaluation.radius import parse_radius


def _pyplot():
  """matplotlib.pyplot on the non-interactive Agg backend."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save_lpips_curve(lpips, path):
  """Accuracy under each perceptual attack and their worst case vs LPIPS bound (the clean
  accuracy at 0), a PNG at `path`.

  `lpips`: the report's LPIPS section ('bounds', 'clean_accuracy', 'accuracy',
  'model_name', 'num_examples', 'lambda_steps', 'steps').
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.8))
  curves = dict(lpips.get("per_attack") or {})
  if len(curves) != 1:
    curves["worst case"] = lpips["accuracy"]
  for name, acc in curves.items():
    points = sorted(zip([0.0] + list(lpips["bounds"]), [lpips["clean_accuracy"]] + list(acc)))
    ax.plot([b for b, _ in points], [100 * a for _, a in points], "o-", label=name,
            **(dict(lw=2.5, color="black") if name == "worst case" else {}))
  ax.legend(fontsize=8)
  ax.set_xlabel(f"LPIPS bound\n(distance on {lpips['model_name']})", fontsize=9)
  ax.set_ylabel("accuracy (%)")
  ax.set_ylim(0, 100)
  ax.set_xlim(left=0)
  ax.grid(alpha=0.3)
  ax.set_title(f"Perceptual robustness ({lpips['num_examples']} test examples, "
               f"{lpips.get('attack', 'LPA')})", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


def save_lp_curves(results, path, clean_accuracy=None):
  """Accuracy vs radius, one panel per norm (the clean accuracy at 0): the worst case
  and, where present, AutoAttack and each single attack; a PNG at `path`.

  `results`: the report's 'lp' list (`evaluation.lp_robustness`).
  """
  plt = _pyplot()
  norms = list(dict.fromkeys(r["norm"] for r in results))
  fig, axes = plt.subplots(1, len(norms), figsize=(4.8 * len(norms), 3.8), squeeze=False)
  for ax, norm in zip(axes[0], norms):
    rows = sorted((r for r in results if r["norm"] == norm), key=lambda r: parse_radius(r["eps"]))
    eps = [0.0] + [parse_radius(r["eps"]) for r in rows]
    clean = rows[0]["clean"] if clean_accuracy is None else clean_accuracy
    keys = [k for k in rows[0] if k not in ("norm", "eps", "clean", "autoattack_label")
            and "/" not in k]
    for k in keys:
      style = dict(lw=2.5, color="black") if k == "worst_case" else dict(lw=1, alpha=0.8)
      name = ("worst case" if k == "worst_case" else
              rows[0].get("autoattack_label", k) if k == "AutoAttack" else k)
      ax.plot(eps, [100 * clean] + [100 * r.get(k, float("nan")) for r in rows], "o-",
              label=name, **style)
    ax.set_xlabel(f"{norm} radius")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle("l_p robustness vs radius", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


def save_heatmap(accuracy, names, clean_accuracy, path):
  """Accuracy (%) per corruption (rows, in the order of `names`) and severity, a PNG.

  `accuracy`: {name: [accuracy in [0, 1] at severity 1..5]}; `clean_accuracy` in [0, 1].
  """
  plt = _pyplot()
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
  """Reliability diagram of `bins` (`metrics.reliability_bins` as lists) over a histogram
  of the confidences, a PNG at `path`; the title gives the ECEs (in [0, 1]) before and
  after temperature scaling."""
  plt = _pyplot()
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


def save_ssim_densities(samples: dict, path: str, threshold: float | None) -> None:
  """Figure 2 of the AdA paper: one panel per backbone, an SSIM histogram per nu.

  `samples`: {backbone name: {nu: SSIMs (N,)}} (nu = 0 drawn dashed: unperturbed);
  `threshold`: the line search's t, drawn as a vertical line (None: none).
  """
  plt = _pyplot()
  names = list(samples)
  fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
  bins = np.linspace(-0.2, 1.0, 61)
  for ax, name in zip(axes[0], names):
    for nu, values in sorted(samples[name].items()):
      label = "unperturbed" if nu == 0 else f"nu = {nu:g}"
      ax.hist(values, bins=bins, density=True, histtype="step", linewidth=1.5,
              linestyle="--" if nu == 0 else "-", label=label)
    if threshold is not None:
      ax.axvline(threshold, color="k", linewidth=0.8, linestyle=":",
                 label=f"line-search t = {threshold:g}")
    ax.set_title(f"AdA ({name})")
    ax.set_xlabel("SSIM(clean, AdA image)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def save_suite_bars(table, path, keys=("clean", "c_mean"), labels=None):
  """Grouped bars, one group per run of `table` (run -> key -> {'mean', 'std', 'n'}, as
  `comparison.aggregate`), one bar per key (accuracies, in %), with 95% confidence
  intervals of the mean over seeds (t-distribution; none for one seed); a PNG."""
  plt = _pyplot()
  runs = list(table)
  keys = [k for k in keys if any(k in table[r] for r in runs)]
  width = 0.8 / max(len(keys), 1)
  fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(runs) * max(len(keys), 1) + 2), 4.2))
  for j, k in enumerate(keys):
    means = [100 * table[r][k]["mean"] if k in table[r] else np.nan for r in runs]
    ci = [100 * table[r][k]["std"] * _t95(table[r][k]["n"]) / np.sqrt(table[r][k]["n"])
          if k in table[r] and table[r][k]["n"] > 1 else 0.0 for r in runs]
    ax.bar(np.arange(len(runs)) + (j - (len(keys) - 1) / 2) * width, means, width,
           yerr=ci, capsize=2, label=(labels or {}).get(k, k))
  ax.set_xticks(range(len(runs)), runs, rotation=45, ha="right", fontsize=8)
  ax.set_ylabel("accuracy (%)")
  ax.set_ylim(0, 100)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


def _t95(n):
  """The two-sided 95% t quantile for n - 1 degrees of freedom (n >= 2)."""
  table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
           9: 2.262, 10: 2.228}
  return table.get(n - 1, 1.96)


def save_method_heatmap(accuracy, names, path, title=None):
  """Accuracy (%) per run (rows) and corruption (columns, in the order of `names`), mean
  over severities (and seeds); `accuracy`: run -> corruption -> accuracy in [0, 1]."""
  plt = _pyplot()
  runs = list(accuracy)
  table = np.array([[accuracy[r].get(n, np.nan) for n in names] for r in runs], np.float64)
  fig, ax = plt.subplots(figsize=(0.5 * len(names) + 3, 0.38 * len(runs) + 1.8))
  im = ax.imshow(100 * table, cmap="viridis", vmin=0, vmax=100, aspect="auto")
  ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
  ax.set_yticks(range(len(runs)), runs, fontsize=8)
  for i in range(table.shape[0]):
    for j in range(table.shape[1]):
      if np.isfinite(table[i, j]):
        ax.text(j, i, f"{100 * table[i, j]:.0f}", ha="center", va="center", fontsize=6,
                color="white" if table[i, j] < 0.6 else "black")
  fig.colorbar(im, ax=ax, label="accuracy (%)")
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)
