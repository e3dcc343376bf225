"""experiments/evaluate.py end to end on a tiny trained run (subprocesses)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  cmd = [sys.executable, os.path.join(ROOT, "tests", "train_worker.py"), str(workdir),
         "--config.num_steps=12"]
  result = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  return workdir


def _evaluate(workdir, *flags):
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "evaluate.py"),
         f"--workdir={workdir}", *flags]
  return subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_report_on_generated_corruptions(trained_workdir, tmp_path):
  out = tmp_path / "report"
  result = _evaluate(trained_workdir, "--corruption_names=brightness,gaussian_noise",
                     "--num_examples=40", f"--output_dir={out}",
                     f"--corrupted_dir={tmp_path / 'synthetic-C'}", "--lp_num_examples=24",
                     "--linf_eps=8/255", "--l2_eps=", "--pgd_steps=3", "--apgd_steps=4")
  assert result.returncode == 0, result.stdout + result.stderr
  for name in ("report.json", "report.md", "corruption_heatmap.png",
               "reliability_diagram.png"):
    assert (out / name).stat().st_size > 0, name
  report = json.loads((out / "report.json").read_text())
  assert report["num_examples"] == 40 and report["step"] == 12
  assert 0.0 <= report["clean"]["accuracy"] <= 1.0
  assert 0.0 <= report["calibration"]["ece"] <= 1.0
  assert report["calibration"]["temperature"] > 0
  accuracy = report["corrupted"]["accuracy"]
  assert set(accuracy) == {"brightness", "gaussian_noise"}
  assert all(len(v) == 5 and all(0 <= a <= 1 for a in v) for v in accuracy.values())
  assert report["corrupted"]["mce"] is None  # not all 15 benchmark corruptions ran
  assert sum(report["calibration"]["reliability"]["count"]) == 40
  (lp,) = report["lp"]  # one radius: l_inf 8/255 on 24 examples
  assert lp["norm"] == "linf" and lp["eps"] == "8/255"
  assert 0.0 <= lp["worst_case"] <= min(lp["PGD-3"], lp["APGD-CE"], lp["APGD-DLR"])
  assert max(lp["PGD-3"], lp["APGD-CE"], lp["APGD-DLR"]) <= lp["clean"]
  markdown = (out / "report.md").read_text()
  assert "## l_p robustness" in markdown
  assert "| gaussian_noise |" in markdown and "clean accuracy" in markdown
  # The generated -C set was cached and is reused by a second report.
  assert len(list((tmp_path / "synthetic-C").glob("*.npz"))) == 10
  again = _evaluate(trained_workdir, "--corruption_names=brightness,gaussian_noise",
                    "--num_examples=40", f"--output_dir={tmp_path / 'again'}",
                    f"--corrupted_dir={tmp_path / 'synthetic-C'}", "--lp_num_examples=0")
  assert again.returncode == 0, again.stderr
  assert json.loads((tmp_path / "again" / "report.json").read_text())["corrupted"] == \
      report["corrupted"]


def test_published_corruptions_only_for_cifar10(trained_workdir, tmp_path):
  result = _evaluate(trained_workdir, "--corruptions=published",
                     f"--output_dir={tmp_path / 'r'}")
  assert result.returncode != 0
  assert "only for cifar10" in result.stderr


def test_not_a_workdir(tmp_path):
  result = _evaluate(tmp_path)
  assert result.returncode != 0 and "config.json" in result.stderr
