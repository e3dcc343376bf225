"""The robustness report on disk: report.json, report.md and the figures.

A report is a dict of the evaluators' numbers (see `adacorr.run.report.robustness_report`
for the whole): 'workdir', 'dataset', 'model', 'method', 'step', 'num_examples', 'corruptions',
'clean' ({'accuracy'}), 'calibration', and optionally 'cifar10_1', 'lp_num_examples' and
'lp' (with 'lp_warnings', the gradient-masking flags), 'noise', 'lpips', 'corrupted'.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from adacorr import corruptions as corruptions_lib
from adacorr.evaluation import plots

HEATMAP_PNG = "corruption_heatmap.png"
RELIABILITY_PNG = "reliability_diagram.png"
LPIPS_CURVE_PNG = "lpips_robustness_curve.png"
LP_CURVE_PNG = "lp_robustness_curves.png"


def markdown_report(report: dict[str, Any], names: Sequence[str] | None = None) -> str:
  """The report as markdown: a summary table, then one section per part of `report`.

  Args:
    report: the report dict (see `write_report`).
    names: corruptions in the order of the table (default: that of
      `report['corrupted']['accuracy']`).
  """
  if names is None:
    names = list(report.get("corrupted", {}).get("accuracy", {}))
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
    attack_names = [k for k in report["lp"][0]
                    if k not in ("norm", "eps", "clean", "worst_case", "autoattack_label")]
    aa_label = report["lp"][0].get("autoattack_label", "AutoAttack")
    header = [aa_label if a == "AutoAttack" else a for a in attack_names]
    lines += ["", f"## l_p robustness ({report['lp_num_examples']} test examples; accuracy %, "
              "worst case = correct under every attack; AA/x = robust accuracy after "
              "AutoAttack's components up to x, each run on the examples still robust)", "",
              "| norm | eps | clean | " + " | ".join(header) + " | worst case |",
              "|---|---|---|" + "---|" * (len(attack_names) + 1)]
    for r in report["lp"]:
      lines.append(f"| {r['norm']} | {r['eps']} | {100 * r['clean']:.1f} | " +
                   " | ".join(f"{100 * r[a]:.1f}" if a in r else "-" for a in attack_names) +
                   f" | {100 * r['worst_case']:.1f} |")
    warnings = report.get("lp_warnings") or []
    lines += [""] + [f"> **Warning, possible gradient masking:** {w}." for w in warnings]
    if not warnings:
      lines.append("Gradient-masking checks (accuracy falls with eps; Square finds nothing "
                   "the white-box attacks missed; PGD-100 within a point of PGD-20): none "
                   "raised.")
    lines += ["", f"![l_p robustness vs radius]({LP_CURVE_PNG})"]
  if report.get("noise"):
    n = report["noise"]
    lines += ["", f"## Noise robustness ({n['num_examples']} test examples)", "",
              "| metric | value |", "|---|---|",
              f"| eps*_GN: median smallest l2 norm of Gaussian noise that flips the label "
              f"(inf counts as +inf; 0 for misclassified) | {n['eps_star']:.3f} |",
              f"| examples no noise up to l2 {n['max_norm']:.1f} flips | "
              f"{100 * n['fraction_unflipped']:.1f}% |"]
    if n.get("eps_star_an") is not None:
      a = n["an"]
      lines.append(f"| eps*_AN: the same along noise of a {a['generator']} generator trained "
                   f"against this model ({a['steps']} Adam steps at l2 {a['eps']:.2f}; mean "
                   f"over {a['num_generators']}; unflipped "
                   f"{100 * a['fraction_unflipped']:.1f}%) | {n['eps_star_an']:.3f} |")
  if report.get("lpips"):
    p = report["lpips"]
    per = p.get("per_attack") or {p.get("attack", "LPA"): p["accuracy"]}
    lines += ["", f"## Perceptual (LPIPS) robustness ({p['num_examples']} test examples; "
              f"{' and '.join(per)}: LPA {p['lambda_steps']} x {p['steps']} steps, "
              f"{p['projection']} projection, PPGD {p['steps']} steps; LPIPS on "
              f"{p['model_name']})", "",
              "| LPIPS bound | " + " | ".join(f"{a} acc (%)" for a in per) +
              " | worst case (%) | mean LPIPS distance | max LPIPS distance |",
              "|---|" + "---|" * (len(per) + 3),
              "| 0 (clean) | " + " | ".join(f"{100 * p['clean_accuracy']:.1f}" for _ in per) +
              f" | {100 * p['clean_accuracy']:.1f} | 0 | 0 |"]
    for i, (b, a, md, mx) in enumerate(zip(p["bounds"], p["accuracy"], p["mean_distance"],
                                           p["max_distance"])):
      lines.append(f"| {b:g} | " + " | ".join(f"{100 * v[i]:.1f}" for v in per.values()) +
                   f" | {100 * a:.1f} | {md:.4f} | {mx:.4f} |")
    lines += ["", "![LPIPS robustness curve](lpips_robustness_curve.png)"]
  lines += ["", "![reliability diagram](reliability_diagram.png)", ""]
  return "\n".join(lines)


def write_report(report: dict[str, Any], output_dir: str,
                 names: Sequence[str] | None = None) -> str:
  """Writes `report` to `output_dir` (created if missing) and returns its markdown.

  Files: report.json, report.md, reliability_diagram.png, and corruption_heatmap.png
  (with a 'corrupted' section), lp_robustness_curves.png (with an 'lp' section) and
  lpips_robustness_curve.png (with an 'lpips' section).
  `names`: the corruptions' order in the table and heatmap (see `markdown_report`).
  """
  os.makedirs(output_dir, exist_ok=True)
  if names is None:
    names = list(report.get("corrupted", {}).get("accuracy", {}))
  if report.get("lpips"):
    plots.save_lpips_curve(report["lpips"], os.path.join(output_dir, LPIPS_CURVE_PNG))
  if report.get("lp"):
    plots.save_lp_curves(report["lp"], os.path.join(output_dir, LP_CURVE_PNG))
  if "corrupted" in report:
    plots.save_heatmap(report["corrupted"]["accuracy"], names, report["clean"]["accuracy"],
                       os.path.join(output_dir, HEATMAP_PNG))
  calibration = report["calibration"]
  plots.save_reliability_diagram(
      calibration["reliability"], calibration["ece"],
      calibration["ece_before_temperature_same_half"], calibration["ece_after_temperature"],
      calibration["temperature"], os.path.join(output_dir, RELIABILITY_PNG))
  with open(os.path.join(output_dir, "report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  markdown = markdown_report(report, names)
  with open(os.path.join(output_dir, "report.md"), "w", encoding="utf-8") as f:
    f.write(markdown)
  return markdown
