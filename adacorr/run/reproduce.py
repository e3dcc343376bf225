"""A reproduction suite: several methods trained at an equal budget over seeds, each
evaluated with the same report, and the comparison table the papers' tables are read by.

Layout of a suite's workdir:
  <workdir>/<run>/seed<s>/           one training run (config.json, checkpoints, summary)
  <workdir>/<run>/seed<s>/report/    its robustness report (`run.report.ensure_report`)
  <workdir>/table.md, table.json     mean ± std over seeds per run, the best per column
  <workdir>/bars.png                 clean / -C / l_p accuracy with 95% confidence intervals
  <workdir>/heatmap.png              run x corruption accuracy (mean over severities, seeds)
Finished runs and reports are reused (`ensure_trained`, `ensure_report`), and an
interrupted run resumes from its checkpoint, so a killed suite continues where it stopped.

`equal_budget(configs, base)` gives every member the base's model, data, steps, batch,
optimiser and schedule (the papers compare methods at equal epochs, so a method that
costs more per step still gets the same number of steps). `run_suite` trains and
evaluates; `suite_results` reads what is finished into the tables; `write_suite` writes
them; `check_orderings` tests the orderings a paper claims.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any, Callable, Mapping, Sequence

import jax
from jax.experimental.compilation_cache import compilation_cache
import ml_collections
import numpy as np

from adacorr import corruptions as corruptions_lib
from adacorr.evaluation import comparison, plots
from adacorr.run.methods import ensure_trained
from adacorr.run.report import ensure_report

# The fields `equal_budget` copies from the base config: model, data, steps, batch,
# optimiser, schedule, evaluation cadence.
BUDGET_FIELDS = (
    "dataset", "model", "model_kwargs", "num_steps", "num_epochs", "global_batch_size",
    "learning_rate", "scale_learning_rate", "schedule", "warmup_epochs", "weight_decay",
    "nesterov", "momentum", "optimizer", "augment", "augment_kwargs", "eval_center_crop",
    "compute_dtype", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
    "download", "data_dir")
BASELINE = "@baseline"  # a report option value: the suite's baseline run (seed 0) workdir
SUITE_DIR = "@suite"  # a report option prefix: '@suite/x' is <suite workdir>/x


def equal_budget(configs: Mapping[str, ml_collections.ConfigDict],
                 base: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """Copies of `configs` with `base`'s `BUDGET_FIELDS` (those `base` has); each keeps its
  method, method_kwargs and DeepAugment copies. The step count is fixed by `num_steps`
  (set in `base`), so methods whose epochs are longer (DeepAugment's extra copies) still
  take the same number of steps."""
  if base.get("num_steps", -1) <= 0:
    raise ValueError("base.num_steps must be set (> 0): an equal budget is an equal number "
                     "of steps.")
  out = {}
  for name, config in configs.items():
    c = ml_collections.ConfigDict(config.to_dict())
    for field in BUDGET_FIELDS:
      if field in base:
        value = base[field]
        c[field] = (ml_collections.ConfigDict(value.to_dict())
                    if isinstance(value, ml_collections.ConfigDict) else value)
    out[name] = c
  return out


COMPILATION_CACHE = ".jax_cache"  # under the suite's workdir


def enable_compilation_cache(workdir: str) -> str:
  """Turns on JAX's persistent compilation cache in `<workdir>/.jax_cache` (returned), so
  that the suite's processes share their compilations: every run of one architecture
  compiles the same report programs (the evaluators trace the variables, see
  `attacks.lp.traced_logits_fn`), and every seed of a method the same training step.
  Measured on the fashion_mnist suite: see RESULTS.md."""
  path = os.path.join(os.path.abspath(workdir), COMPILATION_CACHE)
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  compilation_cache.reset_cache()  # re-read the settings if the cache was set up already
  return path


def member_dir(workdir: str, name: str, seed: int) -> str:
  return os.path.join(workdir, name, f"seed{seed}")


def with_seed(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config.to_dict())
  c.seed = int(seed)
  return c


def resolve_options(options: Mapping[str, Any], workdir: str, baseline: str) -> dict[str, Any]:
  """`options` with `BASELINE` values replaced by the baseline's seed-0 workdir (e.g.
  `lpips_model='@baseline'`: every run's LPA is bounded by one network's LPIPS, the
  suite's baseline, as the PAT paper bounds every model's with AlexNet's) and '@suite/x'
  by `workdir/x` (e.g. one generated -C set shared by every run)."""
  def resolve(v):
    if v == BASELINE:
      return member_dir(workdir, baseline, 0)
    if isinstance(v, str) and v.startswith(SUITE_DIR + "/"):
      return os.path.join(workdir, v[len(SUITE_DIR) + 1:])
    return v
  return {k: resolve(v) for k, v in options.items()}


def run_member(name: str, config: ml_collections.ConfigDict, seed: int, workdir: str,
               report_options: Mapping[str, Any], *, baseline: str) -> dict[str, Any]:
  """Trains (or reuses) run `name` at `seed` and writes (or reuses) its report; returns
  {'name', 'seed', 'trained_reused', 'report_reused', 'seconds', 'row'}."""
  tic = time.time()
  run_dir = member_dir(workdir, name, seed)
  _, trained_reused = ensure_trained(with_seed(config, seed), run_dir)
  report, _, report_reused = ensure_report(
      run_dir, **resolve_options(report_options, workdir, baseline))
  return {"name": name, "seed": seed, "trained_reused": trained_reused,
          "report_reused": report_reused, "seconds": time.time() - tic,
          "row": comparison.comparison_row(report)}


def _progress_line(k: int, total: int, r: Mapping[str, Any]) -> str:
  row = r["row"]
  what = "reused" if r["trained_reused"] and r["report_reused"] else "done"
  parts = [f"clean {100 * row['clean']:.1f}"]
  if row.get("c_mean") is not None:
    parts.append(f"-C {100 * row['c_mean']:.1f}")
  return (f"[{k}/{total}] {r['name']} seed {r['seed']}: {what} in {r['seconds']:.0f} s; "
          + ", ".join(parts))


def run_suite(configs: Mapping[str, ml_collections.ConfigDict], seeds: Sequence[int],
              workdir: str, report_options: Mapping[str, Any], *, baseline: str,
              jobs: int = 1, command: Callable[[str, int], list[str]] | None = None,
              log: Callable[[str], None] = print) -> None:
  """Trains and evaluates every (run, seed): every run at the first seed (the baseline's
  first: other runs' options may name it, see `resolve_options`), then every run at the
  next seed, and so on.

  Args:
    configs: run name -> its (equal-budget) config.
    seeds: the seeds.
    workdir: the suite's directory (see the module doc).
    report_options: `run.report.robustness_report` options, the same for every run.
    baseline: the run others are compared with (relative mCE) and whose seed 0 bounds
      LPA with `lpips_model='@baseline'`.
    jobs: runs in parallel (> 1 needs `command`): each in its own process.
    command: (name, seed) -> the argv of a process that runs `run_member` for that pair
      (e.g. `python -m experiments.reproduce --member=name:seed ...`).
    log: a progress line per run.
  """
  if baseline not in configs:
    raise ValueError(f"baseline={baseline!r} is not a run of the suite: {sorted(configs)}.")
  if jobs < 1 or (jobs > 1 and command is None):
    raise ValueError(f"jobs={jobs!r} must be >= 1, and > 1 needs a command.")
  # Seed-major: every run at the first seed, then at the next, ... (the baseline first in
  # each round), so that a suite stopped early has all its rows at the seeds it finished.
  order = [baseline] + [n for n in configs if n != baseline]
  pairs = [(n, s) for s in seeds for n in order]
  total, done = len(pairs), 0
  first, rest = pairs[:1], pairs[1:]
  for group in (first, rest):
    if jobs == 1 or len(group) == 1:
      for name, seed in group:
        r = run_member(name, configs[name], seed, workdir, report_options, baseline=baseline)
        done += 1
        log(_progress_line(done, total, r))
      continue
    running: list[tuple[str, int, subprocess.Popen, float]] = []
    queue = list(group)
    while queue or running:
      while queue and len(running) < jobs:
        name, seed = queue.pop(0)
        os.makedirs(member_dir(workdir, name, seed), exist_ok=True)
        out = open(os.path.join(member_dir(workdir, name, seed), "reproduce.log"), "w",
                   encoding="utf-8")
        running.append((name, seed, subprocess.Popen(command(name, seed), stdout=out,
                                                     stderr=subprocess.STDOUT), time.time()))
      time.sleep(1.0)
      for item in list(running):
        name, seed, proc, tic = item
        if proc.poll() is None:
          continue
        running.remove(item)
        if proc.returncode != 0:
          raise RuntimeError(f"run {name} seed {seed} failed (exit {proc.returncode}); see "
                             f"{os.path.join(member_dir(workdir, name, seed), 'reproduce.log')}")
        r = run_member(name, configs[name], seed, workdir, report_options, baseline=baseline)
        r.update(member_reuse(member_dir(workdir, name, seed)), seconds=time.time() - tic)
        done += 1
        log(_progress_line(done, total, r))


MEMBER_LINE = "MEMBER trained_reused={trained_reused} report_reused={report_reused}"


def member_reuse(run_dir: str) -> dict[str, bool]:
  """What a `--jobs` member process reused, from the `MEMBER_LINE` it printed last to its
  reproduce.log (the parent's own `run_member` afterwards always reuses)."""
  flags = {"trained_reused": False, "report_reused": False}
  try:
    with open(os.path.join(run_dir, "reproduce.log"), encoding="utf-8") as f:
      lines = [line for line in f if line.startswith("MEMBER ")]
  except OSError:
    return flags
  if lines:
    for part in lines[-1].split()[1:]:
      key, _, value = part.partition("=")
      if key in flags:
        flags[key] = value == "True"
  return flags


def _read_report(run_dir: str) -> dict[str, Any] | None:
  path = os.path.join(run_dir, "report", "report.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def suite_results(names: Sequence[str], seeds: Sequence[int], workdir: str, *,
                  baseline: str) -> dict[str, Any]:
  """The finished reports of the suite, reduced: {'rows' (run -> [comparison_row with
  'relative_mce' against the same seed's baseline, per finished seed]), 'table' (run ->
  `comparison.aggregate`), 'corruptions' (run -> corruption -> accuracy, mean over
  severities and seeds), 'seeds' (run -> the finished seeds), 'wall_seconds'}."""
  rows, per_corruption, finished = {}, {}, {}
  baselines = {s: _read_report(member_dir(workdir, baseline, s)) for s in seeds}
  for name in names:
    rows[name], acc, finished[name] = [], {}, []
    for seed in seeds:
      report = _read_report(member_dir(workdir, name, seed))
      if report is None:
        continue
      finished[name].append(seed)
      row = comparison.comparison_row(report)
      if baselines.get(seed) is not None:
        row["relative_mce"] = comparison.relative_mce(report, baselines[seed])
      rows[name].append(row)
      for c, values in (report.get("corrupted") or {}).get("accuracy", {}).items():
        acc.setdefault(c, []).append(float(np.mean(values)))
    per_corruption[name] = {c: float(np.mean(v)) for c, v in acc.items()}
  return {"rows": rows, "table": {n: comparison.aggregate(r) for n, r in rows.items() if r},
          "corruptions": per_corruption, "seeds": finished}


# The table's columns, in order (those present).
TABLE_KEYS = ("clean", "c_mean", "mce", "relative_mce")


def table_keys(table: Mapping[str, Mapping[str, Any]]) -> list[str]:
  """The columns of `table` in the suite table's order: clean, -C mean, mCE, relative
  mCE, the corruption families, the l_p radii (worst case, then AutoAttack), LPA per
  bound, eps*, ECE."""
  present = list(dict.fromkeys(k for row in table.values() for k in row))
  order = list(TABLE_KEYS) + [k for k in present if k.startswith("family/")]
  order += [k for k in present if k.startswith(("linf ", "l2 "))]
  order += [k for k in present if comparison.is_autoattack_key(k)]
  order += [k for k in present if k.startswith("lpips ")]
  order += [k for k in ("eps_star_gn", "eps_star_an", "ece") if k in present]
  return [k for k in order if k in present]


def check_orderings(table, claims: Sequence[Mapping[str, Any]], *,
                    rows: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                    seeds: Mapping[str, Sequence[int]] | None = None) -> list[dict[str, Any]]:
  """`comparison.ordering` (Welch's one-sided t over the seeds' means) for each claim
  {'better', 'worse', 'key', 'margin' (optional), 'claim' (the paper's words)}; missing
  runs give outcome None. With `rows` and `seeds` (`suite_results`' per-seed rows and
  their seeds), each result also has 'paired': `comparison.paired_ordering` (the one-sided
  paired t test) over the seeds both runs finished, and the claim's 'outcome' (and
  'held') is the paired test's when at least 2 seeds pair ('test': 'paired t'), else
  Welch's ('test': 'Welch t')."""
  out = []
  for c in claims:
    margin = float(c.get("margin", 0.0))
    r = comparison.ordering(table, c["better"], c["worse"], c["key"], margin=margin)
    r = {**r, "claim": c.get("claim", f"{c['better']} > {c['worse']} on {c['key']}"),
         "margin": margin, "test": "Welch t"}
    if rows is not None and seeds is not None:
      by_seed = {n: dict(zip(seeds.get(n, ()), rows.get(n, ()))) for n in (c["better"],
                                                                          c["worse"])}
      r["paired"] = comparison.paired_ordering(by_seed[c["better"]], by_seed[c["worse"]],
                                               c["key"], margin=margin)
      if r["outcome"] is not None and len(r["paired"]["seeds"]) >= 2:
        r["outcome"], r["test"] = r["paired"]["outcome"], "paired t"
        r["held"] = r["outcome"] == "held"
    out.append(r)
  return out


def _sigma(value: float | None) -> str:
  if value is None:
    return "-"
  return f"{value:+.1f}" if np.isfinite(value) else "n/a (no spread)"


def _p(value: float | None) -> str:
  if value is None:
    return "-"
  return f"{value:.3f}" if value >= 0.001 else "< 0.001"


def format_orderings(results: Sequence[Mapping[str, Any]]) -> str:
  """The orderings as a markdown table: the outcome ('held': significant in the claimed
  direction, one-sided p < 0.05; 'not shown': inconclusive; 'reversed': significant
  against it) and the test that decided it; the raw difference (better - worse, signed so
  that > 0 favours `better`; with a margin, the threshold it is held at), the effect size
  in pooled standard deviations and Welch's one-sided p; where the results are paired
  (`check_orderings` with rows), also the per-seed difference's mean ± std, its effect
  size d_z, the paired t test's one-sided p and at how many seeds the difference was > 0."""
  paired = any("paired" in r for r in results)
  lines = ["| claim (paper) | metric | outcome (test) | difference | effect (std devs) | p (Welch) |"
           + (" paired by seed | effect d_z | p (paired t) | > 0 at seeds |" if paired else ""),
           "|---|---|---|---:|---:|---:|" + ("---:|---:|---:|---:|" if paired else "")]
  for r in results:
    outcome = ("n/a (not run)" if r.get("outcome") is None
               else f"{r['outcome']} ({r.get('test', 'Welch t')})")
    scale = 1.0 if r["key"] in comparison.IN_PERCENT + comparison.UNITLESS else 100.0
    margin = float(r.get("margin", 0.0))
    diff = "-" if r["difference"] is None else f"{scale * (r['difference'] - margin):+.2f}"
    if margin and r["difference"] is not None:
      diff += f" (held if > {-scale * margin:+.2f})"
    line = (f"| {r['claim']} | {r['key']} | {outcome} | {diff} | {_sigma(r['sigma'])} |"
            f" {_p(r.get('p'))} |")
    if paired:
      p = r.get("paired") or {"seeds": []}
      if p["seeds"]:
        line += (f" {scale * (p['mean'] - margin):+.2f} ± {scale * p['std']:.2f} |"
                 f" {_sigma(p['sigma'])} | {_p(p.get('p'))} |"
                 f" {p['held_seeds']} of {len(p['seeds'])} |")
      else:
        line += " - | - | - | - |"
    lines.append(line)
  return "\n".join(lines)


def write_suite(workdir: str, results: Mapping[str, Any], *, title: str,
                reference: Mapping[str, Mapping[str, float]] | None = None,
                claims: Sequence[Mapping[str, Any]] = (),
                extra: Mapping[str, Any] | None = None, notes: str | None = None) -> str:
  """Writes table.md, table.json, bars.png and heatmap.png to `workdir`; returns the
  markdown. `reference`: run -> key -> the paper's number (a '(paper)' line per run);
  `claims`: see `check_orderings`; `extra`: more fields for table.json (e.g. the
  command, budget, wall time); `notes`: a paragraph under the table (budget, evaluation)."""
  table = results["table"]
  if not table:
    raise ValueError(f"no finished run in {workdir}: nothing to tabulate.")
  keys = table_keys(table)
  orderings = check_orderings(table, claims, rows=results["rows"],
                              seeds=results["seeds"]) if claims else []
  seeds = sorted({s for v in results["seeds"].values() for s in v})
  markdown = comparison.format_aggregate(
      table, keys=keys, reference=reference,
      title=f"{title} (mean ± std over seeds {seeds}; accuracies and mCE in %, best in bold)")
  if notes:
    markdown += "\n\n" + notes.strip()
  most = max(len(v) for v in results["seeds"].values())
  short = {n: v for n, v in results["seeds"].items() if len(v) < most}
  if short:  # a suite still running (or stopped): say which rows have fewer seeds
    markdown += "\n\n**Unfinished**: " + "; ".join(
        f"{n} ({'seeds ' + ', '.join(map(str, v)) if v else 'no seed'} of {most})"
        for n, v in short.items()) + (
            ". Means over different seeds are not comparable (seeds differ by more than "
            "most gaps here): `--table_only --seeds=N` tabulates the first N seeds only.")
  if orderings:
    markdown += "\n\n## The papers' orderings\n\n" + format_orderings(orderings)
  markdown += "\n\n![bars](bars.png)\n\n![heatmap](heatmap.png)\n"
  with open(os.path.join(workdir, "table.md"), "w", encoding="utf-8") as f:
    f.write(markdown)
  with open(os.path.join(workdir, "table.json"), "w", encoding="utf-8") as f:
    json.dump({"title": title, "keys": keys, "table": table, "rows": results["rows"],
               "seeds": results["seeds"], "corruptions": results["corruptions"],
               "orderings": orderings, "reference": reference or {}, **(extra or {})},
              f, indent=2)
  bar_keys = [k for k in ("clean", "c_mean") if k in keys] + [
      k for k in keys if k.startswith(("linf ", "l2 "))][:2]
  plots.save_suite_bars(table, os.path.join(workdir, "bars.png"), keys=bar_keys,
                        labels={"clean": "clean", "c_mean": "-C mean"})
  names = [n for n in corruptions_lib.BENCHMARK_CORRUPTIONS
           if any(n in v for v in results["corruptions"].values())]
  if names:
    plots.save_method_heatmap({r: results["corruptions"][r] for r in table}, names,
                              os.path.join(workdir, "heatmap.png"),
                              title="accuracy per corruption (mean over severities, seeds)")
  return markdown
