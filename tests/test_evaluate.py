"""python -m experiments.evaluate end to end on a tiny trained run (subprocesses)."""

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
  cmd = [sys.executable, "-m", "experiments.evaluate",
         f"--workdir={workdir}", *flags]
  return subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_report_on_generated_corruptions(trained_workdir, tmp_path):
  out = tmp_path / "report"
  result = _evaluate(trained_workdir, "--corruption_names=brightness,gaussian_noise",
                     "--num_examples=40", f"--output_dir={out}",
                     f"--corrupted_dir={tmp_path / 'synthetic-C'}", "--lp_num_examples=24",
                     "--linf_eps=8/255", "--l2_eps=", "--pgd_steps=3", "--apgd_steps=4",
                     "--masking_steps=6", "--aa_steps=3", "--square_queries=30",
                     "--lpa_num_examples=0", "--an_steps=20", "--an_batch_size=16")
  assert result.returncode == 0, result.stdout + result.stderr
  for name in ("report.json", "report.md", "corruption_heatmap.png",
               "reliability_diagram.png", "lp_robustness_curves.png"):
    assert (out / name).stat().st_size > 0, name
  report = json.loads((out / "report.json").read_text())
  assert report["num_examples"] == 40 and report["step"] == 12
  assert set(report["seconds"]) == {"clean", "lp", "noise", "corrupted"}  # wall per section
  assert all(v >= 0 for v in report["seconds"].values())
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
  single = ["PGD-3", "PGD-6", "APGD-CE", "APGD-DLR", "AutoAttack"]
  assert 0.0 <= lp["worst_case"] <= min(lp[k] for k in single)
  assert max(lp[k] for k in single) <= lp["clean"]
  aa = [lp[f"AA/{c}"] for c in ("apgd-ce", "apgd-t", "fab-t", "square")]  # cumulative
  assert aa == sorted(aa, reverse=True) and aa[-1] == lp["AutoAttack"]
  assert isinstance(report["lp_warnings"], list)
  noise = report["noise"]  # eps*_GN on the l_p examples
  assert noise["num_examples"] == 24 and noise["max_norm"] == pytest.approx(768 ** 0.5)  # 16x16x3
  assert 0.0 <= noise["fraction_unflipped"] <= 1.0
  assert noise["an"]["steps"] == 20 and noise["an"]["batch_size"] == 16
  assert noise["fraction_misclassified_clean"] == pytest.approx(1.0 - lp["clean"])
  if noise["fraction_misclassified_clean"] < 0.5 and noise["fraction_unflipped"] < 0.5:
    assert 0.0 < noise["eps_star"] <= noise["max_norm"]
  markdown = (out / "report.md").read_text()
  assert "## l_p robustness" in markdown and "## Noise robustness" in markdown
  # A reduced AutoAttack (3 iterations, 30 queries) says what it is, not 'AutoAttack'.
  label = "APGD-CE+APGD-T(9)+FAB-T(9)+Square(30 q) 3 it"
  assert lp["autoattack_label"] == label
  assert f"| {label} |" in markdown and "| AutoAttack |" not in markdown
  assert "| AA/square |" in markdown
  assert "lpips" not in report and "LPIPS" not in markdown  # --lpa_num_examples=0
  assert "| gaussian_noise |" in markdown and "clean accuracy" in markdown
  # The generated -C set was cached and is reused by a second report.
  assert len(list((tmp_path / "synthetic-C").glob("*.npz"))) == 10
  again = _evaluate(trained_workdir, "--corruption_names=brightness,gaussian_noise",
                    "--num_examples=40", f"--output_dir={tmp_path / 'again'}",
                    f"--corrupted_dir={tmp_path / 'synthetic-C'}", "--lp_num_examples=0")
  assert again.returncode == 0, again.stderr
  assert json.loads((tmp_path / "again" / "report.json").read_text())["corrupted"] == \
      report["corrupted"]


def _check_lpips_section(report, out, *, bounds, num_examples):
  lpips = report["lpips"]
  assert lpips["bounds"] == bounds and lpips["num_examples"] == num_examples
  assert lpips["steps"] == 3 and lpips["lambda_steps"] == 2
  assert lpips["attack"] == "LPA+PPGD" and set(lpips["per_attack"]) == {"LPA", "PPGD"}
  for per in lpips["per_attack"].values():  # the worst case is below each attack
    assert all(w <= a <= lpips["clean_accuracy"] for w, a in zip(lpips["accuracy"], per))
  for key in ("accuracy", "mean_distance", "max_distance", "num_outside"):
    assert len(lpips[key]) == len(bounds), key
  clean = lpips["clean_accuracy"]
  assert 0.0 < clean <= 1.0
  assert all(0.0 <= a <= clean for a in lpips["accuracy"])
  assert lpips["accuracy"][-1] <= clean
  for bound, mean, largest, outside in zip(bounds, lpips["mean_distance"],
                                           lpips["max_distance"], lpips["num_outside"]):
    assert 0.0 < mean <= largest <= bound + 1e-4 and outside == 0
  assert (out / "lpips_robustness_curve.png").stat().st_size > 0
  markdown = (out / "report.md").read_text()
  assert "## Perceptual (LPIPS) robustness" in markdown and "| 0 (clean) |" in markdown
  return lpips


