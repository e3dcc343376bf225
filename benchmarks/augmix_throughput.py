r"""AugMix images/s: our jitted `augmix` on the default device vs the reference's PIL loop,
and the AugMix + JSD train step relative to nominal, before and after grouping by op.

  python -m benchmarks.augmix_throughput [--batch_size=256] [--size=32] [--severity=3]
      [--width=3] [--depth=-1] [--all_ops] [--repeats=5] [--ref_images=256]
      [--train_step] [--train_batch_size=64] [--train_steps=1] [--train_rounds=9]
      [--out=benchmarks/augmix_throughput_<platform>.json]

Ours: `adacorr.augment.augmix.augmix` on a (batch_size, size, size, 3) batch, in two
variants run side by side: 'grouped' (`_batched`, what `augmix` runs: each chain step
computes each op only on the chains that drew it) and 'masked' (`_masked_batched`, the
earlier formulation: every chain step computes the warp and all the lookup tables for
every chain, all 3 steps masked). The first call (compilation) is timed separately, then
`--repeats` rounds call each variant in turn; medians of wall and of process CPU time
(all threads; steadier than wall on a shared machine). Reference: a numpy + PIL
re-implementation of google-research/augmix `augment_and_mix` (uint8 PIL image per op,
np.random draws, float mixing; without the CIFAR mean/std normalisation, which our models
do inside), looped over `--ref_images` images in this single process on the CPU, median of
`--repeats` loops.

`--train_step`: the full jitted train step (`benchmarks.train_step`: PreActResNet-18,
pad-crop-flip, SGD) of nominal on `--train_batch_size` images; nominal on 3x as many;
AugMix + JSD (`methods.make_augmix`, the clean image and two AugMix views through the model
as one batch) with `augmix` replaced by the identity (the floor: the same 3-view loss
without the augmentation); and AugMix + JSD with the masked and with the grouped `augmix`.
`--train_rounds` rounds of `--train_steps` steps of each in turn; each row's ratio to
nominal is the median over rounds of its time / the same round's nominal time.

Prints tables and writes JSON.
"""

import argparse
import importlib
import json
import os
import statistics
import time


import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageEnhance, ImageOps  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from adacorr import methods, models  # noqa: E402
from adacorr.core.keys import per_example_keys  # noqa: E402
from adacorr.data import augment  # noqa: E402
from adacorr.train import create_train_state, make_train_step  # noqa: E402
from benchmarks.train_step import SHAPES  # noqa: E402

# `adacorr.augment.augmix` is also the name of the function; the module by its path.
augmix_module = importlib.import_module("adacorr.augment.augmix")
IMPLS = {"grouped": augmix_module._batched,  # pylint: disable=protected-access
         "masked": augmix_module._masked_batched}  # pylint: disable=protected-access

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


def _timed(fn):
  """(wall s, process CPU s) of `fn()`, blocked until ready."""
  t0, c0 = time.perf_counter(), time.process_time()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0, time.process_time() - c0


def time_ours(images, kw, repeats):
  """Rows for the grouped and the masked `augmix`, timed in turn each round."""
  key = jax.random.key(0)
  fns = {name: make(kw["severity"], kw["width"], kw["depth"], 1.0, kw["all_ops"])
         for name, make in IMPLS.items()}
  first = {name: _timed(lambda f=f: f(images, per_example_keys(key, len(images))))[0]
           for name, f in fns.items()}
  walls, cpus = {n: [] for n in fns}, {n: [] for n in fns}
  for i in range(repeats):
    keys = per_example_keys(jax.random.fold_in(key, i), len(images))
    for name, f in fns.items():
      wall, cpu = _timed(lambda f=f: f(images, keys))
      walls[name].append(wall)
      cpus[name].append(cpu)
  rows = {}
  for name in fns:
    seconds = statistics.median(walls[name])
    rows[name] = {"seconds": seconds, "images_per_s": images.shape[0] / seconds,
                  "cpu_seconds": statistics.median(cpus[name]), "first_call_s": first[name]}
  return rows


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


def _train_setup(batch_size, make_loss_fn):
  """(jitted step, state, batch) as `benchmarks.train_step.time_train_step` builds them
  (one device)."""
  image_shape, mean, std = SHAPES["preact_resnet18"]
  model = models.get_model("preact_resnet18", num_classes=10, mean=mean, std=std,
                           dtype=jnp.float32)
  tx = optax.chain(optax.add_decayed_weights(5e-4),
                   optax.sgd(0.1, momentum=0.9, nesterov=True))
  state = create_train_state(model, tx, jax.random.PRNGKey(0), image_shape)
  loss_fn = (make_loss_fn or methods.make_nominal)(model)
  step = jax.jit(make_train_step(loss_fn, tx, augment_fn=augment.get_augment("pad_crop_flip")),
                 donate_argnums=(0,))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.uniform(0, 1, (batch_size, *image_shape)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32)}
  return step, state, batch


