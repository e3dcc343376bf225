"""Perceptual robustness (Laidlaw et al. 2021): accuracy under LPA and PPGD per LPIPS bound
(the paper's Table 2 reports both)."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging

from adacorr import data as data_lib
from adacorr import parallel
from adacorr import perceptual
from adacorr.attacks.perceptual import lpa, ppgd
from adacorr.core import checks

PROJECTIONS = ("newton", "bisection")
PERCEPTUAL_ATTACKS = ("LPA", "PPGD")


def evaluate_lpips(model, variables, source: data_lib.Source, *, bounds: Sequence[float],
                   features_fn: Callable[[jax.Array], list] | None = None,
                   num_steps: int = 40, lambda_steps: int = 5, projection: str = "newton",
                   batch_size: int = 500, mesh=None, seed: int = 0,
                   attacks: Sequence[str] = PERCEPTUAL_ATTACKS) -> dict[str, Any]:
  """Accuracy under LPA and PPGD (Laidlaw et al. 2021) per LPIPS bound on every example of
  `source`, each attack and their per-example worst case.

  Self-bounded (`features_fn=None`: the LPIPS distance on `model`'s own layers) or
  bounded by `features_fn(x) -> [f_l]` (another network). One jit-compiled attack serves
  every bound (the bound is traced); batches of `batch_size` are sharded over `mesh`
  (default `parallel.make_mesh()`). The last batch is padded with copies of its own
  examples and their keys (an example's result depends only on its image, label and key,
  so the copies finish with the originals and do not keep LPA's early-exit loop
  running). An example counts as robust if it is classified correctly both clean and at
  every attack's output. Example i is attacked with key i of `split(PRNGKey(seed), N)`
  (folded with the attack's index).

  Args:
    model, variables: the classifier (`model.apply(variables, x, train=False)`).
    source: a `data.Source` of uint8 images.
    bounds: LPIPS bounds, each >= 0.
    features_fn: images (B, H, W, C) in [0, 1] -> list of feature maps of the LPIPS
      network (None: `model`'s own LPIPS layers).
    num_steps, lambda_steps, projection: LPA's steps per lambda round, lambda rounds and
      final projection ('newton' or 'bisection'); PPGD takes `num_steps` steps.
    attacks: a non-empty subset of ('LPA', 'PPGD').

  Returns:
    dict with 'attack' (the attacks joined by '+', e.g. 'LPA+PPGD'), 'attacks',
    'num_examples', 'steps', 'lambda_steps', 'projection', 'bounds', 'clean_accuracy',
    and per bound (lists in the order of `bounds`) 'accuracy' (correct under every
    attack), 'per_attack' ({attack: [accuracy per bound]}), 'mean_distance',
    'max_distance', 'num_outside' (distance > bound + 1e-4; over every attack's
    points) and 'seconds'.
  """
  bounds = [float(b) for b in bounds]
  checks.check_nonnegative(np.asarray(bounds, np.float64), "bounds")
  if not bounds:
    raise ValueError("bounds must hold at least one LPIPS bound.")
  checks.check_steps(num_steps, "num_steps", minimum=1)
  checks.check_steps(lambda_steps, "lambda_steps", minimum=1)
  checks.check_choice(projection, PROJECTIONS, "projection")
  checks.check_steps(batch_size, "batch_size", minimum=1)
  attacks = tuple(attacks)
  if not attacks:
    raise ValueError(f"attacks must name at least one of {PERCEPTUAL_ATTACKS}.")
  for a in attacks:
    checks.check_choice(a, PERCEPTUAL_ATTACKS, "attacks")
  mesh = parallel.make_mesh() if mesh is None else mesh

  # The variables are an argument (traced, not constants): one compilation serves every
  # model of this architecture (across processes with the persistent compilation cache).
  @jax.jit
  def attack(variables, images, labels, keys, bound):
    logits_fn = perceptual.model_logits_fn(model, variables)
    if features_fn is None:
      attack_fns = (perceptual.features_and_logits_fn(model, variables), None)
      distance_features = perceptual.model_features_fn(model, variables)
    else:
      attack_fns = (logits_fn, features_fn)
      distance_features = features_fn
    x = images.astype(jnp.float32) / 255.0
    clean_ok = jnp.argmax(logits_fn(x), -1) == labels
    adv_ok, dist = [], []
    for j, name in enumerate(attacks):
      ks = jax.vmap(lambda k, j=j: jax.random.fold_in(k, j))(keys)
      if name == "LPA":
        x_adv = lpa(*attack_fns, x, labels, ks, bound=bound, num_steps=num_steps,
                    lambda_steps=lambda_steps, projection=projection)
      else:
        x_adv = ppgd(*attack_fns, x, labels, ks, bound=bound, num_steps=num_steps)
      adv_ok.append(jnp.argmax(logits_fn(x_adv), -1) == labels)
      dist.append(perceptual.lpips_distance(distance_features, x, x_adv))
    return clean_ok, jnp.stack(adv_ok, -1), jnp.max(jnp.stack(dist, -1), -1)

  n = source.num_examples
  images, labels = source.get(np.arange(n))
  keys = np.asarray(jax.random.split(jax.random.PRNGKey(seed), n))
  devices = mesh.devices.size
  bs = max(devices, min(batch_size, n) - min(batch_size, n) % devices)
  rows = parallel.host_local_slice(bs, mesh)
  variables = jax.device_put(variables, parallel.replicated_sharding(mesh))
  starts = range(0, n, bs)
  result = {"attack": "+".join(attacks), "attacks": list(attacks), "num_examples": int(n), "steps": num_steps,
            "lambda_steps": lambda_steps, "projection": projection, "bounds": bounds,
            "clean_accuracy": None, "accuracy": [], "per_attack": {a: [] for a in attacks},
            "mean_distance": [], "max_distance": [],
            "num_outside": [], "seconds": []}
  progress = tqdm.tqdm(total=len(bounds) * len(starts), desc="+".join(attacks),
                       file=sys.stdout)
  for bound in bounds:
    tic = time.time()
    clean_ok, adv_ok, dist = (np.zeros((n,), bool), np.zeros((n, len(attacks)), bool),
                              np.zeros((n,), np.float32))
    for start in starts:
      progress.set_postfix(bound=bound)
      num_real = min(bs, n - start)
      idx = start + np.arange(bs) % num_real  # padding: copies of this batch's examples
      batch = parallel.shard_batch((images[idx][rows], labels[idx][rows].astype(np.int32),
                                    keys[idx][rows]), mesh)
      out = attack(variables, *batch, jnp.float32(bound))
      c, a, d = (np.asarray(o)[:num_real] for o in out)
      clean_ok[start:start + num_real], adv_ok[start:start + num_real] = c, a
      dist[start:start + num_real] = d
      progress.update()
    outside = int(np.sum(dist > bound + 1e-4))
    if outside:
      logging.warning("%s at LPIPS bound %g: %d of %d adversarial examples lie outside "
                      "the bound (max distance %.5f).", result["attack"], bound, outside, n,
                      float(dist.max()))
    if result["clean_accuracy"] is None:
      result["clean_accuracy"] = float(clean_ok.mean())
    result["accuracy"].append(float((clean_ok & adv_ok.all(-1)).mean()))
    for j, a in enumerate(attacks):
      result["per_attack"][a].append(float((clean_ok & adv_ok[:, j]).mean()))
    result["mean_distance"].append(float(dist.mean()))
    result["max_distance"].append(float(dist.max()))
    result["num_outside"].append(outside)
    result["seconds"].append(time.time() - tic)
  progress.close()
  return result
