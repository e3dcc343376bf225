r"""AdA speed and memory in one run: AdA step vs nominal step, per-example vs shared weights.

The AdA train step against the nominal step, and vmapped per-example corruption weights
against nano-batches and against shared weights.

  python -m benchmarks.ada_step --preset=cpu|gpu [--json=benchmarks/ada_step_<preset>.json]
      [--batch_sizes=128,1024] [--steps=N] [--repeats=N] [--attack_steps=10] [--chunk_size=8]
      [--classifier=...] [--edsr_blocks=...] [--edsr_features=...] [--tables=train,attack]
      [--attack_variants=vmapped,nano_map,nano_unroll,shared] [--unroll_max_chunks=16]
      [--train_chunk_size=N] [--no_train_memory] [--dry_run]

(Flags left out take the preset's values, see `PRESETS`.)

Table 1, "train step": the full jitted step the trainer runs (pad-crop-flip, loss,
backward, SGD; `train_step.time_train_step`) with the nominal CE loss and with AdA
(`adacorr.methods.make_ada`: `--attack_steps` signed-gradient steps on the weights of an
untrained EDSR, SSIM line search at 0.3). Reports ms/step, images/s and AdA / nominal.

Table 2, "attack work": the AdA attack alone (`adacorr.attacks.adversarial_augment.ada`,
classifier in eval mode, same backbone and batch) as
  (a) vmapped per-example weights over the whole batch (`chunk_size=None`);
  (b) nano-batches of `--chunk_size` one after another (`chunk_loop='map'`, the paper's way);
  (c) the same nano-batches unrolled in the program (`chunk_loop='unroll'`);
  (d) shared weights: ONE perturbation for the whole batch, with the same random init,
      steps and projection, ascending the summed CE (same FLOPs: the lower bound).
Reports ms per attack, the ratio to (d), and the speedup of (a) over (b).
GPU targets: (a) >= 2x faster than (b), and (a) <= 1.5x (d).

Memory, per variant: the compiled executable's `memory_analysis()` (temp + argument +
output bytes; `None` where the backend does not say), and on GPU the device's
`memory_stats()['peak_bytes_in_use']` read after the variant ran. That one is the peak of
the whole process so far (it never goes down), so attack variants run in order of
expected memory, (d), (b), (c), (a), before the train steps; the printed tables keep the
order above.

Presets: `gpu` is PreActResNet-50 + the paper's EDSR (16 blocks, 64 features; 1,369,859
parameters) at 32x32x3, batches 128 and 1024 (an out-of-memory error is caught and
reported as such); `cpu` is SmallCNN + EDSR(2 blocks, 16 features) at 28x28x1, batch 32,
sized for 2 cores in a few minutes (`--classifier=preact_resnet_w16_1111`, a PreActResNet
of width 16 with one basic block per stage, gives CIFAR shapes at about 3x the time).
Variant (c) compiles one copy of the attack per nano-batch; it is skipped above
`--unroll_max_chunks` nano-batches (on GPU, batch 128 = 16 copies of PreActResNet-50 +
EDSR: a long compile; `--attack_variants` picks a subset).
Timings exclude compilation: a warm-up, then `--repeats` timings of `--steps` calls ending
in `block_until_ready`; the median per call is reported. `--dry_run` builds every variant
and lowers it (traces, no XLA compile, nothing runs): a check that a preset's code paths
work, e.g. `--preset=gpu --dry_run` on a CPU.
"""

import argparse
import functools
import gc
import json
import os
import platform
import statistics
import time


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from adacorr import attacks, models, parallel, run  # noqa: E402
from adacorr.attacks import adversarial_augment as aa  # noqa: E402
from adacorr.data import augment  # noqa: E402
from adacorr.methods import ada as ada_method  # noqa: E402
from adacorr.methods import make_nominal  # noqa: E402
from adacorr.train import create_train_state, make_train_step  # noqa: E402
from benchmarks import train_step  # noqa: E402

NU = 0.015            # the paper's CIFAR-10 relative radius
SSIM_THRESHOLD = 0.3  # the paper's CIFAR-10 SSIM threshold

# Classifiers not in train_step.SHAPES: name -> (model name in adacorr.models, its kwargs,
# image shape). Registered at start-up so that `time_train_step` can build them by name.
EXTRA_CLASSIFIERS = {
    "preact_resnet_w16_1111": ("preact_resnet",
                               dict(width=16, stage_sizes=(1, 1, 1, 1),
                                    block=models.PreActBlock), (32, 32, 3)),
}

