r"""Images/s of a nominal train step (augmentation + forward + backward + SGD update).

  python -m benchmarks.train_step [--models=preact_resnet18,small_cnn] [--batch_size=128]
      [--dtypes=float32,bfloat16] [--steps=50] [--repeats=5] [--out=benchmarks/train_step.json]

Prints a table and writes JSON. The step is exactly the one the trainer runs
(`adacorr.train.make_train_step` with `methods.make_nominal` and pad-crop-flip), jitted
with the batch sharded over all local devices. Timings exclude compilation; each
repeat times `--steps` steps ending in `block_until_ready`, and the median is reported.
"""

import argparse
import json
import os
import platform
import statistics
import time


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from adacorr import models, parallel  # noqa: E402
from adacorr.data import augment  # noqa: E402
from adacorr.methods import make_nominal  # noqa: E402
from adacorr.train import create_train_state, make_train_step  # noqa: E402
from adacorr.core.types import StatefulLoss  # noqa: E402

SHAPES = {  # model -> (image shape, mean, std) of the dataset it is benchmarked on
    "preact_resnet18": ((32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "preact_resnet50": ((32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "small_cnn": ((28, 28, 1), (0.2860,), (0.3530,)),
}


def time_train_step(model_name: str, batch_size: int, dtype: str, steps: int,
                    repeats: int, make_loss_fn=None) -> dict:
  """Times the jitted train step; `make_loss_fn(model) -> LossFn` (default: nominal CE)."""
  image_shape, mean, std = SHAPES[model_name]
  mesh = parallel.make_mesh()
  model = models.get_model(model_name, num_classes=10, mean=mean, std=std,
                           dtype=jnp.dtype(dtype))
  tx = optax.chain(optax.add_decayed_weights(5e-4),
                   optax.sgd(0.1, momentum=0.9, nesterov=True))
  state = parallel.replicate(
      create_train_state(model, tx, jax.random.PRNGKey(0), image_shape), mesh)
  loss_fn = (make_loss_fn or make_nominal)(model)
  if isinstance(loss_fn, StatefulLoss):  # e.g. ANT: its generator state rides in the state
    state = state.replace(method_state=parallel.replicate(
        loss_fn.init(jax.random.PRNGKey(1), image_shape), mesh))
  step = jax.jit(make_train_step(loss_fn, tx,
                                 augment_fn=augment.get_augment("pad_crop_flip")),
                 donate_argnums=(0,))
  rng = np.random.default_rng(0)
  batch = parallel.shard_batch({
      "image": rng.uniform(0, 1, (batch_size, *image_shape)).astype(np.float32),
      "label": rng.integers(0, 10, batch_size).astype(np.int32)}, mesh)

  t0 = time.perf_counter()
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  for _ in range(3):  # warm-up
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  per_step = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, batch)
    jax.block_until_ready((state.params, metrics))
    per_step.append((time.perf_counter() - t0) / steps)
  step_s = statistics.median(per_step)
  return {"model": model_name, "batch_size": batch_size, "dtype": dtype,
          "step_ms": 1e3 * step_s, "step_ms_min": 1e3 * min(per_step),
          "images_per_s": batch_size / step_s, "compile_s": compile_s,
          "steps_timed": steps * repeats}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="preact_resnet18,small_cnn")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--dtypes", default="float32")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "train_step.json"))
  args = parser.parse_args()

  devices = jax.devices()
  header = {"device": devices[0].device_kind, "platform": devices[0].platform,
            "num_devices": len(devices), "jax": jax.__version__, "host": platform.node()}
  print(f"device: {header['device']} x{header['num_devices']} ({header['platform']}), "
        f"jax {header['jax']}")
  rows = [time_train_step(m, args.batch_size, d, args.steps, args.repeats)
          for m in args.models.split(",") for d in args.dtypes.split(",")]
  cols = ("model", "batch_size", "dtype", "step_ms", "images_per_s", "compile_s")
  print(" | ".join(f"{c:>15}" for c in cols))
  for row in rows:
    print(" | ".join(f"{row[c]:>15.1f}" if isinstance(row[c], float) else f"{row[c]:>15}"
                     for c in cols))
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump({**header, "results": rows}, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
