r"""AdA's memory plan: the estimated bytes per example and the nano-batch 'auto' picks.

  python -m benchmarks.ada_memory [--json=benchmarks/ada_memory.json]
      [--memory_gib=16,40,80,141] [--fraction=0.5]

For each paper setting (classifier, corruption net, image size), prints
`adacorr.attacks.adversarial_augment.ada_bytes_per_example` (an upper bound on one
example's memory in an AdA ascent step: its perturbed weight copy, activations and
gradients; traced with `jax.make_jaxpr`, nothing is compiled or run) and the nano-batch
per device that `chunk_size='auto'` picks on a device of each `--memory_gib` size at
`--fraction` of its memory (`adacorr.attacks.memory.auto_chunk_size`). The paper's own
nano-batches were 8 per device on CIFAR-10 and 1 on ImageNet (App. E).
Runs on any machine (CPU included) in under a minute.
"""

import argparse
import json
import platform

import jax
import jax.numpy as jnp

from adacorr.attacks import adversarial_augment as aa
from adacorr.attacks import memory
from adacorr.models import get_model
from adacorr.models.corruption import CAE, EDSR

# (name, classifier, its kwargs, image shape, classes, corruption net)
SETTINGS = (
    ("CIFAR-10 EDSR", "preact_resnet50", {}, (32, 32, 3), 10, EDSR()),
    ("CIFAR-10 CAE", "preact_resnet50", {}, (32, 32, 3), 10, CAE()),
    ("ImageNet 128 EDSR", "resnet50", {}, (128, 128, 3), 100, EDSR()),
    ("ImageNet 128 CAE", "resnet50", {}, (128, 128, 3), 100, CAE()),
)


def per_example_bytes(model_name, model_kwargs, shape, num_classes, net):
  """`ada_bytes_per_example` for abstract (traced, never computed) weights and images."""
  model = get_model(model_name, num_classes=num_classes, **model_kwargs)
  x = jax.ShapeDtypeStruct((2,) + shape, jnp.float32)
  y = jax.ShapeDtypeStruct((2,), jnp.int32)
  model_vars = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x.shape),
                                                 train=False))
  net_params = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1,) + shape)))["params"]

  def estimate(model_vars, net_params, x, y):
    logits_fn = lambda images: model.apply(model_vars, images, train=False)  # noqa: E731
    apply = lambda p, images: net.apply({"params": p}, images)  # noqa: E731
    return aa.ada_bytes_per_example(apply, net_params, logits_fn, x, y)

  box = {}

  def traced(model_vars, net_params, x, y):
    box["bytes"] = estimate(model_vars, net_params, x, y)
    return 0

  jax.eval_shape(traced, model_vars, net_params, x, y)
  weights = sum(p.size * 4 for p in jax.tree.leaves(net_params))
  return box["bytes"], weights


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--json", default="benchmarks/ada_memory.json")
  parser.add_argument("--memory_gib", default="16,40,80,141")
  parser.add_argument("--fraction", type=float, default=memory.DEFAULT_FRACTION)
  args = parser.parse_args()
  sizes = [float(v) for v in args.memory_gib.split(",")]
  rows = []
  for name, model_name, kwargs, shape, classes, net in SETTINGS:
    per_example, weights = per_example_bytes(model_name, kwargs, shape, classes, net)
    fits = {f"{g:g} GiB": memory.auto_chunk_size(10 ** 6, per_example,
                                                 int(args.fraction * g * 2 ** 30))
            for g in sizes}
    rows.append({"setting": name, "net_params": weights // 4,
                 "mib_per_example": per_example / 2 ** 20,
                 "weights_mib": weights / 2 ** 20, "nano_batch_per_device": fits})
  header = ["setting", "net params", "MiB / example"] + [f"auto @ {g:g} GiB" for g in sizes]
  print(f"AdA memory plan (estimate, fraction {args.fraction:g} of device memory)")
  print("| " + " | ".join(header) + " |")
  print("|" + "|".join("---" for _ in header) + "|")
  for r in rows:
    print(f"| {r['setting']} | {r['net_params']:,} | {r['mib_per_example']:.1f} | "
          + " | ".join(str(v) for v in r["nano_batch_per_device"].values()) + " |")
  with open(args.json, "w", encoding="utf-8") as f:
    json.dump({"fraction": args.fraction, "jax": jax.__version__,
               "machine": platform.machine(), "rows": rows}, f, indent=2)
  print(f"Wrote {args.json}")


if __name__ == "__main__":
  main()