def time_train_steps(batch_size, steps, rounds):
  """Rows for nominal (B), nominal (3B), the JSD loss without augmix, AugMix + JSD with
  the masked and the grouped `augmix`; each round runs `steps` steps of each in turn."""
  variants = {
      "nominal": (batch_size, None, "grouped"),
      "nominal, 3x batch": (3 * batch_size, None, "grouped"),
      "JSD loss, views = the clean image (no augmix)": (batch_size, methods.make_augmix,
                                                        "identity"),
      "augmix + JSD, masked augmix (before)": (batch_size, methods.make_augmix, "masked"),
      "augmix + JSD, grouped augmix (after)": (batch_size, methods.make_augmix, "grouped"),
  }
  runs, compile_s = {}, {}
  for name, (b, factory, impl) in variants.items():
    step, state, batch = _train_setup(b, factory)
    augmix_module._batched = (  # pylint: disable=protected-access
        IMPLS[impl] if impl in IMPLS else lambda *options: lambda images, keys: images)
    try:  # the first call traces the step: `augmix` inside it calls `_batched`
      t0 = time.perf_counter()
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
      compile_s[name] = time.perf_counter() - t0
    finally:
      augmix_module._batched = IMPLS["grouped"]  # pylint: disable=protected-access
    state, metrics = step(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    runs[name] = [step, state, batch]
    print(f"  compiled {name}: {compile_s[name]:.1f} s", flush=True)
  walls, cpus = {n: [] for n in runs}, {n: [] for n in runs}
  for r in range(rounds):
    for name, run in runs.items():
      def go(run=run):
        step, state, batch = run
        for _ in range(steps):
          state, metrics = step(state, batch)
        run[1] = state
        return state.params, metrics
      wall, cpu = _timed(go)
      walls[name].append(wall / steps)
      cpus[name].append(cpu / steps)
    print(f"  round {r + 1}/{rounds}: " + ", ".join(
        f"{walls[n][-1] / walls['nominal'][-1]:.2f}" for n in runs), flush=True)
  rows = []
  for name, (b, factory, impl) in variants.items():
    rows.append({
        "method": name, "batch_size": b, "augmix": impl if factory else None,
        "step_ms": 1e3 * statistics.median(walls[name]),
        "step_cpu_ms": 1e3 * statistics.median(cpus[name]),
        "ratio_to_nominal": statistics.median(
            [w / n for w, n in zip(walls[name], walls["nominal"])]),
        "cpu_ratio_to_nominal": statistics.median(
            [c / n for c, n in zip(cpus[name], cpus["nominal"])]),
        "compile_s": compile_s[name], "rounds": rounds, "steps_per_round": steps})
  return rows


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
  parser.add_argument("--train_step", action="store_true",
                      help="also time the AugMix + JSD train step vs nominal")
  parser.add_argument("--train_batch_size", type=int, default=64)
  parser.add_argument("--train_steps", type=int, default=1)
  parser.add_argument("--train_rounds", type=int, default=9)
  parser.add_argument("--out", default=None,
                      help="default: augmix_throughput_<platform>.json next to this script")
  args = parser.parse_args()
  device = jax.devices()[0]
  out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                 f"augmix_throughput_{device.platform}.json")
  kw = dict(severity=args.severity, width=args.width, depth=args.depth, all_ops=args.all_ops)
  load_before = os.getloadavg()

  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.batch_size, args.size, args.size, 3)) / 255.0
  images = images.astype(np.float32)
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}; batch "
        f"{images.shape}, {kw}; load average {load_before[0]:.1f}", flush=True)
  ours = time_ours(jax.device_put(images), kw, args.repeats)
  ref = time_reference(images[:args.ref_images], kw, args.repeats)
  rows = [{"impl": f"adacorr augmix, {name} (jit, {device.platform})", **row,
           "batch": args.batch_size} for name, row in ours.items()]
  rows.append({"impl": "reference PIL loop (cpu, 1 process)", **ref, "batch": args.ref_images})
  speedup = ours["grouped"]["images_per_s"] / ref["images_per_s"]
  grouped_vs_masked = ours["masked"]["seconds"] / ours["grouped"]["seconds"]
  grouped_vs_masked_cpu = ours["masked"]["cpu_seconds"] / ours["grouped"]["cpu_seconds"]
  print(f"{'implementation':>40} | {'images/s':>10} | {'ms/batch':>9} | {'cpu ms':>8} | "
        f"{'first call s':>12}")
  for row in rows:
    first = f"{row['first_call_s']:>12.2f}" if "first_call_s" in row else f"{'-':>12}"
    cpu = f"{1e3 * row['cpu_seconds']:>8.1f}" if "cpu_seconds" in row else f"{'-':>8}"
    print(f"{row['impl']:>40} | {row['images_per_s']:>10.0f} | {1e3 * row['seconds']:>9.1f} | "
          f"{cpu} | {first}")
  print(f"speedup (grouped / reference): {speedup:.1f}x; grouped / masked: "
        f"{grouped_vs_masked:.1f}x wall, {grouped_vs_masked_cpu:.1f}x CPU time")
  result = {"device": device.device_kind, "platform": device.platform,
            "jax": jax.__version__, "batch_shape": list(images.shape), "options": kw,
            "repeats": args.repeats, "results": rows, "speedup": speedup,
            "grouped_vs_masked": grouped_vs_masked,
            "grouped_vs_masked_cpu": grouped_vs_masked_cpu,
            "cpu_count": os.cpu_count(), "load_average_1min": load_before[0]}
  if args.train_step:
    print(f"train step: preact_resnet18, batch {args.train_batch_size}, float32, "
          f"{args.train_rounds} rounds x {args.train_steps} steps", flush=True)
    train_rows = time_train_steps(args.train_batch_size, args.train_steps, args.train_rounds)
    width = max(len(r["method"]) for r in train_rows)
    print(f"{'method':>{width}} | {'step ms':>9} | {'x nominal':>9} | {'cpu ms':>9} | "
          f"{'x nominal (cpu)':>15}")
    for row in train_rows:
      print(f"{row['method']:>{width}} | {row['step_ms']:>9.1f} | "
            f"{row['ratio_to_nominal']:>9.2f} | {row['step_cpu_ms']:>9.1f} | "
            f"{row['cpu_ratio_to_nominal']:>15.2f}")
    result["train_step"] = {"model": "preact_resnet18", "batch_size": args.train_batch_size,
                            "dtype": "float32", "results": train_rows}
  result["load_average_1min_after"] = os.getloadavg()[0]
  with open(out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
