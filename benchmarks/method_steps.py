r"""Train-step time of each training method relative to the nominal step, in one run.

  python -m benchmarks.method_steps [--model=preact_resnet18] [--batch_size=128]
      [--dtype=float32] [--steps=10] [--repeats=3] [--out=benchmarks/method_steps.json]

Times the nominal step and the l2-AT (FGM), l_inf-AT (FGSM), Gaussian (50%) and RLAT steps
with their paper defaults (`adacorr.methods`), each the full jitted step the trainer runs
(pad-crop-flip, method loss, backward, SGD), and prints ratios to nominal. Targets on a GPU:
RLAT <= 1.6x (paper: 2.25x wall-clock), FGM-AT <= 1.5x (paper: 1.6x).
"""

import argparse
import json
import os


import jax  # noqa: E402

from adacorr import methods  # noqa: E402
from benchmarks import train_step  # noqa: E402

METHODS = {
    "nominal": None,
    "l2_at (FGM, eps 0.1)": methods.make_l2_at,
    "linf_at (FGSM, eps 1/255)": methods.make_linf_at,
    "gaussian (sigma 0.1, 50%)": methods.make_gaussian_augmentation,
    "rlat (eps 0.08, 6 layers)": methods.make_rlat,
}


def time_methods(factories, args) -> list[dict]:
  """Times the train step of each `name -> make_loss_fn(model)` (None: nominal, first) and
  prints the table of ratios to the first row; returns the rows."""
  rows = []
  for name, factory in factories.items():
    row = train_step.time_train_step(args.model, args.batch_size, args.dtype, args.steps,
                                     args.repeats, make_loss_fn=factory)
    rows.append({"method": name, **row})
    print(f"  timed {name}: {row['step_ms']:.1f} ms/step", flush=True)
  nominal = rows[0]["step_ms"]
  width = max(len(r["method"]) for r in rows)
  print(f"{'method':>{width}} | {'step ms':>9} | {'images/s':>9} | {'x nominal':>9}")
  for row in rows:
    row["ratio_to_nominal"] = row["step_ms"] / nominal
    print(f"{row['method']:>{width}} | {row['step_ms']:>9.1f} | {row['images_per_s']:>9.1f} | "
          f"{row['ratio_to_nominal']:>9.2f}")
  return rows


def main(factories=None, description=None, default_out=None, argv=None):
  """Parses the flags, times `factories` (default: METHODS) and writes the JSON."""
  parser = argparse.ArgumentParser(description=description or __doc__.split("\n")[0])
  parser.add_argument("--model", default="preact_resnet18")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--only", default="", help="comma-separated method names (and nominal)")
  parser.add_argument("--out", default=default_out or os.path.join(os.path.dirname(__file__),
                                                                   "method_steps.json"))
  args = parser.parse_args(argv)
  factories = METHODS if factories is None else factories
  if args.only:
    keep = {"nominal", *args.only.split(",")}
    factories = {k: v for k, v in factories.items() if k in keep}
  device = jax.devices()[0]
  print(f"device: {device.device_kind} x{len(jax.devices())} ({device.platform}), "
        f"jax {jax.__version__}; {args.model}, batch {args.batch_size}, {args.dtype}")
  rows = time_methods(factories, args)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump({"device": device.device_kind, "platform": device.platform,
               "num_devices": len(jax.devices()), "jax": jax.__version__, "model": args.model,
               "batch_size": args.batch_size, "dtype": args.dtype, "results": rows}, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
