"""l_p robustness: accuracy under PGD, APGD-CE/DLR and AutoAttack, their per-example worst
case, and the cheap gradient-masking checks of AutoAttack's and Carlini et al.'s lists."""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from adacorr import attacks
from adacorr.attacks import lp as lp_attacks
from adacorr.attacks.autoattack import NUM_TARGETS
from adacorr import data as data_lib
from adacorr import parallel
from adacorr.core import checks
from adacorr.evaluation import clean
from adacorr.evaluation.radius import parse_radius

AUTOATTACK = ("standard", "fast", "none")


# One compilation per (logits_fn, norm, steps, batch shape): eps is traced, so every radius
# reuses it; logits_fn is a pytree (`attacks.lp.as_pytree`), a `traced_logits_fn` shares
# the compilation between models of one architecture.
@functools.partial(jax.jit, static_argnames=("norm", "num_steps"))
def _pgd(x, y, keys, eps, logits_fn, *, norm, num_steps):
  return attacks.pgd(logits_fn, x, y, keys, norm=norm, eps=eps, step_size=2.5 * eps / num_steps,
                     num_steps=num_steps)


@functools.partial(jax.jit, static_argnames=("norm", "num_steps", "loss"))
def _apgd(x, y, keys, eps, logits_fn, *, norm, num_steps, loss):
  return attacks.apgd(logits_fn, x, y, keys, norm=norm, eps=eps, num_steps=num_steps, loss=loss)
AA_PREFIX = "AA/"  # per-component columns: 'AA/apgd-ce', ... (cumulative robust accuracy)


def check_radii(radii: Mapping[str, Sequence[str | float]], *,
                image_shape: Sequence[int] | None = None) -> dict[str, list[float]]:
  """`radii` (`{norm: [radius, ...]}`, radii numbers or strings like '8/255') parsed:
  `{norm: [float, ...]}`. ValueError, naming the entry, unless `radii` is a non-empty
  mapping of 'linf' / 'l2' to non-empty lists of radii fit for evaluation
  (`core.checks.check_radius_for_evaluation`: finite, > 0, l_inf <= 1, i.e. not in
  0-255 units); an l2 radius >= sqrt(H * W * C) (`image_shape` given) warns."""
  if not isinstance(radii, Mapping) or not radii:
    raise ValueError(f"radii={radii!r} must be a non-empty mapping {{norm: [radius, ...]}}, "
                     f"e.g. {{'linf': ['8/255'], 'l2': ['0.5']}}.")
  parsed = {}
  for norm, eps_list in radii.items():
    checks.check_norm(norm, "radii key")
    if isinstance(eps_list, (str, bytes)) or not isinstance(eps_list, Sequence):
      raise ValueError(f"radii[{norm!r}]={eps_list!r} must be a list of radii, e.g. "
                       f"[{eps_list!r}].")
    if not eps_list:
      raise ValueError(f"radii[{norm!r}] is empty: give at least one radius, or leave "
                       f"{norm!r} out.")
    parsed[norm] = []
    for text in eps_list:
      try:
        eps = parse_radius(text)
      except ValueError as e:
        raise ValueError(f"radii[{norm!r}]: {e}") from e
      parsed[norm].append(checks.check_radius_for_evaluation(
          eps, norm, f"radii[{norm!r}]", image_shape=image_shape))
  return parsed


