r"""AutoAttack parity: ours (`adacorr.attacks.autoattack`) vs the authors' (pyautoattack 0.2.0).

  python -m benchmarks.autoattack_parity [--num_examples=64] [--radii=linf:8/255,l2:0.5]
      [--warm] [--profile] [--json=benchmarks/autoattack_parity.json]

The model is pyautoattack's adversarially trained CIFAR-10 ResNet-18
(`examples/model_test.pt`), in torch for the reference and converted to flax for ours
(`benchmarks.torch_resnet18`; the max |logit difference| is recorded). The images are
`num_examples` 32x32 patches of scikit-image's photographs, labelled with the torch
model's predictions (clean accuracy 100% for both). Per radius, on the CPU:

  reference  `AutoAttack(model, norm=..., eps=..., version='standard', device='cpu',
             seed=0).run_standard_evaluation(x, y, batch_size=num_examples)`; its
             per-component robust accuracy and points attacked are read from its own
             log lines (logger 'auto-attack'), each component's wall and CPU time from a
             timer around that attack object's `perturb`, and the final robust accuracy is
             checked on its returned points;
  ours       `attacks.autoattack(..., version='custom', attacks=<the standard components,
             in the standard order, each wrapped in a timer>, batch_size=num_examples)`:
             the same code path as version='standard' (which builds these components with
             `component_attacks`), with each call's wall and CPU time (first call:
             compilation included) and padded size recorded, and the time outside the
             attack calls (clean and final forward passes, threat-model checks, host
             copies). `--warm` runs ours a second time (compiled).

Wall and process CPU time are both recorded (and the load average around each run): on a
shared machine the wall time depends on the other processes.

`--profile` adds: forward and forward+backward (sum of CE, gradient w.r.t. the input)
wall and CPU time per batch of `num_examples` in both frameworks (the fastest of 10);
the compile time of each of our components at batch size `num_examples`
(`jit(...).lower(...).compile()` after `jax.clear_caches()`); and the cost of one
signed-gradient step as separate jitted calls vs inside one `lax.fori_loop` (as our
attacks run) vs the same loop unrolled, with the convolutions of each compiled program
by kernel dimension order, and one convolution with the kernel in HWIO vs HWOI order,
alone and inside a `fori_loop`. `--only_profile` runs just the two step profiles and merges
them into an existing --json. Prints markdown tables and writes JSON.
"""

import argparse
import datetime
import json
import logging
import os
import platform
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from adacorr import attacks
from adacorr.attacks import lp
from adacorr.attacks.autoattack import ORDER
from adacorr.evaluation import parse_radius
from benchmarks import torch_resnet18 as tr

REF_NORM = {"linf": "Linf", "l2": "L2"}


class _Timed:
  """Wraps one component attack; records (rows, wall s, process CPU s) per call, blocking
  on the result."""

  def __init__(self, fn):
    self.fn, self.calls = fn, []

  def __call__(self, x, y, keys):
    tic, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(self.fn(x, y, keys))
    self.calls.append((int(x.shape[0]), time.perf_counter() - tic,
                       time.process_time() - cpu))
    return out


class _TimedMethod:
  """Wraps a reference attack's `perturb`; records (rows, wall s, process CPU s)."""

  def __init__(self, fn):
    self.fn, self.calls = fn, []

  def __call__(self, x, y, *a, **k):
    tic, cpu = time.perf_counter(), time.process_time()
    out = self.fn(x, y, *a, **k)
    self.calls.append((int(x.shape[0]), time.perf_counter() - tic,
                       time.process_time() - cpu))
    return out


class _Capture(logging.Handler):

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


