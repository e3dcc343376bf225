r"""Gradient steps inside `lax.fori_loop` on XLA:CPU, with and without `canonical_convs`.

  python -m benchmarks.conv_in_loop [--steps=10] [--batch=64] [--json=benchmarks/conv_in_loop_cpu.json]

Per signed-gradient step x <- clip(x + 1e-3 sign(grad_x CE), 0, 1) (what APGD, PGD and FAB
do each iteration), seconds of wall time, for two models at batch `--batch`, 32x32x3:
a 3-layer 64-channel conv net and the CIFAR ResNet-18 (`models.resnet_cifar.CifarResNet`,
basic blocks (2, 2, 2, 2), random weights, eval mode), run three ways: `--steps` separate
jitted calls, one `fori_loop` of `--steps`, and the same loop with the gradient wrapped
in `core.canonical_conv.canonical_convs`. Each is compiled first, then timed once. Also
checks the loop outputs agree. Prints a table and writes JSON.
"""

import argparse
import json
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adacorr.core.canonical_conv import canonical_convs
from adacorr.models.resnet_cifar import CifarResNet


class ConvNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    for _ in range(3):
      x = nn.relu(nn.Conv(64, (3, 3))(x))
    return nn.Dense(10)(jnp.mean(x, (1, 2)))


def _ways(model, batch: int, steps: int):
  x = jax.random.uniform(jax.random.key(0), (batch, 32, 32, 3))
  variables = model.init(jax.random.key(1), x[:1])
  y = jnp.arange(batch) % 10

  def loss(v):
    logits = model.apply(variables, v, train=False)
    return -jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(batch), y])

  def stepper(grad):
    return lambda i, v: jnp.clip(v + 1e-3 * jnp.sign(grad(v)), 0.0, 1.0)

  plain, canon = stepper(jax.grad(loss)), stepper(canonical_convs(jax.grad(loss)))
  one = jax.jit(lambda v: plain(0, v))

  def separate(v):
    for i in range(steps):
      v = one(v)
    return v

  loop = jax.jit(lambda v: jax.lax.fori_loop(0, steps, plain, v))
  loop_canon = jax.jit(lambda v: jax.lax.fori_loop(0, steps, canon, v))
  return x, {"separate calls": separate, "fori_loop": loop,
             "fori_loop + canonical_convs": loop_canon}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--json", default="benchmarks/conv_in_loop_cpu.json")
  args = parser.parse_args()
  models = {"3-layer conv net (64 ch)": ConvNet(),
            "ResNet-18 (CIFAR, basic (2,2,2,2))": CifarResNet(stage_sizes=(2, 2, 2, 2),
                                                              block="basic")}
  rows = []
  for name, model in models.items():
    x, ways = _ways(model, args.batch, args.steps)
    outs, row = {}, {"model": name}
    for way, fn in ways.items():
      jax.block_until_ready(fn(x))  # compile (and warm up)
      tic = time.perf_counter()
      outs[way] = np.asarray(jax.block_until_ready(fn(x)))
      row[way] = (time.perf_counter() - tic) / args.steps
    row["max |difference| of the loop outputs"] = float(np.max(np.abs(
        outs["fori_loop"] - outs["fori_loop + canonical_convs"])))
    rows.append(row)
    print(row, flush=True)
  keys = list(rows[0])
  print(f"\nSeconds per step, batch {args.batch}, {args.steps} steps, "
        f"{jax.devices()[0].platform}\n")
  print("| " + " | ".join(keys) + " |")
  print("|" + "---|" * len(keys))
  for r in rows:
    print("| " + " | ".join(r[k] if isinstance(r[k], str) else f"{r[k]:.4g}" for k in keys)
          + " |")
  with open(args.json, "w") as f:
    json.dump({"backend": jax.devices()[0].platform, "machine": platform.processor() or
               platform.machine(), "jax": jax.__version__, "batch": args.batch,
               "steps": args.steps, "rows": rows}, f, indent=1)
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