PRESETS = {
    "gpu": dict(classifier="preact_resnet50", edsr_blocks=16, edsr_features=64,
                batch_sizes="128,1024", steps=5, repeats=5, attack_steps=10, chunk_size=8),
    "cpu": dict(classifier="small_cnn", edsr_blocks=2, edsr_features=16,
                batch_sizes="32", steps=1, repeats=3, attack_steps=10, chunk_size=8),
}

ATTACK_VARIANTS = ("vmapped", "nano_map", "nano_unroll", "shared")
ATTACK_LABELS = {
    "vmapped": "(a) vmapped per-example weights",
    "nano_map": "(b) nano-batches of {c}, lax.map (paper)",
    "nano_unroll": "(c) nano-batches of {c}, unrolled",
    "shared": "(d) shared weights (lower bound)",
}
ATTACK_RUN_ORDER = ("shared", "nano_map", "nano_unroll", "vmapped")  # expected memory


def register_classifiers() -> None:
  for name, (base, kwargs, shape) in EXTRA_CLASSIFIERS.items():
    models.MODELS.setdefault(name, functools.partial(models.MODELS[base], **kwargs))
    train_step.SHAPES.setdefault(name, (shape, models.CIFAR10_MEAN, models.CIFAR10_STD))


# --------------------------------------------------------------------------- memory


def is_oom(e: BaseException) -> bool:
  s = str(e).lower()
  return "resource_exhausted" in s or "out of memory" in s or "oom" in s.split()


def error_row(e: BaseException) -> dict:
  kind = "OOM" if is_oom(e) else type(e).__name__
  msg = str(e).strip().splitlines()
  return {"error": kind, "message": (msg[0] if msg else "")[:300]}


def compiled_memory(compiled) -> dict:
  """Bytes from `compiled.memory_analysis()`; empty where the backend returns None."""
  try:
    ma = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (unimplemented on some backends)
    ma = None
  if ma is None:
    return {"compiled_bytes": None}
  out = {f"{k}_bytes": int(getattr(ma, f"{k}_size_in_bytes", 0) or 0)
         for k in ("temp", "argument", "output", "alias", "generated_code")}
  out["compiled_bytes"] = out["temp_bytes"] + out["argument_bytes"] + out["output_bytes"]
  return out


def device_peak_bytes():
  """`peak_bytes_in_use` of device 0 (cumulative over the process), or None."""
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return None if not stats else stats.get("peak_bytes_in_use")


def train_step_memory(model_name: str, batch_size: int, make_loss_fn=None, *,
                      compile_it: bool = True) -> dict:
  """Lowers (and compiles) the same step as `train_step.time_train_step` on abstract
  inputs with the same shardings, for its `memory_analysis()` (time_train_step keeps its
  executable to itself)."""
  image_shape, mean, std = train_step.SHAPES[model_name]
  mesh = parallel.make_mesh()
  model = models.get_model(model_name, num_classes=10, mean=mean, std=std)
  tx = optax.chain(optax.add_decayed_weights(5e-4),
                   optax.sgd(0.1, momentum=0.9, nesterov=True))
  state = jax.eval_shape(functools.partial(create_train_state, model, tx,
                                           image_shape=image_shape), jax.random.PRNGKey(0))
  repl, shard = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
  state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=repl), state)
  batch = {"image": jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.float32,
                                         sharding=shard),
           "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=shard)}
  loss_fn = (make_loss_fn or make_nominal)(model)
  step = jax.jit(make_train_step(loss_fn, tx, augment_fn=augment.get_augment("pad_crop_flip")),
                 donate_argnums=(0,))
  lowered = step.lower(state, batch)
  if not compile_it:
    return {"lowered": True}
  return compiled_memory(lowered.compile())


# --------------------------------------------------------------------------- attacks


def shared_weights_attack(corruption_apply, corruption_params, logits_fn, x, y, key, *, nu,
                          num_steps, step_size=None):
  """AdA with ONE perturbation for the whole batch: the same random init, signed-gradient
  steps and projection as `ada`, ascending the batch's summed CE. Same FLOPs as (a): the
  lower bound for per-example weights."""
  frozen = jax.lax.stop_gradient(corruption_params)
  if step_size is None:
    step_size = aa.default_step_size(frozen, nu, num_steps)
  delta = aa.random_delta(key, frozen, nu)

  def total_ce(d):
    logits = logits_fn(corruption_apply(jax.tree.map(jnp.add, frozen, d), x))
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y)), None

  def project(d):  # one "example": the batch shares the perturbation
    d = aa.project_deltas(jax.tree.map(lambda a: a[None], d), frozen, nu)
    return jax.tree.map(lambda a: a[0], d)

  delta = attacks.ascend(total_ce, delta, num_steps=num_steps,
                         update=attacks.signed_step(step_size), project=project)
  return corruption_apply(jax.tree.map(jnp.add, frozen, delta), x)