def lp_robustness(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, y: jax.Array, *,
                  radii: Mapping[str, Sequence[str | float]], pgd_steps: int = 20,
                  apgd_steps: int = 50, autoattack: str = "standard",
                  masking_steps: int = 100, aa_steps: int = 100, square_queries: int = 5000,
                  aa_targets: int = NUM_TARGETS, seed: int = 0, batch_size: int = 250,
                  log: Callable[[str], None] | None = None, mesh=None) -> list[dict[str, Any]]:
  """Accuracy under PGD, APGD-CE, APGD-DLR and AutoAttack, and the worst case, per radius.

  Args:
    logits_fn: x (B, H, W, C) -> logits (B, K).
    x: (N, H, W, C) images in [0, 1].
    y: (N,) int labels.
    radii: `{norm: [radius, ...]}`, norm 'linf' or 'l2', a radius a number or a string
      such as '8/255' (see `parse_radius`), in the order evaluated.
    pgd_steps: PGD steps (random start, step size 2.5 eps / steps).
    apgd_steps: APGD steps (CE and DLR losses, each on every example); 0 skips both
      (AutoAttack's own APGD-CE and APGD-T then stand for them).
    autoattack: 'standard' (APGD-CE, APGD-T, FAB-T, Square; `attacks.autoattack`),
      'fast' (APGD-CE, APGD-T: a quick look, not the standard number) or 'none'.
    masking_steps: PGD steps of the masking check (PGD-`masking_steps` beside
      PGD-`pgd_steps`); 0 skips it.
    aa_steps, square_queries, aa_targets: AutoAttack's APGD/FAB iterations (reference
      100), Square's queries (reference 5000) and APGD-T/FAB-T's target classes
      (reference 9; fewer is a weaker, cheaper attack, `attacks.autoattack`).
    seed: the attacks' key.
    batch_size: examples attacked at once.
    log: one line per radius (e.g. `print`).
    mesh: shard every attacked batch over this mesh (`attacks.robust_accuracy`); None:
      as the arrays come. The numbers do not depend on it.

  Returns:
    One dict per radius: 'norm', 'eps' (as given), 'clean', f'PGD-{pgd_steps}',
    (f'PGD-{masking_steps}'), 'APGD-CE', 'APGD-DLR', with AutoAttack 'AutoAttack' and
    'AA/<component>' (robust accuracy after that component and all before it), and
    'worst_case' (fraction correct under every attack); accuracies in [0, 1]. Every
    attack is success-aware and every returned point is checked against the threat model
    (a violation raises, naming the attack). See `masking_flags` for the checks.

  Raises:
    ValueError: naming the argument, before any attack runs: empty `radii` (or an empty
      list), a radius that is 0, negative, NaN / inf or, for l_inf, > 1 (0-255 units;
      `check_radii`), an empty batch, step counts < 1; and while evaluating, an attack
      or `logits_fn` returning NaN / inf (`attacks.robust_accuracy`).
  """
  checks.check_steps(pgd_steps, "pgd_steps", minimum=1)
  checks.check_steps(apgd_steps, "apgd_steps")
  checks.check_steps(masking_steps, "masking_steps")
  checks.check_choice(autoattack, AUTOATTACK, "autoattack")
  if autoattack != "none":
    checks.check_steps(aa_steps, "aa_steps", minimum=1)
    checks.check_steps(square_queries, "square_queries", minimum=1)
  checks.check_steps(batch_size, "batch_size", minimum=1)
  checks.check_images(x, allow_empty=False)
  checks.check_labels(y, jnp.shape(x)[0])
  check_radii(radii, image_shape=jnp.shape(x))  # before anything is traced
  results = []
  attack_fn = lp_attacks.as_pytree(logits_fn)
  for norm, eps_list in radii.items():
    for text in eps_list:
      eps = parse_radius(text)
      steps = [pgd_steps] + ([masking_steps] if masking_steps and masking_steps != pgd_steps
                             else [])
      e = jnp.float32(eps)
      suite = {f"PGD-{s}": functools.partial(_pgd, eps=e, logits_fn=attack_fn, norm=norm,
                                             num_steps=s) for s in steps}
      for loss in ("ce", "dlr") if apgd_steps else ():
        suite[f"APGD-{loss.upper()}"] = functools.partial(
            _apgd, eps=e, logits_fn=attack_fn, norm=norm, num_steps=apgd_steps, loss=loss)
      key = jax.random.PRNGKey(seed)
      r = attacks.robust_accuracy(logits_fn, x, y, key, suite, batch_size=batch_size,
                                  threat_model=(norm, eps), mesh=mesh)
      row = {"norm": norm, "eps": text, "clean": r["clean_accuracy"],
             **{k: float(v) for k, v in r["per_attack"].items()}}
      robust = r["robust"]
      if autoattack != "none":
        aa = attacks.autoattack(logits_fn, x, y, jax.random.fold_in(key, 1), norm=norm,
                                eps=eps, version=autoattack, batch_size=batch_size,
                                num_steps=aa_steps, num_queries=square_queries,
                                num_targets=aa_targets, mesh=mesh)
        row["AutoAttack"] = aa["robust_accuracy"]
        row["autoattack_label"] = aa["label"]  # what ran: 'AutoAttack' only at full budget
        row.update({AA_PREFIX + k: float(v) for k, v in aa["per_attack"].items()})
        robust = robust & aa["robust"]
      row["worst_case"] = float(np.mean(robust)) if robust.size else float("nan")
      results.append(row)
      if log is not None:
        log(f"l_p {norm} {text}: " + ", ".join(
            f"{row.get('autoattack_label', k) if k == 'AutoAttack' else k} {100 * v:.1f}"
            for k, v in row.items() if k not in ("norm", "eps", "autoattack_label")))
  return results


