r"""AugMix images/s: our jitted `augmix` on the default device vs the reference's PIL loop.

  python -m benchmarks.augmix_throughput [--batch_size=256] [--size=32] [--severity=3]
      [--width=3] [--depth=-1] [--all_ops] [--repeats=5] [--ref_images=256]
      [--out=benchmarks/augmix_throughput_<platform>.json]

Ours: `adacorr.augment.augmix.augmix` on a (batch_size, size, size, 3) batch; the first
call (compilation) is timed separately, then the median of `--repeats` calls ending in
`block_until_ready`. Reference: a numpy + PIL re-implementation of google-research/augmix
`augment_and_mix` (uint8 PIL image per op, np.random draws, float mixing; without the
CIFAR mean/std normalisation, which our models do inside), looped over `--ref_images`
images in this single process on the CPU, median of `--repeats` loops. Prints a table and
writes JSON.
"""

import argparse
import json
import os
import statistics
import time


import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageEnhance, ImageOps  # noqa: E402

from adacorr.augment.augmix import augmix  # noqa: E402

# ----------------------------------------------------------------------------- reference


def _sample_level(n):
  return np.random.uniform(low=0.1, high=n)


def _int_param(level, maxval):
  return int(level * maxval / 10)


def _float_param(level, maxval):
  return float(level) * maxval / 10.0


def _signed(v):
  return -v if np.random.uniform() > 0.5 else v


def _affine(im, matrix):
  return im.transform(im.size, Image.AFFINE, matrix, resample=Image.BILINEAR)


def _enhance(enhancer):
  return lambda im, s: enhancer(im).enhance(_float_param(_sample_level(s), 1.8) + 0.1)


REFERENCE_OPS = [
    lambda im, s: ImageOps.autocontrast(im),
    lambda im, s: ImageOps.equalize(im),
    lambda im, s: ImageOps.posterize(im, 4 - _int_param(_sample_level(s), 4)),
    lambda im, s: im.rotate(_signed(_int_param(_sample_level(s), 30)), resample=Image.BILINEAR),
    lambda im, s: ImageOps.solarize(im, 256 - _int_param(_sample_level(s), 256)),
    lambda im, s: _affine(im, (1, _signed(_float_param(_sample_level(s), 0.3)), 0, 0, 1, 0)),
    lambda im, s: _affine(im, (1, 0, 0, _signed(_float_param(_sample_level(s), 0.3)), 1, 0)),
    lambda im, s: _affine(im, (1, 0, _signed(_int_param(_sample_level(s), im.size[0] / 3)),
                               0, 1, 0)),
    lambda im, s: _affine(im, (1, 0, 0, 0, 1,
                               _signed(_int_param(_sample_level(s), im.size[1] / 3)))),
]
REFERENCE_ALL_OPS = REFERENCE_OPS + [_enhance(ImageEnhance.Color),
                                     _enhance(ImageEnhance.Contrast),
                                     _enhance(ImageEnhance.Brightness),
                                     _enhance(ImageEnhance.Sharpness)]


def reference_augment_and_mix(image, severity=3, width=3, depth=-1, alpha=1.0, all_ops=False):
  """The reference's `augment_and_mix` for one (H, W, 3) float image in [0, 1]."""
  op_list = REFERENCE_ALL_OPS if all_ops else REFERENCE_OPS
  ws = np.float32(np.random.dirichlet([alpha] * width))
  m = np.float32(np.random.beta(alpha, alpha))
  mix = np.zeros_like(image)
  for i in range(width):
    image_aug = image.copy()
    d = depth if depth > 0 else np.random.randint(1, 4)
    for _ in range(d):
      op = op_list[np.random.randint(len(op_list))]
      pil = Image.fromarray(np.clip(image_aug * 255.0, 0, 255).astype(np.uint8))
      image_aug = np.asarray(op(pil, severity)) / 255.0
    mix += ws[i] * image_aug
  return (1 - m) * image + m * mix


# ----------------------------------------------------------------------------- timing


def time_ours(images, kw, repeats):
  key = jax.random.key(0)
  t0 = time.perf_counter()
  jax.block_until_ready(augmix(images, key, **kw))
  first_s = time.perf_counter() - t0
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(augmix(images, jax.random.fold_in(key, i), **kw))
    times.append(time.perf_counter() - t0)
  seconds = statistics.median(times)
  return {"seconds": seconds, "images_per_s": images.shape[0] / seconds, "first_call_s": first_s}


def time_reference(images, kw, repeats):
  np.random.seed(0)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for image in images:
      reference_augment_and_mix(image, **kw)
    times.append(time.perf_counter() - t0)
  seconds = statistics.median(times)
  return {"seconds": seconds, "images_per_s": len(images) / seconds}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--severity", type=int, default=3)
  parser.add_argument("--width", type=int, default=3)
  parser.add_argument("--depth", type=int, default=-1)
  parser.add_argument("--all_ops", action="store_true")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--ref_images", type=int, default=256)
  parser.add_argument("--out", default=None,
                      help="default: augmix_throughput_<platform>.json next to this script")
  args = parser.parse_args()
  device = jax.devices()[0]
  out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                 f"augmix_throughput_{device.platform}.json")
  kw = dict(severity=args.severity, width=args.width, depth=args.depth, all_ops=args.all_ops)

  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.batch_size, args.size, args.size, 3)) / 255.0
  images = images.astype(np.float32)
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}; batch "
        f"{images.shape}, {kw}", flush=True)
  ours = time_ours(jax.device_put(images), kw, args.repeats)
  ref = time_reference(images[:args.ref_images], kw, args.repeats)
  rows = [
      {"impl": f"adacorr augmix (jit, {device.platform})", **ours,
       "batch": args.batch_size},
      {"impl": "reference PIL loop (cpu, 1 process)", **ref, "batch": args.ref_images},
  ]
  speedup = ours["images_per_s"] / ref["images_per_s"]
  print(f"{'implementation':>36} | {'images/s':>10} | {'ms/batch':>9} | {'first call s':>12}")
  for row in rows:
    first = f"{row['first_call_s']:>12.2f}" if "first_call_s" in row else f"{'-':>12}"
    print(f"{row['impl']:>36} | {row['images_per_s']:>10.0f} | {1e3 * row['seconds']:>9.1f} | "
          f"{first}")
  print(f"speedup (ours / reference): {speedup:.1f}x")
  with open(out, "w", encoding="utf-8") as f:
    json.dump({"device": device.device_kind, "platform": device.platform,
               "jax": jax.__version__, "batch_shape": list(images.shape), "options": kw,
               "repeats": args.repeats, "results": rows, "speedup": speedup,
               "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0]},
              f, indent=2)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