def run_reference(torch_model, x, y, norm, eps, seed=0):
  """pyautoattack's standard evaluation; per component from its log lines."""
  import torch  # pylint: disable=g-import-not-at-top
  from pyautoattack import AutoAttack  # pylint: disable=g-import-not-at-top
  logger = logging.getLogger("auto-attack")
  cap = _Capture()
  logger.addHandler(cap)
  logger.setLevel(logging.DEBUG)
  logger.propagate = False
  try:
    adversary = AutoAttack(torch_model, norm=REF_NORM[norm], eps=eps, version="standard",
                           device="cpu", seed=seed)
    timers = {}
    for name, attr in (("apgd-ce", "apgd"), ("apgd-t", "apgd_targeted"), ("fab-t", "fab"),
                       ("square", "square")):
      timers[name] = _TimedMethod(getattr(adversary, attr).perturb)
      setattr(getattr(adversary, attr), "perturb", timers[name])
    xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
    yt = torch.from_numpy(np.asarray(y, np.int64))
    tic, cpu = time.perf_counter(), time.process_time()
    x_adv, _ = adversary.run_standard_evaluation(xt, yt, batch_size=x.shape[0])
    seconds, cpu_seconds = time.perf_counter() - tic, time.process_time() - cpu
  finally:
    logger.removeHandler(cap)
  per, attacked, cum_time = {}, {}, {}
  for line in cap.lines:
    m = re.match(r"(\S+) - \d+/\d+ - (\d+) out of (\d+) successfully perturbed", line)
    if m:
      attacked[m.group(1)] = attacked.get(m.group(1), 0) + int(m.group(3))
    m = re.match(r"robust accuracy after (\S+): ([\d.]+)% \(total time ([\d.]+) s\)", line)
    if m:
      per[m.group(1).lower()] = float(m.group(2)) / 100
      cum_time[m.group(1).lower()] = float(m.group(3))
  with torch.no_grad():
    robust = (torch_model(x_adv).argmax(1) == yt).numpy()
  delta = (x_adv - xt).reshape(x.shape[0], -1)
  dist = (delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)).max().item()
  return {"per_attack": per, "num_attacked": attacked, "robust_accuracy": float(robust.mean()),
          "robust": robust.tolist(), "seconds": seconds, "cpu_seconds": cpu_seconds,
          "component_seconds": {k: sum(c[1] for c in t.calls) for k, t in timers.items()
                                if t.calls},
          "component_cpu_seconds": {k: sum(c[2] for c in t.calls)
                                    for k, t in timers.items() if t.calls},
          "log_cumulative_seconds": cum_time, "max_distance": dist, "log": cap.lines}


def run_ours(logits_fn, x, y, norm, eps, key, comps):
  """`attacks.autoattack` with the standard components (timed)."""
  timed = {name: _Timed(fn) for name, fn in comps.items()}
  tic, cpu = time.perf_counter(), time.process_time()
  aa = attacks.autoattack(logits_fn, x, y, key, norm=norm, eps=eps, version="custom",
                          attacks=timed, batch_size=x.shape[0])
  seconds, cpu_seconds = time.perf_counter() - tic, time.process_time() - cpu
  comp_seconds, comp_cpu, calls = {}, {}, {}
  for sub, t in timed.items():
    name = sub.split("@")[0]
    if not t.calls:
      continue
    comp_seconds[name] = comp_seconds.get(name, 0.0) + sum(c[1] for c in t.calls)
    comp_cpu[name] = comp_cpu.get(name, 0.0) + sum(c[2] for c in t.calls)
    calls.setdefault(name, []).extend([{"target_rank": sub[7:] if "@" in sub else None,
                                        "rows": r, "seconds": s, "cpu_seconds": c}
                                       for r, s, c in t.calls])
  delta = (np.asarray(aa["x_adv"]) - np.asarray(x)).reshape(x.shape[0], -1)
  dist = float((np.abs(delta).max(1) if norm == "linf"
                else np.sqrt((delta ** 2).sum(1))).max())
  return {"per_attack": aa["per_attack"], "num_attacked": aa["num_attacked"],
          "robust_accuracy": aa["robust_accuracy"], "robust": aa["robust"].tolist(),
          "clean_accuracy": aa["clean_accuracy"], "seconds": seconds,
          "cpu_seconds": cpu_seconds, "component_seconds": comp_seconds,
          "component_cpu_seconds": comp_cpu, "calls": calls,
          "outside_attacks_seconds": seconds - sum(comp_seconds.values()),
          "max_distance": dist}


def _time(fn, reps):
  """(wall s, process CPU s) of the fastest of `reps` calls (by wall time) after one
  warm-up call: the least disturbed by other processes on a shared machine."""
  fn()
  best = (float("inf"), float("inf"))
  for _ in range(reps):
    tic, cpu = time.perf_counter(), time.process_time()
    fn()
    best = min(best, (time.perf_counter() - tic, time.process_time() - cpu))
  return best