def masking_flags(results: Sequence[Mapping[str, Any]], *, tolerance: float = 0.01
                  ) -> list[str]:
  """Warnings of possible gradient masking from `lp_robustness` results (the cheap checks
  of Croce & Hein 2020 and Carlini et al. 2019, "On evaluating adversarial robustness"):

  - robust accuracy (worst case) not falling as eps grows (same norm, while above 0);
  - Square, black-box, fooling examples every white-box component before it missed;
  - PGD with many steps beating PGD with few by more than `tolerance` (1 point): the
    few-step attack had not converged, so gradients are hard to follow.
  Returns one sentence per finding (empty: none).
  """
  flags = []
  by_norm: dict[str, list] = {}
  for r in results:
    by_norm.setdefault(r["norm"], []).append(r)
  for norm, rows in by_norm.items():
    rows = sorted(rows, key=lambda r: parse_radius(r["eps"]))
    for a, b in zip(rows, rows[1:]):
      if a["worst_case"] > 0 and parse_radius(b["eps"]) > parse_radius(a["eps"]) and (
          b["worst_case"] >= a["worst_case"]):
        flags.append(f"{norm}: robust accuracy does not fall from eps {a['eps']} "
                     f"({100 * a['worst_case']:.1f}%) to {b['eps']} "
                     f"({100 * b['worst_case']:.1f}%)")
  for r in results:
    aa = [k for k in r if k.startswith(AA_PREFIX)]
    if aa and aa[-1] == AA_PREFIX + "square" and len(aa) > 1:
      gain = r[aa[-2]] - r[aa[-1]]
      if gain > 0:
        flags.append(f"{r['norm']} {r['eps']}: Square (black-box) fooled "
                     f"{100 * gain:.1f}% of the examples the white-box attacks missed")
    pgd = sorted((int(k[4:]), v) for k, v in r.items() if k.startswith("PGD-"))
    if len(pgd) > 1 and pgd[0][1] - pgd[-1][1] > tolerance:
      flags.append(f"{r['norm']} {r['eps']}: PGD-{pgd[-1][0]} is stronger than "
                   f"PGD-{pgd[0][0]} by {100 * (pgd[0][1] - pgd[-1][1]):.1f} points")
  return flags


def evaluate_lp(model, variables, source: data_lib.Source, *,
                radii: Mapping[str, Sequence[str | float]], pgd_steps: int = 20,
                apgd_steps: int = 50, autoattack: str = "standard", masking_steps: int = 100,
                aa_steps: int = 100, square_queries: int = 5000,
                aa_targets: int = NUM_TARGETS) -> dict[str, Any]:
  """`lp_robustness` of `model.apply(variables, x, train=False)` on every example of `source`.

  Returns:
    dict with 'num_examples', 'results' (the list of `lp_robustness`) and 'warnings'
    (`masking_flags`, each also logged as a warning).
  """
  images, labels = source.get(np.arange(source.num_examples))
  # The variables traced, not constants: one compilation per attack serves every model
  # of this architecture (with the persistent compilation cache, across processes too).
  # Every attacked batch sharded over this process's devices (one process: the report
  # refuses attacks with several), the variables replicated.
  mesh = parallel.make_mesh(jax.local_devices())
  variables = jax.device_put(variables, parallel.replicated_sharding(mesh))
  logits_fn = lp_attacks.traced_logits_fn(clean.eval_apply(model), variables)
  results = lp_robustness(logits_fn, jnp.asarray(images, jnp.float32) / 255.0,
                          jnp.asarray(labels), radii=radii, pgd_steps=pgd_steps,
                          apgd_steps=apgd_steps, autoattack=autoattack,
                          masking_steps=masking_steps, aa_steps=aa_steps,
                          square_queries=square_queries, aa_targets=aa_targets,
                          log=logging.info, mesh=mesh)
  warnings = masking_flags(results)
  for w in warnings:
    logging.warning("possible gradient masking: %s", w)
  return {"num_examples": int(source.num_examples), "results": results, "warnings": warnings}