def test_lpips_robustness(trained_workdir, tmp_path):
  # 13 examples in batches of 8: the second batch is padded with copies of its examples.
  flags = ["--corruptions=none", "--num_examples=40", "--lp_num_examples=0",
           "--lpa_num_examples=13", "--lpa_steps=3", "--lpa_lambda_steps=2",
           "--lpips_bounds=0.05,1/2", "--batch_size=8"]
  result = _evaluate(trained_workdir, *flags, f"--output_dir={tmp_path / 'self'}")
  assert result.returncode == 0, result.stdout + result.stderr
  report = json.loads((tmp_path / "self" / "report.json").read_text())
  assert "lp" not in report
  lpips = _check_lpips_section(report, tmp_path / "self", bounds=[0.05, 0.5], num_examples=13)
  assert lpips["model"] == "self" and lpips["layers"] == ["conv1", "conv2"]
  # The tiny model is fooled within LPIPS 0.5 on most examples.
  assert lpips["accuracy"][-1] < lpips["clean_accuracy"]
  # Bounded by another run's network (here the same run's SmallCNN, as for an AlexNet run).
  result = _evaluate(trained_workdir, *flags, f"--lpips_model={trained_workdir}",
                     f"--output_dir={tmp_path / 'external'}")
  assert result.returncode == 0, result.stdout + result.stderr
  report = json.loads((tmp_path / "external" / "report.json").read_text())
  external = _check_lpips_section(report, tmp_path / "external", bounds=[0.05, 0.5],
                                  num_examples=13)
  assert external["model"] == str(trained_workdir)
  assert external["clean_accuracy"] == lpips["clean_accuracy"]


def test_lpips_model_must_be_a_workdir(trained_workdir, tmp_path):
  result = _evaluate(trained_workdir, f"--lpips_model={tmp_path}", "--lpa_num_examples=4",
                     f"--output_dir={tmp_path / 'r'}")
  assert result.returncode != 0 and "lpips_model must be a training workdir" in result.stderr


def test_published_corruptions_only_for_cifar10(trained_workdir, tmp_path):
  result = _evaluate(trained_workdir, "--corruptions=published",
                     f"--output_dir={tmp_path / 'r'}")
  assert result.returncode != 0
  assert "only for cifar10" in result.stderr


def test_not_a_workdir(tmp_path):
  result = _evaluate(tmp_path)
  assert result.returncode != 0 and "config.json" in result.stderr


def test_ensure_report_reuses_a_report_of_the_same_checkpoint_and_options(trained_workdir,
                                                                          tmp_path):
  from adacorr.run import report as report_lib  # pylint: disable=import-outside-toplevel
  options = dict(corruption_names=["brightness", "gaussian_noise"], extra=False,
                 num_examples=16, corrupted_dir=str(tmp_path / "C"), lp_num_examples=0,
                 noise_num_examples=0, lpips_bounds=[])
  out = str(tmp_path / "report")
  first, _, reused = report_lib.ensure_report(str(trained_workdir), out, **options)
  assert not reused and first["options"]["num_examples"] == 16
  again, names, reused = report_lib.ensure_report(str(trained_workdir), out, **options)
  assert reused and again == json.loads(json.dumps(first))
  assert sorted(names) == ["brightness", "gaussian_noise"]
  other, _, reused = report_lib.ensure_report(str(trained_workdir), out,
                                              **dict(options, num_examples=8,
                                                     corrupted_dir=str(tmp_path / "C8")))
  assert not reused and other["num_examples"] == 8
  with pytest.raises(ValueError, match="unknown report options"):
    report_lib.report_options(num_exampels=8)


def test_finished_summary_only_for_the_same_config(trained_workdir):
  from adacorr import run  # pylint: disable=import-outside-toplevel
  from tests.configs import tiny_synthetic  # pylint: disable=import-outside-toplevel
  config = tiny_synthetic.get_config()
  config.num_steps = 12  # the fixture's run
  summary = run.finished_summary(config, str(trained_workdir))
  assert summary is not None and summary["steps"] == 12
  again, reused = run.ensure_trained(config, str(trained_workdir))  # no training
  assert reused and again == summary
  config.log_every_steps = 3  # bookkeeping: still the same run
  assert run.finished_summary(config, str(trained_workdir)) is not None
  config.num_steps = 13
  assert run.finished_summary(config, str(trained_workdir)) is None


