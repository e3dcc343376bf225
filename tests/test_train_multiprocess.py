"""End-to-end runs in subprocesses: 8 devices equal 1 device, 2 processes x 4 devices equal
1 process x 8 devices; kill-and-resume and SIGTERM-and-resume equal unbroken runs.

Each run is `tests/train_worker.py` (the tiny synthetic config). The number of CPU
devices is fixed when jax starts, hence one subprocess per run; several processes join
with `jax.distributed.initialize` on localhost (CPU collectives over Gloo).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from adacorr import data as data_lib
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


def _start(workdir, num_devices=1, *args, env=None):
  return subprocess.Popen([sys.executable, WORKER, str(workdir), *args],
                          env={**_env(num_devices), **(env or {})},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def _run(workdir, num_devices=1, *args) -> str:
  proc = _start(workdir, num_devices, *args)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out
  return out


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_processes(workdir, *args, num_processes=2, devices_each=4, status=0) -> list[str]:
  """Runs the worker as `num_processes` processes of one jax.distributed job, joined as
  the CLIs join one (`parallel.initialize_distributed`, from the JAX_* variables)."""
  port = _free_port()
  procs = [_start(workdir, devices_each, *args,
                  env={"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                       "JAX_NUM_PROCESSES": str(num_processes), "JAX_PROCESS_ID": str(i)})
           for i in range(num_processes)]
  try:
    outs = [proc.communicate(timeout=600)[0] for proc in procs]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, out in zip(procs, outs):
    assert proc.returncode == status, out
  return outs


def _final_state(workdir):
  return restore_params(os.path.join(workdir, "checkpoints"))


def _assert_trees_close(a, b, **tol):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


def test_eight_devices_and_two_processes_equal_one_device(tmp_path):
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

  # Two processes of 4 devices each (jax.distributed on localhost).
  two, broken = tmp_path / "two", tmp_path / "broken"
  outs = _run_processes(two, "--record_rows")
  assert "on 8 device(s)" in outs[0] and "on 8 device(s)" not in outs[1]  # process 0 prints

  # Each process read only its own half of every global batch.
  rows = [np.load(two / f"rows_{i}.npy") for i in range(2)]
  assert rows[0].shape == rows[1].shape == (24, 16)
  with open(two / "config.json", encoding="utf-8") as f:
    batch, seed = json.load(f)["global_batch_size"], 0
  num_train = data_lib.load_split("synthetic", "train").num_examples
  for step in range(24):
    expected = data_lib.batch_indices(num_train, batch, step, seed)
    np.testing.assert_array_equal(rows[0][step], expected[:16])
    np.testing.assert_array_equal(rows[1][step], expected[16:])

  # The same function as one process with 8 devices (the 8-vs-1 test's tolerance).
  s8, s2 = _final_state(eight), _final_state(two)
  assert int(s8["step"]) == int(s2["step"]) == 24
  _assert_trees_close(s8["params"], s2["params"], rtol=2e-4, atol=2e-5)
  _assert_trees_close(s8["batch_stats"], s2["batch_stats"], rtol=2e-4, atol=2e-5)
  # Written once: one checkpoint series (kept 2), one metrics line per logged step, and
  # both processes report the global test accuracy.
  assert sorted(int(d) for d in os.listdir(two / "checkpoints") if d.isdigit()) == [20, 24]
  train_steps = [r["step"] for r in read_metrics(str(two)) if r["split"] == "train"]
  assert train_steps == [4, 8, 12, 16, 20, 24]
  finished = [line for out in outs for line in out.splitlines() if line.startswith("FINISHED")]
  assert len(finished) == 2 and finished[0] == finished[1], finished
  assert "test_examples=" in finished[0]

  # SIGTERM to process 0 at step 6: both processes save the step JAX's preemption sync
  # point picks, exit with 143, and a 2-process rerun resumes to the unbroken result.
  outs = _run_processes(broken, "--sigterm_at_step=6", "--step_sleep=0.2",
                        status=128 + signal.SIGTERM)
  stops = {line for out in outs for line in out.splitlines() if line.startswith("PREEMPTED")}
  assert len(stops) == 1, outs  # the same step in both processes
  stopped = int(stops.pop().split()[-1])
  assert 6 <= stopped < 24
  assert max(int(d) for d in os.listdir(broken / "checkpoints") if d.isdigit()) == stopped
  outs = _run_processes(broken)
  assert f"Resuming from checkpoint at step {stopped}" in outs[0]
  _assert_trees_close(_final_state(two), _final_state(broken), rtol=0, atol=0)


def test_sigkill_or_sigterm_and_resume_equals_unbroken_run(tmp_path):
  unbroken, broken, preempted = tmp_path / "unbroken", tmp_path / "broken", tmp_path / "sigterm"
  _run(unbroken, 1)

  # SIGTERM after step 10 (not a checkpoint step): a checkpoint of step 10, exit 143.
  proc = _start(preempted, 1, "--sigterm_at_step=10")
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 128 + signal.SIGTERM, out
  assert "PREEMPTED at step 10" in out and not (preempted / "summary.json").exists()
  assert max(int(d) for d in os.listdir(preempted / "checkpoints") if d.isdigit()) == 10
  out = _run(preempted, 1)
  assert "Resuming from checkpoint at step 10" in out
  _assert_trees_close(_final_state(unbroken), _final_state(preempted), rtol=0, atol=0)

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


def test_resuming_with_another_config_is_an_error_unless_forced(tmp_path):
  workdir = tmp_path / "run"
  _run(workdir, 1, "--config.num_steps=8")
  proc = _start(workdir, 1, "--config.num_steps=12", "--config.learning_rate=0.2")
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode != 0
  assert "learning_rate: 0.05 there, 0.2 now" in out and "num_steps: 8 there, 12 now" in out
  assert "force_resume" in out
  # Bookkeeping fields may change; force_resume continues from step 8.
  out = _run(workdir, 1, "--config.num_steps=12", "--config.learning_rate=0.2",
             "--config.force_resume=True", "--config.log_every_steps=2")
  assert "Resuming from checkpoint at step 8" in out
  assert int(_final_state(workdir)["step"]) == 12


def test_an_ada_step_on_two_processes_equals_one_process(tmp_path):
  config = f"--config={os.path.join(ROOT, 'tests', 'configs', 'tiny_ada.py')}"
  _run(tmp_path / "eight", 8, config)
  _run_processes(tmp_path / "two", config)
  s8, s2 = _final_state(tmp_path / "eight"), _final_state(tmp_path / "two")
  assert int(s8["step"]) == int(s2["step"]) == 1
  for part in ("params", "batch_stats", "opt_state"):
    _assert_trees_close(s8[part], s2[part], rtol=2e-4, atol=2e-5)
  # The step changed the parameters: the momentum holds the AdA loss's gradient.
  assert max(float(np.abs(np.asarray(m)).max()) for m in jax.tree.leaves(s8["opt_state"])) > 1e-3