def profile_steps(torch_model, logits_fn, x, y, reps=10):
  """Per batch: forward and forward+backward (input gradient of the summed CE), each
  (wall s, process CPU s) of the fastest of `reps` calls after a warm-up call."""
  import torch  # pylint: disable=g-import-not-at-top
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  loss = lambda v: jnp.sum(lp.loss_per_example(logits_fn(v), yj, loss="ce"))
  grad = jax.jit(jax.value_and_grad(loss))
  fwd = jax.jit(logits_fn)
  out = {"jax_forward": _time(lambda: jax.block_until_ready(fwd(xj)), reps),
         "jax_forward_backward": _time(lambda: jax.block_until_ready(grad(xj)), reps)}
  xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
  yt = torch.from_numpy(np.asarray(y, np.int64))
  ce = torch.nn.CrossEntropyLoss(reduction="none")

  def t_grad():
    xa = xt.clone().requires_grad_()
    with torch.enable_grad():
      lo = ce(torch_model(xa), yt).sum()
    torch.autograd.grad(lo, [xa])

  def t_fwd():
    with torch.no_grad():
      torch_model(xt)

  out["torch_forward"] = _time(t_fwd, reps)
  out["torch_forward_backward"] = _time(t_grad, reps)
  out["torch_threads"] = torch.get_num_threads()
  return out


def profile_loop(logits_fn, x, y, steps=3):
  """The same `steps` signed-gradient steps (CE, batch of x.shape[0]) as separate jitted
  calls, in one `lax.fori_loop`, and in an unrolled loop: (wall s, CPU s) per step, and
  the convolutions of each compiled program by kernel dimension order (XLA:CPU's fast
  convolution wants 'io'; an 'oi' convolution is the backward pass's, not canonicalised)."""
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  loss = lambda v: jnp.sum(lp.loss_per_example(logits_fn(v), yj, loss="ce"))
  step = lambda i, v: jnp.clip(v + 1e-3 * jnp.sign(jax.grad(loss)(v)), 0.0, 1.0)
  one = jax.jit(lambda v: step(0, v))

  def calls():
    v = xj
    for i in range(steps):
      v = one(v)
    return jax.block_until_ready(v)

  out = {"steps": steps}
  programs = {"separate_calls": None,
              "fori_loop": jax.jit(lambda v: jax.lax.fori_loop(0, steps, step, v)),
              "fori_loop_unrolled": jax.jit(
                  lambda v: jax.lax.fori_loop(0, steps, step, v, unroll=True))}
  for name, fn in programs.items():
    text = (fn or one).lower(xj).compile().as_text()
    kinds = re.findall(r"convolution\(.*dim_labels=\w+_\w\w(\w\w)->", text)
    run = calls if fn is None else (lambda fn=fn: jax.block_until_ready(fn(xj)))
    wall, cpu = _time(run, 2)
    out[name] = {"per_step": (wall / steps, cpu / steps),
                 "convolutions": {k: kinds.count(k) for k in sorted(set(kinds))}}
  out["conv3x3_64x32x32x64"] = profile_conv()
  return out