def make_attack(variant: str, model, backbone, *, num_steps: int, chunk_size: int):
  """`attack(classifier_variables, corruption_params, x, y, key) -> x_adv` (not jitted)."""

  def attack(variables, phi, x, y, key):
    def logits_fn(images):
      return model.apply(variables, images, train=False)
    if variant == "shared":
      return shared_weights_attack(backbone.apply, phi, logits_fn, x, y, key, nu=NU,
                                   num_steps=num_steps)
    chunk = None if variant == "vmapped" else chunk_size
    loop = "unroll" if variant == "nano_unroll" else "map"
    return aa.ada(backbone.apply, phi, logits_fn, x, y, key, nu=NU, num_steps=num_steps,
                  chunk_size=chunk, chunk_loop=loop)

  return attack


def time_compiled(fn, args, steps: int, repeats: int, warmup: int = 1) -> dict:
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  per_call = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      out = fn(*args)
    jax.block_until_ready(out)
    per_call.append((time.perf_counter() - t0) / steps)
  return {"ms": 1e3 * statistics.median(per_call), "ms_min": 1e3 * min(per_call),
          "calls_timed": steps * repeats}


def time_attacks(args, model, backbone, batch_size: int) -> list[dict]:
  image_shape, _, _ = train_step.SHAPES[args.classifier]
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(0, 1, (batch_size, *image_shape)).astype(np.float32))
  y = jnp.asarray(rng.integers(0, 10, batch_size).astype(np.int32))
  init = functools.partial(model.init, train=False)
  init_args = (jax.random.PRNGKey(0), jnp.zeros((1, *image_shape), jnp.float32))
  variables = (jax.eval_shape(init, *init_args) if args.dry_run  # dry run: shapes only
               else jax.jit(init)(*init_args))
  call_args = (variables, backbone.params, x, y, jax.random.PRNGKey(1))
  num_chunks = -(-batch_size // args.chunk_size)
  rows = {}
  for variant in [v for v in ATTACK_RUN_ORDER if v in args.attack_variants.split(",")]:
    row = {"variant": variant, "label": ATTACK_LABELS[variant].format(c=args.chunk_size),
           "batch_size": batch_size, "chunk_size": None if variant in ("vmapped", "shared")
           else args.chunk_size, "attack_steps": args.attack_steps}
    rows[variant] = row
    if variant == "nano_unroll" and num_chunks > args.unroll_max_chunks:
      row.update(error="skipped", message=f"{num_chunks} nano-batches > --unroll_max_chunks="
                 f"{args.unroll_max_chunks} (compile time)")
      print(f"  attack {variant} b{batch_size}: skipped ({num_chunks} chunks)", flush=True)
      continue
    fn = jax.jit(make_attack(variant, model, backbone, num_steps=args.attack_steps,
                             chunk_size=args.chunk_size))
    try:
      t0 = time.perf_counter()
      lowered = fn.lower(*call_args)
      if args.dry_run:
        row["lowered_s"] = time.perf_counter() - t0
        print(f"  attack {variant} b{batch_size}: lowered in {row['lowered_s']:.1f} s",
              flush=True)
        continue
      compiled = lowered.compile()
      row["compile_s"] = time.perf_counter() - t0
      row.update(compiled_memory(compiled))
      row.update(time_compiled(compiled, call_args, args.steps, args.repeats))
      row["images_per_s"] = batch_size / (row["ms"] / 1e3)
      row["device_peak_bytes_cumulative"] = device_peak_bytes()
      print(f"  attack {variant} b{batch_size}: {row['ms']:.1f} ms "
            f"(compile {row['compile_s']:.1f} s)", flush=True)
    except Exception as e:  # pylint: disable=broad-except  (OOM and friends: report, go on)
      row.update(error_row(e))
      print(f"  attack {variant} b{batch_size}: {row['error']}: {row['message']}", flush=True)
    finally:
      fn = lowered = compiled = None  # noqa: F841
      gc.collect()
  shared = rows.get("shared", {}).get("ms")
  for row in rows.values():
    if shared and row.get("ms"):
      row["ratio_to_shared"] = row["ms"] / shared
  if rows.get("vmapped", {}).get("ms") and rows.get("nano_map", {}).get("ms"):
    rows["vmapped"]["speedup_over_nano_map"] = rows["nano_map"]["ms"] / rows["vmapped"]["ms"]
  return [rows[v] for v in ATTACK_VARIANTS if v in rows]


# --------------------------------------------------------------------------- train steps


def time_train_steps(args, backbone, batch_size: int) -> list[dict]:
  def make_ada(model):
    return ada_method.make_ada(model, backbones=[backbone], nu=NU,
                               num_steps=args.attack_steps, ssim_threshold=SSIM_THRESHOLD,
                               chunk_size=args.train_chunk_size)
  rows = []
  for name, factory in (("nominal", None), ("ada", make_ada)):
    row = {"method": name, "model": args.classifier, "batch_size": batch_size}
    rows.append(row)
    try:
      if args.dry_run:
        t0 = time.perf_counter()
        row.update(train_step_memory(args.classifier, batch_size, factory, compile_it=False))
        row["lowered_s"] = time.perf_counter() - t0
        print(f"  train {name} b{batch_size}: lowered in {row['lowered_s']:.1f} s", flush=True)
        continue
      row.update(train_step.time_train_step(args.classifier, batch_size, "float32",
                                            args.steps, args.repeats, make_loss_fn=factory))
      row["device_peak_bytes_cumulative"] = device_peak_bytes()
      if args.train_memory:
        row.update(train_step_memory(args.classifier, batch_size, factory))
      print(f"  train {name} b{batch_size}: {row['step_ms']:.1f} ms/step "
            f"(compile {row['compile_s']:.1f} s)", flush=True)
    except Exception as e:  # pylint: disable=broad-except
      row.update(error_row(e))
      print(f"  train {name} b{batch_size}: {row['error']}: {row['message']}", flush=True)
    finally:
      gc.collect()
  if rows[0].get("step_ms") and rows[1].get("step_ms"):
    rows[1]["ratio_to_nominal"] = rows[1]["step_ms"] / rows[0]["step_ms"]
    rows[0]["ratio_to_nominal"] = 1.0
  return rows


# --------------------------------------------------------------------------- output


def mib(b):
  return "-" if b is None else f"{b / 2**20:,.1f}"


def fmt(v, spec):
  return "-" if v is None else format(v, spec)


def print_tables(train_rows, attack_rows) -> None:
  if train_rows:
    print("\nTable 1: train step (pad-crop-flip + loss + backward + SGD)\n")
    print("| method | batch | step (ms) | images/s | x nominal | compiled mem (MiB) | "
          "device peak so far (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in train_rows:
      if "error" in r or "step_ms" not in r:
        print(f"| {r['method']} | {r['batch_size']} | {r.get('error', 'lowered')} "
              f"{r.get('message', '')} | | | | |")
        continue
      print(f"| {r['method']} | {r['batch_size']} | {r['step_ms']:.1f} | "
            f"{r['images_per_s']:.1f} | {fmt(r.get('ratio_to_nominal'), '.2f')} | "
            f"{mib(r.get('compiled_bytes'))} | {mib(r.get('device_peak_bytes_cumulative'))} |")
  if attack_rows:
    print("\nTable 2: attack work (AdA attack alone, classifier in eval mode)\n")
    print("| variant | batch | ms / attack | images/s | x shared (d) | (a) speedup over (b) | "
          "compiled mem (MiB) | temp (MiB) | device peak so far (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in attack_rows:
      if "error" in r or "ms" not in r:
        print(f"| {r['label']} | {r['batch_size']} | {r.get('error', 'lowered')} "
              f"{r.get('message', '')} | | | | | | |")
        continue
      print(f"| {r['label']} | {r['batch_size']} | {r['ms']:.1f} | {r['images_per_s']:.1f} | "
            f"{fmt(r.get('ratio_to_shared'), '.2f')} | "
            f"{fmt(r.get('speedup_over_nano_map'), '.2f')} | {mib(r.get('compiled_bytes'))} | "
            f"{mib(r.get('temp_bytes'))} | {mib(r.get('device_peak_bytes_cumulative'))} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
  parser.add_argument("--json", default=None,
                      help="output path (default benchmarks/ada_step_<preset>.json)")
  parser.add_argument("--classifier", default=None,
                      help=f"one of {sorted(set(train_step.SHAPES) | set(EXTRA_CLASSIFIERS))}")
  parser.add_argument("--edsr_blocks", type=int, default=None)
  parser.add_argument("--edsr_features", type=int, default=None)
  parser.add_argument("--batch_sizes", default=None, help="comma-separated")
  parser.add_argument("--steps", type=int, default=None, help="timed calls per repeat")
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--attack_steps", type=int, default=None)
  parser.add_argument("--chunk_size", type=int, default=None, help="nano-batch size")
  parser.add_argument("--train_chunk_size", type=int, default=None,
                      help="chunk_size of the AdA train step (default: vmapped, None)")
  parser.add_argument("--unroll_max_chunks", type=int, default=16,
                      help="skip variant (c) above this many nano-batches")
  parser.add_argument("--tables", default="train,attack")
  parser.add_argument("--no_canonical_convs", action="store_true",
                      help="Take the ascent's gradients without core.canonical_conv (the "
                      "path before it, for a before/after comparison on CPU).")
  parser.add_argument("--attack_variants", default=",".join(ATTACK_VARIANTS),
                      help="subset of " + ",".join(ATTACK_VARIANTS))
  parser.add_argument("--no_train_memory", dest="train_memory", action="store_false",
                      help="skip the extra compile for the train steps' memory_analysis")
  parser.add_argument("--dry_run", action="store_true",
                      help="build and lower every variant; compile and run nothing")
  args = parser.parse_args()
  for k, v in PRESETS[args.preset].items():
    if getattr(args, k) is None:
      setattr(args, k, v)
  if args.json is None:
    args.json = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             f"ada_step_{args.preset}" + ("_dry_run" if args.dry_run else "")
                             + ".json")
  if args.chunk_size < 1:
    parser.error(f"--chunk_size={args.chunk_size} must be >= 1")
  register_classifiers()
  if args.classifier not in train_step.SHAPES:
    parser.error(f"--classifier={args.classifier} is not one of {sorted(train_step.SHAPES)}")
  batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
  tables = set(args.tables.split(","))
  if args.no_canonical_convs:  # the gradient as it was before `ascent._in_loop`
    from adacorr.attacks import ascent  # pylint: disable=import-outside-toplevel
    ascent._in_loop = lambda grad_fn: grad_fn  # pylint: disable=protected-access

  devices = jax.devices()
  header = {"device": devices[0].device_kind, "platform": devices[0].platform,
            "num_devices": len(devices), "jax": jax.__version__, "host": platform.node(),
            "cpu_count": os.cpu_count(), "preset": args.preset,
            "config": {k: v for k, v in vars(args).items() if k != "json"},
            "nu": NU, "ssim_threshold": SSIM_THRESHOLD,
            "loadavg_start": list(os.getloadavg())}
  image_shape = train_step.SHAPES[args.classifier][0]
  backbone = run.load_backbone(
      dict(net="edsr", init="random", net_kwargs=dict(num_blocks=args.edsr_blocks,
                                                      features=args.edsr_features)),
      image_shape=image_shape)
  header["edsr_params"] = int(sum(np.prod(p.shape) for p in jax.tree.leaves(backbone.params)))
  model = models.get_model(args.classifier, num_classes=10,
                           mean=train_step.SHAPES[args.classifier][1],
                           std=train_step.SHAPES[args.classifier][2])
  header["classifier_params"] = int(sum(np.prod(s.shape) for s in jax.tree.leaves(
      jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                     jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))["params"])))
  print(f"device: {header['device']} x{header['num_devices']} ({header['platform']}), "
        f"jax {header['jax']}; {args.classifier} ({header['classifier_params']:,} params) + "
        f"EDSR({args.edsr_blocks} blocks, {args.edsr_features} features; "
        f"{header['edsr_params']:,} params) at {'x'.join(map(str, image_shape))}, batches "
        f"{batch_sizes}, {args.attack_steps} attack steps; load average "
        f"{header['loadavg_start'][0]:.2f}" + ("; DRY RUN" if args.dry_run else ""), flush=True)

  t_start = time.perf_counter()
  train_rows, attack_rows = [], []
  for b in batch_sizes:  # attacks first: the cumulative device peak then grows by variant
    if "attack" in tables:
      attack_rows += time_attacks(args, model, backbone, b)
    if "train" in tables:
      train_rows += time_train_steps(args, backbone, b)
    jax.clear_caches()
  print_tables(train_rows, attack_rows)
  header["loadavg_end"] = list(os.getloadavg())
  header["wall_s"] = time.perf_counter() - t_start
  with open(args.json, "w", encoding="utf-8") as f:
    json.dump({**header, "train_step": train_rows, "attack": attack_rows}, f, indent=2)
  print(f"\nwall {header['wall_s']:.0f} s; load average at end {header['loadavg_end'][0]:.2f}; "
        f"wrote {args.json}")


if __name__ == "__main__":
  main()