def test_step_evaluates_that_checkpoint(trained_workdir, tmp_path):
  # The run kept checkpoints 8 and 12 (every 4 steps, keep 2).
  result = _evaluate(trained_workdir, "--step=8", "--corruptions=none", "--lp_num_examples=0",
                     "--noise_num_examples=0", "--lpips_bounds=", "--num_examples=64")
  assert result.returncode == 0, result.stdout + result.stderr
  with open(os.path.join(trained_workdir, "report_step8", "report.json"),
            encoding="utf-8") as f:
    assert json.load(f)["step"] == 8
  from adacorr.run import report as report_lib  # pylint: disable=import-outside-toplevel
  latest, _ = report_lib.robustness_report(str(trained_workdir), corruptions="none",
                                           num_examples=64, lp_num_examples=0,
                                           noise_num_examples=0, lpips_bounds=[])
  assert latest["step"] == 12
  with pytest.raises(ValueError, match=r"step=5.*\[8, 12\]"):
    report_lib.robustness_report(str(trained_workdir), step=5, corruptions="none")


def _evaluate_processes(workdir, *flags, num_processes=2):
  """`experiments.evaluate` as 2 processes x 4 CPU devices of one jax.distributed job."""
  import socket  # pylint: disable=import-outside-toplevel
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  procs = []
  for i in range(num_processes):
    env = dict(ENV, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               ADACORR_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES=str(num_processes), JAX_PROCESS_ID=str(i))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}", *flags],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  try:
    results = []
    for p in procs:
      out, err = p.communicate(timeout=600)
      results.append((p.returncode, out, err))
    return results
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


def test_two_processes_evaluate_clean_and_corruptions_as_one(trained_workdir, tmp_path):
  flags = ["--corruption_names=brightness,gaussian_noise", "--num_examples=64",
           "--lp_num_examples=0", "--noise_num_examples=0", "--lpips_bounds="]
  one = _evaluate(trained_workdir, *flags, f"--output_dir={tmp_path / 'one'}",
                  f"--corrupted_dir={tmp_path / 'C1'}")
  assert one.returncode == 0, one.stdout + one.stderr
  # Process 0 builds the corrupted sets into the shared dir while process 1 waits.
  outs = _evaluate_processes(trained_workdir, *flags, f"--output_dir={tmp_path / 'two'}",
                             f"--corrupted_dir={tmp_path / 'C2'}")
  assert all(rc == 0 for rc, _, _ in outs), outs
  # Process 0 alone writes the report.
  assert all("Report written" not in out for _, out, _ in outs[1:]), outs
  assert "Report written" in outs[0][1], outs[0]
  with open(tmp_path / "one" / "report.json", encoding="utf-8") as f:
    a = json.load(f)
  with open(tmp_path / "two" / "report.json", encoding="utf-8") as f:
    b = json.load(f)
  assert a["num_examples"] == b["num_examples"] == 64
  assert a["clean"] == b["clean"]  # each process evaluated its rows; the totals are global
  assert a["corrupted"]["accuracy"] == b["corrupted"]["accuracy"]
  assert abs(a["calibration"]["ece"] - b["calibration"]["ece"]) < 1e-5

  # The attacks are not multi-process yet: a clear error, not a wrong number.
  outs = _evaluate_processes(trained_workdir, "--corruptions=none", "--num_examples=64",
                             f"--output_dir={tmp_path / 'three'}")
  for rc, _, err in outs:
    assert rc != 0 and "not multi-process yet" in err and "--lp_num_examples=0" in err, err


def test_report_options_are_spelled_once():
  # experiments/evaluate.py's flags are ReportOptions' fields (read from its --helpxml in a
  # subprocess: importing the CLI here would define its absl flags beside other CLIs'), the
  # suites' report dicts are checked against them, and a typo names the closest option.
  import dataclasses  # pylint: disable=import-outside-toplevel
  import xml.etree.ElementTree as ET  # pylint: disable=import-outside-toplevel
  from adacorr.run import report as report_lib  # pylint: disable=import-outside-toplevel
  from experiments.configs import suites  # pylint: disable=import-outside-toplevel
  out = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--helpxml"], env=ENV,
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  flags = {f.findtext("name"): f.findtext("default")
           for f in ET.fromstring(out.stdout).iter("flag")
           if f.findtext("file", "").endswith("evaluate.py")
           or "experiments.evaluate" in f.findtext("file", "")}
  defaults = report_lib.ReportOptions()
  for field in dataclasses.fields(report_lib.ReportOptions):
    flag = field.metadata.get("flag", field.name)
    assert flag in flags, (flag, sorted(flags))
    value = getattr(defaults, field.name)
    text = ",".join(value) if isinstance(value, tuple) else (
        "" if value is None else str(value).lower() if isinstance(value, bool) else str(value))
    assert (flags[flag] or "") == text, (flag, flags[flag], text)
  assert "attacks" in flags and "autoattack" not in flags
  for name in suites.SUITES:
    suites.get_suite(name)
  with pytest.raises(ValueError, match="did you mean 'lp_num_examples'"):
    report_lib.make_report_options({"lp_num_exampels": 3})
  options = report_lib.make_report_options({"linf_eps": ["8/255"]}, seed=3)
  assert options.linf_eps == ("8/255",) and options.seed == 3
  assert options.to_dict()["linf_eps"] == ["8/255"]