def profile_conv(iters=4):
  """One 3x3 64->64 convolution on (64, 32, 32, 64) with the kernel given as HWIO or HWOI
  (the backward pass's order): (wall s, CPU s) per convolution as a separate jitted call
  and per iteration of a `fori_loop` of `iters` (convolution + tanh)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(64, 32, 32, 64)).astype(np.float32))
  k = jnp.asarray(rng.normal(size=(3, 3, 64, 64)).astype(np.float32))
  out = {}
  for dn in ("HWIO", "HWOI"):
    conv = lambda a, dn=dn: jax.lax.conv_general_dilated(
        a, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", dn, "NHWC"))
    one = jax.jit(conv)
    loop = jax.jit(lambda a, conv=conv: jax.lax.fori_loop(
        0, iters, lambda i, v: jnp.tanh(conv(v)), a))
    wall, cpu = _time(lambda: jax.block_until_ready(loop(x)), 2)
    out[dn] = {"separate_call": _time(lambda: jax.block_until_ready(one(x)), 3),
               "in_fori_loop": (wall / iters, cpu / iters)}
  return out


def profile_compile(comps, x, y, key):
  """Seconds to lower and compile each component for a batch of x.shape[0] rows (one
  APGD-T target rank: all ranks share the compiled function). Clears JAX's caches
  first, so that nothing compiled before is reused."""
  jax.clear_caches()
  keys = jax.random.split(key, x.shape[0])
  out = {}
  for name, fn in comps.items():
    if name.startswith("apgd-t@") and not name.endswith("@2"):
      continue
    tic, cpu = time.perf_counter(), time.process_time()
    lowered = fn.func.lower(jnp.asarray(x), jnp.asarray(y), keys, **fn.keywords)
    mid = time.perf_counter()
    lowered.compile()
    out[name.split("@")[0]] = {"lower_s": mid - tic, "compile_s": time.perf_counter() - mid,
                               "cpu_s": time.process_time() - cpu}
  return out


def _pct(v):
  return "" if v is None else f"{100 * v:.1f}%"


def print_table(row, num_examples):
  """Markdown: per component robust accuracy (cumulative), points attacked, wall / CPU s."""
  ref, ours, warm = row["reference"], row["ours"], row.get("ours_warm")
  cols = ["reference robust", "ref. attacked", "ref. wall s", "ref. CPU s", "ours robust",
          "ours attacked", "ours wall s (cold)", "ours CPU s (cold)"]
  if warm:
    cols += ["ours wall s (warm)", "ours CPU s (warm)"]
  print(f"\n| {row['norm']} {row['eps']}, {num_examples} images | " + " | ".join(cols) + " |")
  print("|---" * (len(cols) + 1) + "|")
  runs = [ours] + ([warm] if warm else [])
  for name in ORDER["standard"]:
    cells = [_pct(ref["per_attack"].get(name)), str(ref["num_attacked"].get(name, 0)),
             f"{ref['component_seconds'].get(name, 0.0):.1f}",
             f"{ref['component_cpu_seconds'].get(name, 0.0):.1f}",
             _pct(ours["per_attack"].get(name) if ours["num_attacked"].get(name) else None),
             str(ours["num_attacked"].get(name, 0))]
    for r in runs:
      cells += [f"{r['component_seconds'].get(name, 0.0):.1f}",
                f"{r['component_cpu_seconds'].get(name, 0.0):.1f}"]
    print(f"| {name} | " + " | ".join(cells) + " |")
  cells = [_pct(ref["robust_accuracy"]), "", f"{ref['seconds']:.1f}",
           f"{ref['cpu_seconds']:.1f}", _pct(ours["robust_accuracy"]), ""]
  for r in runs:
    cells += [f"{r['seconds']:.1f}", f"{r['cpu_seconds']:.1f}"]
  print("| total | " + " | ".join(cells) + " |")
  if "compile" in row:
    print(f"our compile (lower + compile) at batch {num_examples}: "
          + ", ".join(f"{k} {v['lower_s'] + v['compile_s']:.1f} s"
                      for k, v in row["compile"].items()))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_examples", type=int, default=64)
  parser.add_argument("--radii", default="linf:8/255,l2:0.5")
  parser.add_argument("--warm", action="store_true", help="run ours a second time, compiled")
  parser.add_argument("--profile", action="store_true")
  parser.add_argument("--only_profile", action="store_true",
                      help="only the per-batch and loop profiles, merged into --json")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", default="benchmarks/autoattack_parity.json")
  args = parser.parse_args()

  import torch  # pylint: disable=g-import-not-at-top
  import pyautoattack  # pylint: disable=g-import-not-at-top
  torch_model = tr.torch_resnet18()
  module = tr.flax_resnet18()
  variables = tr.variables_from_torch(torch_model.state_dict())
  logits_fn = jax.jit(lambda v: module.apply(variables, v, train=False))
  x = tr.natural_images(args.num_examples)
  with torch.no_grad():
    logits_t = torch_model(torch.from_numpy(np.ascontiguousarray(
        np.transpose(x, (0, 3, 1, 2))))).numpy()
  y = logits_t.argmax(1).astype(np.int32)
  logits_j = np.asarray(logits_fn(jnp.asarray(x)))
  result = {
      "date": datetime.date.today().isoformat(),
      "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()}, "
                f"{jax.device_count()} devices, {os.cpu_count()} CPUs)",
      "platform": platform.platform(), "jax": jax.__version__, "torch": torch.__version__,
      "torch_threads": torch.get_num_threads(), "pyautoattack": pyautoattack.__version__,
      "model": "pyautoattack examples/model_test.pt (CIFAR-10 ResNet-18)",
      "images": f"{args.num_examples} 32x32 patches of skimage.data {', '.join(tr.PHOTOS)}",
      "num_examples": args.num_examples,
      "logits_max_abs_diff": float(np.abs(logits_t - logits_j).max()),
      "logits_max_abs": float(np.abs(logits_t).max()),
      "predictions_agree": float(np.mean(logits_t.argmax(1) == logits_j.argmax(1))),
      "labels_histogram": np.bincount(y, minlength=10).tolist(),
      "radii": []}
  print(f"{result['model']}; {result['images']}; {result['device']}, torch "
        f"{result['torch_threads']} threads; max |logit diff| torch vs flax "
        f"{result['logits_max_abs_diff']:.3g} (max |logit| {result['logits_max_abs']:.3g})")

  if args.profile or args.only_profile:
    result["steps"] = profile_steps(torch_model, logits_fn, x, y)
    print(f"per batch of {args.num_examples} (wall s, CPU s): " + ", ".join(
        f"{k} ({v[0]:.3f}, {v[1]:.3f})" for k, v in result["steps"].items()
        if isinstance(v, tuple)))
    result["loop"] = profile_loop(logits_fn, x, y)
    print("signed-gradient steps, per step (wall s, CPU s) and convolutions by kernel "
          "order: " + "; ".join(f"{k} ({v['per_step'][0]:.2f}, {v['per_step'][1]:.2f}) "
                                f"{v['convolutions']}" for k, v in result["loop"].items()
                                if isinstance(v, dict) and "per_step" in v))
    print("one 3x3 64->64 convolution, (wall s, CPU s), separate call / in a fori_loop: "
          + "; ".join(f"{dn} ({v['separate_call'][0]:.3f}, {v['separate_call'][1]:.3f}) / "
                      f"({v['in_fori_loop'][0]:.3f}, {v['in_fori_loop'][1]:.3f})"
                      for dn, v in result["loop"]["conv3x3_64x32x32x64"].items()))
  if args.only_profile:
    if os.path.exists(args.json):
      with open(args.json, encoding="utf-8") as f:
        previous = json.load(f)
      previous.update({k: result[k] for k in ("steps", "loop")},
                      profile_date=result["date"])
      result = previous
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)
    print(f"wrote {args.json}")
    return

  xj, yj = jnp.asarray(x), jnp.asarray(y)
  for item in args.radii.split(","):
    norm, text = item.split(":")
    eps = parse_radius(text)
    comps = attacks.component_attacks(logits_fn, norm=norm, eps=eps, names=ORDER["standard"])
    row = {"norm": norm, "eps": text, "eps_value": eps, "load_before": os.getloadavg()}
    print(f"\n{norm} {text}: reference ...", flush=True)
    row["reference"] = run_reference(torch_model, x, y, norm, eps, seed=args.seed)
    row["load_after_reference"] = os.getloadavg()
    print(f"{norm} {text}: ours (cold) ...", flush=True)
    row["ours"] = run_ours(logits_fn, xj, yj, norm, eps, jax.random.PRNGKey(args.seed), comps)
    row["load_after_ours"] = os.getloadavg()
    if args.warm:
      print(f"{norm} {text}: ours (warm) ...", flush=True)
      row["ours_warm"] = run_ours(logits_fn, xj, yj, norm, eps,
                                  jax.random.PRNGKey(args.seed), comps)
    if args.profile:
      print(f"{norm} {text}: compile times ...", flush=True)
      row["compile"] = profile_compile(comps, x, y, jax.random.PRNGKey(args.seed))
    row["load_after"] = os.getloadavg()
    result["radii"].append(row)

    print_table(row, args.num_examples)

  os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
  with open(args.json, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
