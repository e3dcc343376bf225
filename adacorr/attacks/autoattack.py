"""AutoAttack (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"; reference code fra31/auto-attack).

The ensemble runs its components in a fixed order, each only on the examples still
robust after the ones before it; an example counts as robust only if it is classified
correctly clean and no component fooled it. Versions (the reference's `version=`):

  standard   APGD-CE (100 steps, 1 restart), APGD-T (9 targets x 100 steps), FAB-T
             (9 targets x 100 steps), Square (5000 queries): the RobustBench protocol
  rand       APGD-CE and APGD-DLR with EOT over 20 draws, for randomised models
             (`logits_fn(x, keys)`, see `autoattack`)
  fast       APGD-CE and APGD-T (ours, not in the reference: a quick look; not the
             standard number)
  custom     the components named in `attacks` (any of COMPONENTS), in that order

Every returned point is checked against the threat model (l_p ball with 1e-5 relative
slack, values in [0, 1]); a violation raises, naming the component.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from adacorr.attacks.apgd import apgd, apgd_targeted_rank
from adacorr.attacks import lp
from adacorr.attacks.evaluation import robust_accuracy
from adacorr.attacks.fab import fab
from adacorr.attacks.square import square
from adacorr.core.checks import (
    check_callable_or_none, check_choice, check_images, check_key, check_labels,
    check_logits_fn, check_norm, check_radius_for_evaluation, check_steps)

VERSIONS = ("standard", "rand", "fast", "custom")
COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")
ORDER = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "rand": ("apgd-ce", "apgd-dlr"),
    "fast": ("apgd-ce", "apgd-t"),
}
NUM_TARGETS = 9  # APGD-T and FAB-T in the standard version
FULL_BUDGET = {"num_steps": 100, "num_queries": 5000, "num_targets": NUM_TARGETS}
_SHORT = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab-t": "FAB-T",
          "square": "Square"}


def label(version: str = "standard", *, attacks: Sequence[str] | None = None,
          num_steps: int = 100, num_queries: int = 5000, num_targets: int = NUM_TARGETS,
          eot_iter: int = 20) -> str:
  """What an AutoAttack run is, for a table column: 'AutoAttack' only for the standard
  version at the reference's full budget (`FULL_BUDGET`: 100 iterations, 9 targets,
  5000 queries); otherwise its components and budget, e.g. 'APGD-CE+APGD-T(1) 20 it'
  or 'AutoAttack rand (EOT 20)'.

  Args: as `autoattack` (for 'custom', `attacks` names the components, or a mapping
    whose own callables are named by their keys).
  """
  if version in ORDER and version != "custom":
    names = ORDER[version]
  else:
    names = tuple(attacks or ())
  budget = {"num_steps": num_steps, "num_queries": num_queries, "num_targets": num_targets}
  if version == "standard" and budget == FULL_BUDGET:
    return "AutoAttack"
  if version == "rand" and num_steps == FULL_BUDGET["num_steps"] and eot_iter == 20:
    return "AutoAttack rand (EOT 20)"
  parts = []
  for n in names:
    short = _SHORT.get(n, n)
    if n in ("apgd-t", "fab-t"):
      short += f"({num_targets})"
    elif n == "square":
      short += f"({num_queries} q)"
    parts.append(short)
  text = "+".join(parts)
  if any(n in ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t") for n in names):
    text += f" {num_steps} it"
  if version == "rand":
    text += f" EOT {eot_iter}"
  return text


@functools.partial(jax.jit, static_argnames=("norm", "num_steps", "loss", "eot_iter"))
def _apgd(x, y, keys, eps, logits_fn, *, norm, num_steps, loss, eot_iter):
  return apgd(logits_fn, x, y, keys, norm=norm, eps=eps, num_steps=num_steps, loss=loss,
              eot_iter=eot_iter)


@functools.partial(jax.jit, static_argnames=("norm", "num_steps"))
def _apgd_t(x, y, keys, eps, rank, logits_fn, *, norm, num_steps):
  return apgd_targeted_rank(logits_fn, x, y, keys, rank, norm=norm, eps=eps,
                            num_steps=num_steps)


@functools.partial(jax.jit, static_argnames=("norm", "num_steps", "num_targets"))
def _fab_t(x, y, keys, eps, logits_fn, *, norm, num_steps, num_targets):
  return fab(logits_fn, x, y, keys, norm=norm, eps=eps, num_steps=num_steps,
             num_targets=num_targets)


@functools.partial(jax.jit, static_argnames=("norm", "num_queries"))
def _square(x, y, keys, eps, logits_fn, *, norm, num_queries):
  return square(logits_fn, x, y, keys, norm=norm, eps=eps, num_queries=num_queries)


def component_attacks(logits_fn: lp.LogitsFn, *, norm: str, eps: float,
                      names: Sequence[str], num_steps: int = 100, num_queries: int = 5000,
                      num_targets: int = NUM_TARGETS, eot_iter: int = 1
                      ) -> dict[str, Callable]:
  """The named components as attacks `(x, y, keys) -> x_adv`, in order.

  APGD-T is split into one entry per target rank ('apgd-t@2', ..., 'apgd-t@10'), so
  that each target runs only on the examples the previous ones did not fool, as in the
  reference. With `eot_iter > 1` the APGD components average over that many draws of a
  randomised `logits_fn(x, keys)`. Each component is one jitted function with `eps` (and
  APGD-T's target rank) traced and `logits_fn` passed through `lp.as_pytree`: with the
  same `logits_fn` object, every radius and target reuses one compilation per batch
  shape; with a `lp.traced_logits_fn`, so does every model of the same architecture.
  """
  eps = jnp.float32(eps)
  logits_fn = lp.as_pytree(logits_fn)
  out = {}
  for name in names:
    check_choice(name, COMPONENTS, "attacks")
    if name in ("apgd-ce", "apgd-dlr"):
      out[name] = functools.partial(_apgd, eps=eps, logits_fn=logits_fn, norm=norm,
                                    num_steps=num_steps, loss=name[5:], eot_iter=eot_iter)
    elif name == "apgd-t":
      for rank in range(2, num_targets + 2):
        out[f"apgd-t@{rank}"] = functools.partial(
            _apgd_t, eps=eps, rank=jnp.int32(rank), logits_fn=logits_fn, norm=norm,
            num_steps=num_steps)
    elif name == "fab-t":
      out[name] = functools.partial(_fab_t, eps=eps, logits_fn=logits_fn, norm=norm,
                                    num_steps=num_steps, num_targets=num_targets)
    else:
      out[name] = functools.partial(_square, eps=eps, logits_fn=logits_fn, norm=norm,
                                    num_queries=num_queries)
  return out


def _check_randomised(logits_fn: Callable, x, key) -> None:
  """ValueError unless `logits_fn(x, keys)` traces (version 'rand': a randomised model
  drawing its randomness from per-example keys (B,)), naming what it needs."""
  keys = jax.eval_shape(lambda k: jax.random.split(k, jnp.shape(x)[0]), key)
  spec = jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
  try:
    jax.eval_shape(logits_fn, spec, keys)
  except Exception as e:  # pylint: disable=broad-except  (any error of the user's model)
    raise ValueError(
        f"version='rand' is for randomised models: it calls logits_fn(x, keys) with x of "
        f"shape {spec.shape} and per-example keys of shape {keys.shape} (one draw of the "
        f"model's randomness per example, averaged over eot_iter draws), and that call "
        f"failed: {type(e).__name__}: {e}. For a deterministic logits_fn(x) use "
        f"version='standard'.") from e


def autoattack(logits_fn: Callable, x: jax.Array, y: jax.Array, key, *, norm: str, eps: float,
               version: str = "standard", attacks: Sequence[str] | None = None,
               batch_size: int | None = None, num_steps: int = 100, num_queries: int = 5000,
               num_targets: int = NUM_TARGETS, eot_iter: int = 20,
               log: Callable[[str], None] | None = None, mesh=None) -> dict:
  """AutoAttack: robust accuracy under the ensemble, each component attacking only the
  examples still robust.

  Args:
    logits_fn: x (B, H, W, C) -> logits (B, K), the model in evaluation mode. For
      version='rand' a randomised model `logits_fn(x, keys) -> (B, K)` taking
      per-example keys (B,); its accuracy is judged with one draw per example (the
      reference too evaluates a randomised model with one forward pass).
    x: (N, H, W, C) images in [0, 1].
    y: (N,) int labels.
    key: one key; split per component, then per example.
    norm: 'linf' or 'l2'.
    eps: the radius (RobustBench: 8/255 l_inf, 0.5 l2 on CIFAR-10).
    version: 'standard', 'rand', 'fast' or 'custom' (then `attacks` names them).
    attacks: for 'custom', in order: component names (from COMPONENTS), or a mapping
      name -> attack `(x, y, keys) -> x_adv` (per-example keys; None: the component of
      that name), to run one's own attack in the same protocol.
    batch_size: examples attacked at once (default all).
    num_steps: APGD and FAB iterations (reference: 100).
    num_queries: Square's queries (reference: 5000).
    num_targets: APGD-T and FAB-T target classes (reference: 9; K >= num_targets + 1).
    eot_iter: EOT draws of the 'rand' version (reference: 20).
    log: called with one line per component (e.g. `print`, `logging.info`).
    mesh: shard every attacked batch over this mesh's devices (`parallel.make_mesh()`;
      see `robust_accuracy`); None: as the arrays come. The numbers do not depend on it.
  Returns:
    dict: 'x_adv' (N, H, W, C) numpy (per example the first point that fooled the model,
    else x), 'clean_accuracy', 'robust_accuracy' (floats in [0, 1]), 'per_attack'
    ({component: robust accuracy after it and all before it}, in order), 'robust' (N,)
    bool, 'num_attacked' ({component: examples it ran on}), 'num_examples', 'version',
    'norm', 'eps', 'label' (`label`: 'AutoAttack' only for 'standard' at full budget,
    else the components and budget).
  Raises:
    ValueError: for an unknown version or component, 'custom' without `attacks` (or
      `attacks` with another version, or a string), a `log` that is not callable,
      version 'rand' with a `logits_fn` that cannot be called as `logits_fn(x, keys)`, a
      `logits_fn` failing on x (named; the original error chained), labels outside
      [0, K), a key array instead of one key, bad inputs (an empty batch,
      `num_steps` / `num_queries` / `eot_iter` < 1, an `eps` that is 0, negative, NaN /
      inf or, for l_inf, > 1: a 0-255 value), a component returning a point outside the
      threat model or NaN / inf, or `logits_fn` returning NaN / inf logits (named in the
      message). An l2 `eps` >= sqrt(H * W * C) (every image in the ball) warns.
  """
  check_choice(version, VERSIONS, "version")
  check_norm(norm)
  check_images(x, allow_empty=False)
  check_key(key, single=True)
  check_callable_or_none(log, "log", "a function taking one line of text (e.g. print)")
  if not callable(logits_fn):
    raise ValueError(f"logits_fn must be a function x -> logits (B, K), got "
                     f"{type(logits_fn).__name__}.")
  # In Python, before anything is traced: finite, > 0, l_inf <= 1 (errors, not warnings).
  eps = check_radius_for_evaluation(eps, norm, "eps", image_shape=jnp.shape(x))
  check_steps(num_steps, "num_steps", minimum=1)
  check_steps(num_queries, "num_queries", minimum=1)
  check_steps(eot_iter, "eot_iter", minimum=1)
  if isinstance(attacks, (str, bytes)):
    raise ValueError(f"attacks={attacks!r} must be a list of component names (e.g. "
                     f"attacks=[{attacks!r}]) or a mapping name -> attack, not a string.")
  extra = {}
  if version == "custom":
    if not attacks:
      raise ValueError(f"attacks={attacks!r}: version='custom' needs attacks=[...] naming "
                       f"the components, from {COMPONENTS}.")
    if isinstance(attacks, Mapping):
      extra = {str(k): v for k, v in attacks.items() if v is not None}
      names = tuple(str(k) for k in attacks)
    else:
      names = tuple(attacks)
    if len(set(names)) != len(names):
      raise ValueError(f"attacks={attacks!r} names a component twice.")
  elif attacks is not None:
    raise ValueError(f"attacks={attacks!r} is only for version='custom'; version={version!r} "
                     f"runs {ORDER[version]}.")
  else:
    names = ORDER[version]
  model = logits_fn
  if version == "rand":
    eval_key = jax.random.fold_in(key, 7)
    _check_randomised(logits_fn, x, eval_key)
    model = lambda v: logits_fn(v, jax.random.split(eval_key, v.shape[0]))
  else:
    eot_iter = 1
  # Traced only: the model's own errors named with x's shape; labels < K.
  num_classes = check_logits_fn(model, x)
  check_labels(y, jnp.shape(x)[0], num_classes)
  if any(n in ("apgd-t", "fab-t") for n in names):
    if isinstance(num_targets, bool) or not isinstance(num_targets, int) or not (
        1 <= num_targets < num_classes):
      raise ValueError(f"num_targets={num_targets!r} must be an int in [1, "
                       f"{num_classes - 1}] (the model has {num_classes} classes).")
  comps = {}
  for name in names:  # in order: our own callables and the named components
    comps.update({name: extra[name]} if name in extra else component_attacks(
        logits_fn, norm=norm, eps=float(eps), names=(name,), num_steps=num_steps,
        num_queries=num_queries, num_targets=num_targets, eot_iter=eot_iter))
  r = robust_accuracy(model, x, y, key, comps, batch_size=batch_size,
                      threat_model=(norm, float(eps)), only_robust=True, mesh=mesh)
  per_attack, attacked = {}, {}
  for sub, acc in r["per_attack"].items():  # apgd-t@k -> apgd-t (after its last target)
    name = sub.split("@")[0]
    per_attack[name] = acc
    attacked[name] = attacked.get(name, 0) + r["num_attacked"][sub]
  if log is not None:
    log(f"AutoAttack {version} {norm} eps={eps:.6g}: clean {r['clean_accuracy']:.2%}")
    for name, acc in per_attack.items():
      log(f"  after {name:<8s} robust {acc:.2%} ({attacked[name]} examples attacked)")
  return {
      "x_adv": r["x_adv"], "clean_accuracy": r["clean_accuracy"],
      "robust_accuracy": r["robust_accuracy"], "per_attack": per_attack,
      "robust": r["robust"], "num_attacked": attacked, "num_examples": r["num_examples"],
      "version": version, "norm": norm, "eps": float(eps),
      "label": label(version, attacks=names, num_steps=num_steps, num_queries=num_queries,
                     num_targets=num_targets, eot_iter=eot_iter),
  }
