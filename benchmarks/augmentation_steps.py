r"""Train-step time of the augmentation methods relative to the nominal step, in one run.

  python benchmarks/augmentation_steps.py [--model=preact_resnet18] [--batch_size=128]
      [--steps=10] [--repeats=3] [--out=benchmarks/augmentation_steps.json]

Times the full jitted train step (pad-crop-flip, method loss, backward, SGD) of: nominal;
AugMix without JSD (one AugMix view); AugMix + JSD (clean + 2 AugMix views, a 3B forward
and backward); RobustAugMix (7-step l2 PGD + clean/AugMix/adversarial views); ANT^1x1 and
ANT^3x3 (one generator Adam step + the 30/20/50 batch). Each with its paper defaults
(`adacorr.methods`); ratios are to the nominal step of the same run.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

from adacorr import methods  # noqa: E402
import method_steps  # noqa: E402  (benchmarks/method_steps.py)

METHODS = {
    "nominal": None,
    "augmix (no JSD)": lambda model: methods.make_augmix(model, jsd=False),
    "augmix + JSD": methods.make_augmix,
    "robust_augmix (PGD-7)": methods.make_robust_augmix,
    "ant 1x1": lambda model: methods.make_ant(model, generator="1x1"),
    "ant 3x3": lambda model: methods.make_ant(model, generator="3x3"),
}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="preact_resnet18")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--only", default="", help="comma-separated method names (and nominal)")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                    "augmentation_steps.json"))
  args = parser.parse_args()
  factories = METHODS
  if args.only:
    keep = {"nominal", *args.only.split(",")}
    factories = {k: v for k, v in METHODS.items() if k in keep}
  device = jax.devices()[0]
  print(f"device: {device.device_kind} x{len(jax.devices())} ({device.platform}), "
        f"jax {jax.__version__}; {args.model}, batch {args.batch_size}, {args.dtype}")
  rows = method_steps.time_methods(factories, args)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump({"device": device.device_kind, "platform": device.platform,
               "num_devices": len(jax.devices()), "jax": jax.__version__, "model": args.model,
               "batch_size": args.batch_size, "dtype": args.dtype, "results": rows}, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
