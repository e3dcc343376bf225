"""The papers' orderings of a finished suite, recomputed from its committed table.json.

  python -m benchmarks.suite_orderings [--table=benchmarks/suite_fashion_mnist/table.json]
      [--suite=fashion_mnist] [--json=benchmarks/suite_fashion_mnist/orderings.json]

Reads the per-seed rows the suite committed and decides each claim of the suite
(`experiments/configs/suites.py`) with `run.reproduce.check_orderings`: a one-sided paired
t test over the seeds (Welch's t when fewer than 2 seeds pair); 'held' needs p < 0.05 in
the claimed direction. Prints the markdown table and writes the JSON.
"""

import argparse
import json

from adacorr.evaluation import comparison
from adacorr.run import reproduce
from experiments.configs import suites


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--table", default="benchmarks/suite_fashion_mnist/table.json")
  parser.add_argument("--suite", default="fashion_mnist", choices=sorted(suites.SUITES))
  parser.add_argument("--json", default="benchmarks/suite_fashion_mnist/orderings.json")
  args = parser.parse_args()
  with open(args.table, encoding="utf-8") as f:
    saved = json.load(f)
  rows, seeds = saved["rows"], saved["seeds"]
  table = {name: comparison.aggregate(r) for name, r in rows.items()}
  results = reproduce.check_orderings(table, suites.SUITES[args.suite]["claims"], rows=rows,
                                      seeds=seeds)
  print(reproduce.format_orderings(results))
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"source": args.table, "alpha": comparison.ALPHA, "orderings": results}, f,
                indent=1)
      f.write("\n")


if __name__ == "__main__":
  main()
