"""Tests for the side-by-side comparison of reports (adacorr/evaluation/comparison.py)."""

import pytest

from adacorr import corruptions
from adacorr.evaluation import comparison


def test_families_partition_the_benchmark_corruptions():
  members = [n for names in corruptions.FAMILIES.values() for n in names]
  assert sorted(members) == sorted(corruptions.BENCHMARK_CORRUPTIONS)
  assert len(members) == len(set(members)) == 15
  assert "brightness" in corruptions.FAMILIES["weather"]


def _report(clean, noise_acc, other_acc, mce, linf):
  accuracy = {n: [other_acc] * 5 for n in corruptions.BENCHMARK_CORRUPTIONS}
  accuracy["gaussian_noise"] = [noise_acc] * 5
  accuracy["shot_noise"] = [noise_acc, noise_acc, noise_acc, 0.0, 0.0]
  return {"clean": {"accuracy": clean},
          "corrupted": {"accuracy": accuracy, "mean_accuracy": 0.5, "mce": mce},
          "lp": [{"norm": "linf", "eps": "2/255", "worst_case": linf, "clean": clean}]}


def test_comparison_row_by_hand():
  row = comparison.comparison_row(_report(0.9, 0.6, 0.8, 0.3, 0.4))
  # noise: gaussian 0.6 x5, shot (0.6 x3, 0 x2) -> mean 0.36, impulse 0.8 x5:
  # (3.0 + 1.8 + 4.0) / 15.
  assert row["family/noise"] == pytest.approx(8.8 / 15)
  assert row["family/blur"] == pytest.approx(0.8)
  assert row["clean"] == 0.9 and row["c_mean"] == 0.5 and row["mce"] == 0.3
  assert row["linf 2/255"] == 0.4


def test_comparison_row_without_sections():
  row = comparison.comparison_row({"clean": {"accuracy": 0.7}})
  assert row["clean"] == 0.7 and row["mce"] is None and row["family/digital"] is None


def test_format_comparison_marks_the_best_per_column():
  rows = {"nominal": comparison.comparison_row(_report(0.9, 0.6, 0.8, 30.0, 0.4)),
          "ada": comparison.comparison_row(_report(0.88, 0.7, 0.8, 25.0, 0.5))}
  table = comparison.format_comparison(rows, title="T")
  lines = table.splitlines()
  assert lines[0] == "T"
  header = [c.strip() for c in lines[2].split("|")[1:-1]]
  nominal = [c.strip() for c in lines[4].split("|")[1:-1]]
  ada = [c.strip() for c in lines[5].split("|")[1:-1]]
  col = {h: i for i, h in enumerate(header)}
  assert nominal[col["clean acc"]] == "**90.00**" and ada[col["clean acc"]] == "88.00"
  assert ada[col["mCE"]] == "**25.00**" and nominal[col["mCE"]] == "30.00"  # lower wins
  assert ada[col["linf 2/255 acc"]] == "**50.00**"
  assert nominal[col["blur"]] == ada[col["blur"]] == "**80.00**"  # ties: both
  with pytest.raises(ValueError, match="rows"):
    comparison.format_comparison({})
