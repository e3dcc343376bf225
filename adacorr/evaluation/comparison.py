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

from typing import Any, Mapping, Sequence

import numpy as np

from adacorr import attacks
from adacorr import corruptions as corruptions_lib
from adacorr.attacks.autoattack import NUM_TARGETS
from adacorr import metrics

# Columns where lower is better (the rest: higher is better).
LOWER_IS_BETTER = ("mce", "relative_mce", "ece")
# Columns already in percent (the rest are fractions).
IN_PERCENT = ("mce", "relative_mce")
# Columns printed as they are (not accuracies): eps* (an l2 norm).
UNITLESS = ("eps_star_gn", "eps_star_an")


def comparison_row(report: Mapping[str, Any]) -> dict[str, float | None]:
  """The comparison numbers of one report (see the module doc).

  Keys: 'clean', 'c_mean', 'mce', 'family/<name>' for each family, and
  '<norm> <eps>' (e.g. 'linf 2/255') for each l_p radius of the report (the worst case
  of all its attacks) and, where AutoAttack ran, `autoattack_key`: 'AA <norm> <eps>' for
  the standard version at full budget, else '<what ran> <norm> <eps>' (e.g.
  'APGD-CE+APGD-T(1) 20 it linf 2/255'; reports written before the label existed are
  labelled from their options).
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
      label = r.get("autoattack_label") or _label_from_options(report.get("options") or {})
      row[autoattack_key(label, r["norm"], r["eps"])] = r["AutoAttack"]
  lpips = report.get("lpips") or {}
  for bound, acc in zip(lpips.get("bounds", []), lpips.get("accuracy", [])):
    row[f"lpips {bound:g}"] = acc
  if report.get("noise"):
    row["eps_star_gn"] = report["noise"]["eps_star"]
  if report.get("noise", {}).get("eps_star_an") is not None:
    row["eps_star_an"] = report["noise"]["eps_star_an"]
  if report.get("calibration"):
    row["ece"] = report["calibration"]["ece"]
  return row


def autoattack_key(label: str, norm: str, eps: str) -> str:
  """The column of an AutoAttack result: 'AA <norm> <eps>' when `label` (see
  `attacks.autoattack_label`) is 'AutoAttack' (standard, full budget), else
  '<label> <norm> <eps>', so a reduced attack never carries AutoAttack's name."""
  return f"AA {norm} {eps}" if label == "AutoAttack" else f"{label} {norm} {eps}"


def is_autoattack_key(key: str) -> bool:
  """Whether `key` is a column made by `autoattack_key`."""
  return key.startswith(("AA ", "APGD-", "FAB-", "Square(", "AutoAttack "))


def _label_from_options(options: Mapping[str, Any]) -> str:
  return attacks.autoattack_label(
      options.get("autoattack", "standard"), num_steps=options.get("aa_steps", 100),
      num_queries=options.get("square_queries", 5000),
      num_targets=options.get("aa_targets", NUM_TARGETS))


def relative_mce(report: Mapping[str, Any], baseline: Mapping[str, Any]) -> float | None:
  """Relative mCE (percent) of `report` against `baseline` (e.g. the nominal run of the
  same suite and seed) in place of AlexNet: the mean over the 15 benchmark corruptions of
  100 (E_c - E_clean) / (E_c^base - E_clean^base) (`metrics.relative_mce`), or None when
  either report lacks the 15 corruptions or a baseline corruption error does not exceed
  its clean error."""
  def errors(r):
    acc = (r.get("corrupted") or {}).get("accuracy", {})
    if not all(n in acc for n in corruptions_lib.BENCHMARK_CORRUPTIONS):
      return None
    return {n: [1.0 - a for a in acc[n]] for n in corruptions_lib.BENCHMARK_CORRUPTIONS}
  mine, base = errors(report), errors(baseline)
  if mine is None or base is None:
    return None
  try:
    return metrics.relative_mce(mine, 1.0 - report["clean"]["accuracy"], alexnet_errors=base,
                                alexnet_clean_error=1.0 - baseline["clean"]["accuracy"])
  except ValueError:
    return None


