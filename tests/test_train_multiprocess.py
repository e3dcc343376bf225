"""End-to-end runs in subprocesses: 8 devices equal 1 device; kill-and-resume equals unbroken.

Each run is `tests/train_worker.py` (the tiny synthetic config). The number of CPU
devices is fixed when jax starts, hence one subprocess per run.
"""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from adacorr.train.checkpoint import restore_params
from adacorr.train.metric_writer import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "train_worker.py")


def _env(num_devices: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


def _start(workdir, num_devices=1, *args):
  return subprocess.Popen([sys.executable, WORKER, str(workdir), *args], env=_env(num_devices),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def _run(workdir, num_devices=1, *args) -> str:
  proc = _start(workdir, num_devices, *args)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out
  return out


def _final_state(workdir):
  return restore_params(os.path.join(workdir, "checkpoints"))


def _assert_trees_close(a, b, **tol):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


def test_eight_devices_equal_one_device(tmp_path):
  one, eight = tmp_path / "one", tmp_path / "eight"
  out8 = _run(eight, 8)
  assert "on 8 device(s)" in out8
  _run(one, 1)
  s1, s8 = _final_state(one), _final_state(eight)
  assert int(s1["step"]) == int(s8["step"]) == 24
  # The same global batch, global BatchNorm statistics: the same function, up to the
  # order of floating-point reductions across devices.
  _assert_trees_close(s1["params"], s8["params"], rtol=2e-4, atol=2e-5)
  _assert_trees_close(s1["batch_stats"], s8["batch_stats"], rtol=2e-4, atol=2e-5)
  _assert_trees_close(s1["opt_state"], s8["opt_state"], rtol=2e-3, atol=2e-5)
  # Both runs trained (the comparison is not between two untrained states), and the
  # logged losses agree step by step.
  loss1 = [r["loss"] for r in read_metrics(str(one)) if r["split"] == "train"]
  loss8 = [r["loss"] for r in read_metrics(str(eight)) if r["split"] == "train"]
  assert loss1[-1] < loss1[0]
  np.testing.assert_allclose(loss1, loss8, rtol=1e-4)


def test_sigkill_and_resume_equals_unbroken_run(tmp_path):
  unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
  _run(unbroken, 1)

  # Start a slowed-down run and SIGKILL it once a mid-run checkpoint exists.
  proc = _start(broken, 1, "--step_sleep=0.25")
  ckpt_dir = broken / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline:
    names = os.listdir(ckpt_dir) if ckpt_dir.exists() else []
    if any(d.isdigit() and int(d) >= 8 for d in names) or proc.poll() is not None:
      break
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  killed_at = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert 8 <= killed_at < 24

  out = _run(broken, 1)
  assert f"Resuming from checkpoint at step {killed_at}" in out
  a, b = _final_state(unbroken), _final_state(broken)
  assert int(a["step"]) == int(b["step"]) == 24
  # Same program, same data order, same keys: bit-for-bit on one CPU device.
  _assert_trees_close(a, b, rtol=0, atol=0)


def test_cli_trains_and_prints_a_summary(tmp_path):
  cmd = [sys.executable, "-m", "experiments.train",
         f"--config={os.path.join(ROOT, 'tests', 'configs', 'tiny_synthetic.py')}",
         f"--workdir={tmp_path / 'cli'}", "--config.num_steps=8", "--config.eval_every_steps=8"]
  result = subprocess.run(cmd, env=_env(1), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "test_accuracy" in result.stdout and "| steps" in result.stdout
  assert os.path.exists(tmp_path / "cli" / "summary.json")


def test_cli_requires_workdir():
  cmd = [sys.executable, "-m", "experiments.train",
         f"--config={os.path.join(ROOT, 'tests', 'configs', 'tiny_synthetic.py')}"]
  result = subprocess.run(cmd, env=_env(1), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode != 0
  assert "workdir" in result.stderr
