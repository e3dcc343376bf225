"""AdA on 8 (CPU) devices equals AdA on one: the attack (whole batch and nano-batches) and
the data-parallel AdA train step. Runs `tests/ada_sharding_worker.py` in a subprocess,
since the device count is fixed when jax starts."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ada_sharded_over_eight_devices_equals_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "ada_sharding_worker.py")],
                        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  line = [l for l in proc.stdout.splitlines() if l.startswith("OK")][-1]
  assert float(line.split()[1]) < 1e-5, line
