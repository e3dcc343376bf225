"""AdA and PAT on 8 (CPU) devices equal the same on one: the attacks (AdA whole batch and
nano-batches; Fast-LPA, LPA) and the data-parallel AdA / PAT train steps. Runs the
`tests/*_sharding_worker.py` scripts in subprocesses, since the device count is fixed when
jax starts."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# LPA's Newton projection divides by ||grad d||^2, which amplifies the round-off of a
# different reduction order (measured max difference 1.4e-5 in pixel values; 6e-8 elsewhere).
@pytest.mark.parametrize("worker,tolerance", [("ada_sharding_worker.py", 1e-5),
                                              ("pat_sharding_worker.py", 1e-4)])
def test_sharded_over_eight_devices_equals_one_device(worker, tolerance):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", worker)],
                        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  line = [l for l in proc.stdout.splitlines() if l.startswith("OK")][-1]
  assert float(line.split()[1]) < tolerance, line
