r"""AutoAttack-standard on a quickstart model: images/s per component and the robust accuracy.

  python -m benchmarks.autoattack [--workdir=runs/demo/nominal] [--num_examples=100]
      [--radii=linf:2/255,linf:8/255,l2:0.5] [--json=benchmarks/autoattack_cpu.json]

Loads a trained run (default: the nominal SmallCNN of `make demo`, trained first if
missing), then per radius: times each AutoAttack component (APGD-CE 100 steps, APGD-T
9 x 100, FAB-T 9 x 100, Square 5000 queries) on all `--num_examples` test images (the
first call compiles; the second is timed: images/s), and runs `attacks.autoattack`
(standard: each component only on the examples still robust) for the robust accuracy
after each component and its wall time, beside PGD-20 and APGD-CE/DLR (50 steps) as
`experiments/evaluate.py` ran them before AutoAttack. Prints a table and writes JSON.
"""

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from adacorr import attacks
from adacorr import data as data_lib
from adacorr.attacks.autoattack import ORDER
from adacorr.evaluation import parse_radius
from adacorr.run import ensure_trained
from adacorr.run.report import load_run
from experiments.configs import fashion_mnist_ada_nominal


def _timed(fn, *args):
  jax.block_until_ready(fn(*args))  # compile
  tic = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - tic


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="runs/demo/nominal")
  parser.add_argument("--num_examples", type=int, default=100)
  parser.add_argument("--radii", default="linf:2/255,linf:8/255,l2:0.5")
  parser.add_argument("--json", default="benchmarks/autoattack_cpu.json")
  args = parser.parse_args()

  if not os.path.exists(os.path.join(args.workdir, "config.json")):
    ensure_trained(fashion_mnist_ada_nominal.get_config(), args.workdir)
  config, info, model, variables, step = load_run(args.workdir)
  _, (test,) = data_lib.load_dataset(config, splits=(info.test_split,))
  images, labels = test.get(np.arange(args.num_examples))
  x = jnp.asarray(images, jnp.float32) / 255.0
  y = jnp.asarray(labels, jnp.int32)
  logits_fn = jax.jit(lambda v: model.apply(variables, v, train=False))
  keys = jax.random.split(jax.random.PRNGKey(0), x.shape[0])
  clean = float(jnp.mean(jnp.argmax(logits_fn(x), -1) == y))

  result = {"device": f"{jax.devices()[0].device_kind} ({jax.default_backend()}, "
                      f"{jax.device_count()} devices, {os.cpu_count()} CPUs)",
            "platform": platform.platform(), "workdir": args.workdir, "model": config.model,
            "dataset": config.dataset, "step": step, "num_examples": args.num_examples,
            "clean": clean, "radii": []}
  print(f"{config.model} on {config.dataset} (step {step}), {args.num_examples} test images, "
        f"clean {100 * clean:.1f}%; {result['device']}")
  header = (f"{'radius':>14} | {'component':>10} | {'images/s':>9} | {'alone acc':>9} | "
            f"{'AA cumulative':>13}")
  print(header + "\n" + "-" * len(header))
  for item in args.radii.split(","):
    norm, text = item.split(":")
    eps = parse_radius(text)
    comps = attacks.component_attacks(logits_fn, norm=norm, eps=eps,
                                      names=ORDER["standard"])
    per = {}
    for name, fn in comps.items():
      xa, sec = _timed(fn, x, y, keys)
      per[name] = {"seconds": sec, "images_per_s": x.shape[0] / sec,
                   "accuracy_alone": float(jnp.mean(jnp.argmax(logits_fn(xa), -1) == y))}
    tic = time.perf_counter()
    aa = attacks.autoattack(logits_fn, x, y, jax.random.PRNGKey(1), norm=norm, eps=eps)
    aa_seconds = time.perf_counter() - tic
    old = {
        "PGD-20": jax.jit(lambda a, b, k: attacks.pgd(logits_fn, a, b, k, norm=norm, eps=eps,
                                                      step_size=2.5 * eps / 20, num_steps=20)),
        "APGD-CE": jax.jit(lambda a, b, k: attacks.apgd(logits_fn, a, b, k, norm=norm, eps=eps,
                                                        num_steps=50, loss="ce")),
        "APGD-DLR": jax.jit(lambda a, b, k: attacks.apgd(logits_fn, a, b, k, norm=norm,
                                                         eps=eps, num_steps=50, loss="dlr")),
    }
    before = attacks.robust_accuracy(logits_fn, x, y, jax.random.PRNGKey(2), old,
                                     threat_model=(norm, eps))
    row = {"norm": norm, "eps": text, "components": per, "autoattack": aa["per_attack"],
           "autoattack_robust_accuracy": aa["robust_accuracy"],
           "autoattack_seconds": aa_seconds, "num_attacked": aa["num_attacked"],
           "previous_suite": before["per_attack"],
           "previous_worst_case": before["robust_accuracy"]}
    result["radii"].append(row)
    for name, p in per.items():
      cum = aa["per_attack"].get(name.split("@")[0])
      label = name if not name.startswith("apgd-t@") else f"apgd-t t={name[7:]}"
      print(f"{norm + ' ' + text:>14} | {label:>10} | {p['images_per_s']:9.1f} | "
            f"{100 * p['accuracy_alone']:8.1f}% | "
            + (f"{100 * cum:12.1f}%" if cum is not None and (
                not name.startswith("apgd-t@") or name.endswith("@10")) else ""))
    print(f"{norm + ' ' + text:>14} | AutoAttack standard {aa_seconds:.1f} s: robust "
          f"{100 * aa['robust_accuracy']:.1f}%; before (PGD-20, APGD-CE/DLR 50, worst case): "
          f"{100 * before['robust_accuracy']:.1f}%")
  os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
  with open(args.json, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