def aggregate(rows: Sequence[Mapping[str, float | None]]) -> dict[str, dict[str, float]]:
  """Mean and standard deviation over seeds: `{key: {'mean', 'std', 'n'}}` for every key
  of `rows` (one `comparison_row` per seed); None values are left out (n counts the
  rest; a key with none is absent). std is the sample standard deviation (ddof 1; 0 for
  one seed)."""
  keys = list(dict.fromkeys(k for r in rows for k in r))
  out = {}
  for k in keys:
    values = np.asarray([r[k] for r in rows if r.get(k) is not None], np.float64)
    if values.size:
      out[k] = {"mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                "n": int(values.size)}
  return out


def format_aggregate(table: Mapping[str, Mapping[str, Mapping[str, float]]], *,
                     keys: Sequence[str] | None = None, title: str | None = None,
                     reference: Mapping[str, Mapping[str, float]] | None = None) -> str:
  """A markdown table of `aggregate`d rows (`table`: run -> key -> stats): 'mean ± std'
  per cell (accuracies in percent, mCE/relative mCE as they are, eps* as it is), the
  best mean per column in bold. `reference`: run -> key -> a published number, printed
  in an extra '(paper)' line under the run's row.
  """
  if not table:
    raise ValueError("table is empty: give at least one run's aggregate.")
  if keys is None:
    keys = list(dict.fromkeys(k for row in table.values() for k in row))
  best = {}
  for k in keys:
    means = [row[k]["mean"] for row in table.values() if k in row]
    if len(means) > 1:
      best[k] = min(means) if k in LOWER_IS_BETTER else max(means)
  lines = [] if title is None else [title, ""]
  lines.append("| run | " + " | ".join(_label(k) for k in keys) + " |")
  lines.append("|---|" + "|".join("---:" for _ in keys) + "|")
  for name, row in table.items():
    cells = []
    for k in keys:
      if k not in row:
        cells.append("-")
        continue
      scale = 1.0 if k in IN_PERCENT or k in UNITLESS else 100.0
      text = f"{scale * row[k]['mean']:.2f}"
      if row[k]["n"] > 1:
        text += f" ± {scale * row[k]['std']:.2f}"
      cells.append(f"**{text}**" if k in best and row[k]["mean"] == best[k] else text)
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if reference and reference.get(name):
      ref = reference[name]
      lines.append("| (paper) | " + " | ".join(
          "-" if ref.get(k) is None else
          f"{(1.0 if k in IN_PERCENT or k in UNITLESS else 100.0) * ref[k]:.2f}"
          for k in keys) + " |")
  return "\n".join(lines)


ALPHA = 0.05  # the level of the one-sided tests below
OUTCOMES = ("held", "not shown", "reversed")


def one_sided_p(t: float, df: float) -> tuple[float, float]:
  """`(P(T >= t), P(T <= t))` for Student's t with `df` degrees of freedom: the p-values
  of the one-sided tests 'the difference is > 0' and '< 0' (`scipy.stats.t`; t = +-inf
  gives 0 and 1)."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  return float(stats.t.sf(t, df)), float(stats.t.cdf(t, df))


def outcome(p_better: float | None, p_worse: float | None, *, alpha: float = ALPHA) -> str:
  """'held' (significant in the claimed direction: p_better < alpha), 'reversed'
  (significant against it: p_worse < alpha) or 'not shown' (neither, or no test)."""
  if p_better is not None and p_better < alpha:
    return "held"
  if p_worse is not None and p_worse < alpha:
    return "reversed"
  return "not shown"


def _tested(diff: float, se: float, df: float | None, alpha: float) -> dict[str, Any]:
  """t, df, the two one-sided p-values and the outcome of a difference with standard
  error `se` (df None: no test possible, 'not shown')."""
  if df is None or not df > 0:
    return {"t": None, "df": None, "p": None, "p_reversed": None, "outcome": "not shown"}
  t = diff / se if se > 0 else (float("inf") if diff > 0 else float("-inf") if diff < 0
                                else 0.0)
  p_better, p_worse = one_sided_p(t, df)
  return {"t": float(t), "df": float(df), "p": p_better, "p_reversed": p_worse,
          "outcome": outcome(p_better, p_worse, alpha=alpha)}


def ordering(table: Mapping[str, Mapping[str, Mapping[str, float]]], better: str, worse: str,
             key: str, *, margin: float = 0.0, alpha: float = ALPHA) -> dict[str, Any]:
  """Whether run `better` beats run `worse` on `key` in `table` (`aggregate`d rows: mean,
  std, n over seeds), by Welch's one-sided t test (unpaired).

  Higher is better except for `LOWER_IS_BETTER` keys. `margin` (in the key's units) is
  added to `better`'s side: +0.02 for "better is within 2 points of worse" (better >=
  worse - 0.02). Returns {'outcome': 'held' (the difference is > 0 at level `alpha`),
  'reversed' (< 0 at that level) or 'not shown' (inconclusive, or fewer than 2 seeds on
  a side), 'held' (outcome == 'held'; None with a missing run or key), 'difference'
  (better - worse + margin, > 0 favours better), 'sigma' (the effect size: difference
  over the pooled standard deviation sqrt(s_a^2 + s_b^2), +-inf for zero spread), 't',
  'df' (Welch-Satterthwaite), 'p' (one-sided, for the claim), 'p_reversed', 'key',
  'better', 'worse'}.
  """
  a, b = table.get(better, {}).get(key), table.get(worse, {}).get(key)
  out = {"key": key, "better": better, "worse": worse}
  if a is None or b is None:
    return {**out, "held": None, "outcome": None, "difference": None, "sigma": None,
            "t": None, "df": None, "p": None, "p_reversed": None}
  sign = -1.0 if key in LOWER_IS_BETTER else 1.0
  diff = sign * (a["mean"] - b["mean"]) + margin
  spread = float(np.hypot(a["std"], b["std"]))
  sigma = diff / spread if spread > 0 else (float("inf") if diff > 0 else
                                            float("-inf") if diff < 0 else 0.0)
  na, nb = int(a.get("n", 1)), int(b.get("n", 1))
  df = None
  va, vb = a["std"] ** 2 / na, b["std"] ** 2 / nb
  if na > 1 and nb > 1:
    denom = (va ** 2 / (na - 1) if va else 0.0) + (vb ** 2 / (nb - 1) if vb else 0.0)
    df = (va + vb) ** 2 / denom if denom > 0 else float(na + nb - 2)
  test = _tested(diff, float(np.sqrt(va + vb)), df, alpha)
  return {**out, "held": test["outcome"] == "held", "difference": float(diff),
          "sigma": float(sigma), **test}


def paired_ordering(better_rows: Mapping[int, Mapping[str, float | None]],
                    worse_rows: Mapping[int, Mapping[str, float | None]], key: str, *,
                    margin: float = 0.0, alpha: float = ALPHA) -> dict[str, Any]:
  """`ordering` paired by seed: runs trained at the same seed share their data order and
  initial weights, so seed-to-seed swings common to both cancel in the per-seed
  difference; decided by the one-sided paired t test (t = mean / (std / sqrt(n)), n - 1
  degrees of freedom).

  `better_rows`, `worse_rows`: seed -> `comparison_row`. Returns {'seeds' (those where
  both have `key`), 'differences' (better - worse per seed, signed so that > 0 means
  better, plus `margin`), 'mean', 'std' (ddof 1; 0 for one seed), 'sigma' (the effect
  size d_z = mean / std; +-inf for zero spread), 't', 'df', 'p' (one-sided, for the
  claim), 'p_reversed', 'outcome' ('held' / 'not shown' / 'reversed' at level `alpha`;
  'not shown' below 2 seeds), 'held_seeds' (how many differences are > 0)}; with no
  common seed, mean, std, sigma, t and p are None.
  """
  seeds = sorted(s for s in better_rows if s in worse_rows
                 and better_rows[s].get(key) is not None and worse_rows[s].get(key) is not None)
  if not seeds:
    return {"seeds": [], "differences": [], "mean": None, "std": None, "sigma": None,
            "held_seeds": 0, "t": None, "df": None, "p": None, "p_reversed": None,
            "outcome": "not shown"}
  sign = -1.0 if key in LOWER_IS_BETTER else 1.0
  d = np.asarray([sign * (better_rows[s][key] - worse_rows[s][key]) + margin for s in seeds],
                 np.float64)
  mean = float(d.mean())
  std = float(d.std(ddof=1)) if d.size > 1 else 0.0
  sigma = mean / std if std > 0 else (float("inf") if mean > 0 else
                                      float("-inf") if mean < 0 else 0.0)
  test = _tested(mean, std / np.sqrt(d.size), d.size - 1 if d.size > 1 else None, alpha)
  return {"seeds": seeds, "differences": d.tolist(), "mean": mean, "std": std,
          "sigma": float(sigma), "held_seeds": int((d > 0).sum()), **test}


def _label(key: str) -> str:
  if key == "clean":
    return "clean acc"
  if key == "c_mean":
    return "-C mean acc"
  if key == "mce":
    return "mCE"
  if key == "relative_mce":
    return "rel. mCE"
  if key == "ece":
    return "ECE"
  if key.startswith("eps_star_"):
    return f"eps*_{key[9:].upper()}"
  if key.startswith("lpips "):
    return f"LPIPS {key[6:]} acc"
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
      text = f"{v if k in IN_PERCENT or k in UNITLESS else 100 * v:.2f}"
      cells.append(f"**{text}**" if k in best and v == best[k] else text)
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
