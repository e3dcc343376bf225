r"""PAT step / nominal step, and exact-JVP vs finite-difference perceptual attacks, in one run.

  python -m benchmarks.pat_step [--model=preact_resnet18] [--batch_size=128] [--steps=5]
      [--repeats=3] [--out=benchmarks/pat_step.json]

Part 1 times the full jitted train step (pad-crop-flip, loss, backward, SGD) of nominal
training and of self-bounded PAT (Fast-LPA 10 steps, bound 0.5) with the exact
directional derivative (`derivative='jvp'`, our default) and the reference's finite
difference (`'finite_difference'`, h = 0.1), and prints ratios to nominal. Target on a
GPU: PAT <= 7x nominal (the paper's Fast-PAT took 11.75x standard training's wall-clock).
Part 2 times the attacks alone on the same model in evaluation mode: Fast-LPA (10 steps)
and PPGD (10 steps, 5 CG iterations, bisection projection) with exact products vs finite
differences.
"""

import argparse
import json
import os
import statistics
import time


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from adacorr import attacks, methods, models, perceptual  # noqa: E402
from benchmarks import method_steps  # noqa: E402
from benchmarks import train_step  # noqa: E402

STEPS = {
    "nominal": None,
    "pat (self, 0.5, Fast-LPA 10, jvp)": dict(derivative="jvp"),
    "pat (self, 0.5, Fast-LPA 10, finite diff.)": dict(derivative="finite_difference"),
}


def time_attacks(model_name, batch_size, repeats, ppgd=True):
  """ms per call of Fast-LPA / PPGD (exact vs finite differences), self-bounded."""
  image_shape, mean, std = train_step.SHAPES[model_name]
  model = models.get_model(model_name, num_classes=10, mean=mean, std=std)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(0, 1, (batch_size, *image_shape)).astype(np.float32))
  y = jnp.asarray(rng.integers(0, 10, batch_size).astype(np.int32))
  variables = jax.jit(lambda k: model.init(k, x[:1]))(jax.random.PRNGKey(0))
  fl = perceptual.features_and_logits_fn(model, variables)
  key = jax.random.PRNGKey(1)
  suite = {
      "fast_lpa 10 steps, jvp": lambda x: attacks.fast_lpa(fl, None, x, y, key, bound=0.5),
      "fast_lpa 10 steps, finite diff.": lambda x: attacks.fast_lpa(
          fl, None, x, y, key, bound=0.5, derivative="finite_difference"),
      "ppgd 10 steps, exact J^T J": lambda x: attacks.ppgd(
          fl, None, x, y, key, bound=0.5, num_steps=10, projection="bisection"),
      "ppgd 10 steps, finite diff.": lambda x: attacks.ppgd(
          fl, None, x, y, key, bound=0.5, num_steps=10, projection="bisection",
          jacobian="finite_difference"),
  }
  if not ppgd:
    suite = {k: v for k, v in suite.items() if not k.startswith("ppgd")}
  rows = []
  for name, fn in suite.items():
    f = jax.jit(fn)
    t0 = time.perf_counter()
    f(x).block_until_ready()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      f(x).block_until_ready()
      times.append(time.perf_counter() - t0)
    rows.append({"attack": name, "ms": 1e3 * statistics.median(times),
                 "compile_s": compile_s})
    print(f"  timed {name}: {rows[-1]['ms']:.1f} ms", flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="preact_resnet18")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                    "pat_step.json"))
  parser.add_argument("--no_ppgd", action="store_true",
                      help="skip PPGD (its CG / projection while loops are slow on XLA:CPU)")
  args = parser.parse_args()
  device = jax.devices()[0]
  print(f"device: {device.device_kind} x{len(jax.devices())} ({device.platform}), "
        f"jax {jax.__version__}; {args.model}, batch {args.batch_size}, {args.dtype}")
  rows = method_steps.time_methods(
      {name: None if kw is None else (lambda model, kw=kw: methods.make_pat(model, **kw))
       for name, kw in STEPS.items()}, args)
  result = {"device": device.device_kind, "platform": device.platform,
            "num_devices": len(jax.devices()), "jax": jax.__version__, "model": args.model,
            "batch_size": args.batch_size, "dtype": args.dtype, "train_steps": rows}
  _write(args.out, result)  # part 1 is kept even if part 2 is interrupted
  result["attacks"] = time_attacks(args.model, args.batch_size, args.repeats,
                                   ppgd=not args.no_ppgd)
  print(f"{'attack (eval mode, self-bounded)':>36} | {'ms':>9} | {'compile s':>9}")
  for row in result["attacks"]:
    print(f"{row['attack']:>36} | {row['ms']:>9.1f} | {row['compile_s']:>9.1f}")
  _write(args.out, result)
  print(f"wrote {args.out}")


def _write(path, result):
  with open(path, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
