r"""Images/s of every corruption on a (1024, 32, 32, 3) batch, after jit warm-up.

  python -m benchmarks.corruptions [--batch_size=1024] [--size=32] [--severity=3]
      [--params=cifar10] [--repeats=3] [--names=fog,snow] [--out=benchmarks/corruptions.json]

Prints a table and writes JSON. Each corruption is called through `corrupt` (the
public entry point: per-image keys, vmap, jit); the first call (compilation) is
timed separately, then the median of `--repeats` calls ending in `block_until_ready`.
"""

import argparse
import json
import os
import statistics
import time


import jax  # noqa: E402
import numpy as np  # noqa: E402

from adacorr import corruptions  # noqa: E402


def time_corruption(name, images, *, severity, params, repeats):
  key = jax.random.PRNGKey(0)
  t0 = time.perf_counter()
  jax.block_until_ready(corruptions.corrupt(images, name, severity, key, params=params))
  first_s = time.perf_counter() - t0
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(corruptions.corrupt(images, name, severity, jax.random.fold_in(key, i),
                                              params=params))
    times.append(time.perf_counter() - t0)
  seconds = statistics.median(times)
  return {"name": name, "seconds": seconds, "images_per_s": images.shape[0] / seconds,
          "first_call_s": first_s, "random": corruptions.registry()[name].random}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_size", type=int, default=1024)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--severity", type=int, default=3)
  parser.add_argument("--params", default="cifar10")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--names", default=",".join(corruptions.ALL_CORRUPTIONS))
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                    "corruptions.json"))
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  images = jax.device_put(
      rng.uniform(0, 1, (args.batch_size, args.size, args.size, 3)).astype(np.float32))
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}; batch "
        f"{images.shape}, severity {args.severity}, params {args.params}")
  rows = []
  print(f"{'corruption':>18} | {'images/s':>10} | {'ms/batch':>9} | {'first call s':>12}")
  for name in args.names.split(","):
    row = time_corruption(name, images, severity=args.severity, params=args.params,
                          repeats=args.repeats)
    rows.append(row)
    print(f"{name:>18} | {row['images_per_s']:>10.0f} | {1e3 * row['seconds']:>9.1f} | "
          f"{row['first_call_s']:>12.2f}", flush=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump({"device": device.device_kind, "platform": device.platform,
               "jax": jax.__version__, "batch_shape": list(images.shape),
               "severity": args.severity, "params": args.params, "results": rows}, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
