"""Side-by-side comparison of robustness reports: one row per run, the numbers readers
compare methods by.

`comparison_row(report)` reduces a report (`adacorr.run.report.robustness_report`, as in
report.json) to: clean accuracy, -C mean accuracy and mCE over the 15 benchmark
corruptions, accuracy per corruption family (`adacorr.corruptions.FAMILIES`, mean over
its corruptions and the 5 severities), and, per l_p radius, the robust accuracy under
the worst of the report's attacks (per example) and under AutoAttack alone. `format_comparison(rows)` is a markdown
table with the best value of each column in bold. Accuracies are fractions in [0, 1] and
the mCE is in percent (`adacorr.metrics.mce`); the table prints both as percentages. A
section the report lacks is None ('-' in the table).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from adacorr import corruptions as corruptions_lib

# Columns where lower is better (the rest: higher is better).
LOWER_IS_BETTER = ("mce",)
# Columns already in percent (the rest are fractions).
IN_PERCENT = ("mce",)


def comparison_row(report: Mapping[str, Any]) -> dict[str, float | None]:
  """The comparison numbers of one report (see the module doc).

  Keys: 'clean', 'c_mean', 'mce', 'family/<name>' for each family, and
  '<norm> <eps>' (e.g. 'linf 2/255') for each l_p radius of the report (the worst case
  of all its attacks) and 'AA <norm> <eps>' (AutoAttack alone) where it ran.
  """
  row: dict[str, float | None] = {"clean": report["clean"]["accuracy"]}
  corrupted = report.get("corrupted") or {}
  accuracy = corrupted.get("accuracy", {})
  row["c_mean"] = corrupted.get("mean_accuracy")
  row["mce"] = corrupted.get("mce")
  for family, names in corruptions_lib.FAMILIES.items():
    values = [accuracy[n] for n in names if n in accuracy]
    row[f"family/{family}"] = float(np.mean(values)) if len(values) == len(names) else None
  for r in report.get("lp") or []:
    row[f"{r['norm']} {r['eps']}"] = r["worst_case"]
  for r in report.get("lp") or []:
    if "AutoAttack" in r:
      row[f"AA {r['norm']} {r['eps']}"] = r["AutoAttack"]
  return row


def _label(key: str) -> str:
  if key == "clean":
    return "clean acc"
  if key == "c_mean":
    return "-C mean acc"
  if key == "mce":
    return "mCE"
  if key.startswith("family/"):
    return key.split("/", 1)[1]
  return f"{key} acc"


def format_comparison(rows: Mapping[str, Mapping[str, float | None]], *,
                      title: str | None = None) -> str:
  """A markdown table: one line per run (`rows`: name -> `comparison_row`), one column
  per key of the first row (in its order), the best value per column in bold.

  Accuracies print as percentages; the mCE (already in percent) as it is; lower is
  better for the mCE, higher for the rest.

  Raises:
    ValueError: if `rows` is empty.
  """
  if not rows:
    raise ValueError("rows is empty: give at least one run's comparison_row.")
  keys = list(next(iter(rows.values())))
  for row in rows.values():
    keys += [k for k in row if k not in keys]
  best = {}
  for k in keys:
    values = [row.get(k) for row in rows.values() if row.get(k) is not None]
    if len(values) > 1:
      best[k] = min(values) if k in LOWER_IS_BETTER else max(values)
  lines = [] if title is None else [title, ""]
  lines.append("| run | " + " | ".join(_label(k) for k in keys) + " |")
  lines.append("|---|" + "|".join("---:" for _ in keys) + "|")
  for name, row in rows.items():
    cells = []
    for k in keys:
      v = row.get(k)
      if v is None:
        cells.append("-")
        continue
      text = f"{v if k in IN_PERCENT else 100 * v:.2f}"
      cells.append(f"**{text}**" if k in best and v == best[k] else text)
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
