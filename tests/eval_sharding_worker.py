"""`adacorr.evaluate` on 8 CPU devices against 1 (run by tests/test_robustness_eval.py in a
subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8). Prints
'OK <number of values compared>' when every number of the result (clean accuracy, ECE,
accuracy per corruption and severity, AutoAttack per component and in total) is the same
on both meshes. AutoAttack runs APGD-CE, APGD-T and Square at reduced budgets (FAB-T's
compilation would double the test's time; every component is sharded the same way, by
`attacks.robust_accuracy`)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position

from adacorr import evaluation, parallel  # pylint: disable=wrong-import-position
from tests.tiny_classifier import trained_mlp  # pylint: disable=wrong-import-position


def numbers(result):
  """Every number of a result but the timings, flattened to {path: value}."""
  flat = {}

  def walk(prefix, v):
    if isinstance(v, dict):
      for k, w in v.items():
        if k != "seconds":
          walk(f"{prefix}/{k}", w)
    elif isinstance(v, (list, tuple)):
      for i, w in enumerate(v):
        walk(f"{prefix}/{i}", w)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
      flat[prefix] = float(v)
  walk("", result.to_dict())
  return flat


def main():
  assert jax.device_count() == 8, jax.device_count()
  logits_fn, x, y = trained_mlp(40)  # 40 examples: batches of 16 pad to 8-multiples
  out = []
  for devices in (jax.devices()[:1], jax.devices()):
    r = evaluation.evaluate(
        logits_fn, x, y, key=jax.random.key(3), mesh=parallel.make_mesh(devices),
        threat_models={"linf": ["8/255"]}, autoattack="custom",
        aa_components=("apgd-ce", "apgd-t", "square"), aa_steps=10, aa_queries=40,
        aa_targets=2, corruptions=["gaussian_noise", "contrast"],
        batch_size=16, progress=False, log=None)
    out.append(numbers(r))
  one, eight = out
  assert one.keys() == eight.keys(), sorted(set(one) ^ set(eight))
  diff = {k: (one[k], eight[k]) for k in one if abs(one[k] - eight[k]) > 1e-6}
  assert not diff, diff
  # The run is not trivial: some examples robust, some not, at 8/255.
  linf8 = one["/autoattack_acc/linf 8/255"] if "/autoattack_acc/linf 8/255" in one else None
  assert linf8 is not None and 0 < linf8 < one["/clean_acc"], one
  print("OK", len(one))


if __name__ == "__main__":
  main()
