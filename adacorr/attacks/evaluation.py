"""Robust accuracy under a set of attacks (per-example worst case), optionally attacking
only the examples still robust (AutoAttack's protocol) and checking every returned point
against the threat model."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from adacorr import parallel
from adacorr.attacks import lp
from adacorr.core.checks import (
    check_images, check_key, check_labels, check_logits_fn, check_nonnegative, check_norm,
    check_radius_for_evaluation, check_same_shape, check_steps, nonfinite_summary)
from adacorr.core.radius import as_radius

Attack = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
MIN_PADDED = 32  # the smallest padded subset: fewer compilations for a few more rows


def _names(attacks) -> tuple[list[str], list[Attack]]:
  if isinstance(attacks, Mapping):
    return [str(k) for k in attacks], list(attacks.values())
  names, seen = [], {}
  for i, fn in enumerate(attacks):
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__",
                                                    None) or f"attack{i}"
    if name == "<lambda>":
      name = f"attack{i}"
    if name in seen:
      seen[name] += 1
      name = f"{name}_{seen[name]}"
    else:
      seen[name] = 0
    names.append(name)
  return names, list(attacks)


def _check_attacks(attacks) -> None:
  """ValueError unless `attacks` is a non-empty sequence or mapping of callables."""
  if callable(attacks) and not isinstance(attacks, Mapping):
    raise ValueError("attacks must be a list of attacks (x, y, keys) -> x_adv or a mapping "
                     "name -> attack, got a single callable; wrap it: attacks=[attack].")
  if isinstance(attacks, (str, bytes)) or not isinstance(attacks, (Sequence, Mapping)):
    raise ValueError(f"attacks must be a list of attacks (x, y, keys) -> x_adv or a mapping "
                     f"name -> attack, got {type(attacks).__name__} {attacks!r}.")
  if not attacks:
    raise ValueError(f"attacks={attacks!r} is empty: robust accuracy under no attack is "
                     "only the clean accuracy; pass at least one attack.")
  items = attacks.items() if isinstance(attacks, Mapping) else enumerate(attacks)
  for k, fn in items:
    if not callable(fn):
      raise ValueError(f"attacks[{k!r}]={fn!r} is not an attack (x, y, keys) -> x_adv.")


def _check_threat_model_arg(threat_model, x) -> tuple[str, float]:
  """`threat_model` as `(norm, eps)` with eps a float; ValueError unless it is a pair
  with a supported norm and a radius fit for evaluation (finite, > 0, l_inf <= 1; see
  `check_radius_for_evaluation`)."""
  if isinstance(threat_model, (str, bytes)) or not isinstance(threat_model, Sequence) or len(
      threat_model) != 2:
    raise ValueError(f"threat_model={threat_model!r} must be a pair (norm, eps), e.g. "
                     f"('linf', 8 / 255).")
  norm, eps = threat_model
  check_norm(norm, "threat_model norm")
  return norm, check_radius_for_evaluation(eps, norm, "threat_model eps",
                                           image_shape=jnp.shape(x))


def _check_finite_logits(logits, n: int, what: str) -> None:
  """ValueError when the first `n` rows of `logits` hold a NaN or inf (the argmax of NaN
  logits is class 0: a silent, wrong prediction)."""
  if bool(jnp.all(jnp.isfinite(logits[:n]))):
    return
  raise ValueError(f"logits_fn returned NaN/inf logits on {what} "
                   f"({nonfinite_summary(logits[:n])}); their predictions would be "
                   f"meaningless (argmax of NaN is class 0).")


def check_threat_model(x_adv: jax.Array, x: jax.Array, *, norm: str, eps: float,
                       name: str = "attack", rtol: float = 1e-5) -> None:
  """Raises ValueError, naming `name`, unless every point of `x_adv` is finite, lies in
  [0, 1] and within `||x_adv - x||_norm <= eps * (1 + rtol)` (+ 1e-7 absolute, for
  eps = 0).

  Args:
    x_adv: (N, H, W, C) the attack's points.
    x: (N, H, W, C) the clean images (finite; ValueError for NaN / inf).
    norm: 'linf' or 'l2'.
    eps: the radius, a finite number >= 0 (NaN would compare false and pass every point).
    name: the attack, named in the messages.
    rtol: relative slack on the radius.
  """
  check_norm(norm)
  eps = as_radius(eps)
  check_nonnegative(eps, "eps", finite=True)
  check_same_shape(x, x_adv, ("x", f"the points of attack {name!r}"))
  bad = nonfinite_summary(x)
  if bad is not None:
    raise ValueError(f"x, the clean images the points of attack {name!r} are checked "
                     f"against, contains NaN or inf values ({bad}).")
  bad = nonfinite_summary(x_adv)
  if bad is not None:
    raise ValueError(f"attack {name!r} returned NaN or inf values ({bad}): its points "
                     f"are not images, and the model's prediction on them means nothing.")
  if not x.shape[0]:
    return
  delta = (jnp.asarray(x_adv, jnp.float32) - jnp.asarray(x, jnp.float32)).reshape(
      x.shape[0], -1)
  norms = (jnp.max(jnp.abs(delta), axis=1) if norm == "linf"
           else jnp.sqrt(jnp.sum(jnp.square(delta), axis=1)))
  worst = float(jnp.max(norms))
  if worst > eps * (1 + rtol) + 1e-7:
    raise ValueError(f"attack {name!r} returned a point outside the threat model: "
                     f"||x_adv - x||_{norm[1:]} = {worst:.6g} > eps = {eps:.6g}.")
  lo, hi = float(jnp.min(x_adv)), float(jnp.max(x_adv))
  if lo < 0.0 or hi > 1.0:
    raise ValueError(f"attack {name!r} returned values in [{lo:.6g}, {hi:.6g}], outside "
                     "[0, 1].")


def _pad_rows(a: jax.Array, size: int) -> jax.Array:
  """`a` padded to `size` rows with copies of its first row (one compiled shape per
  power of two instead of one per subset size)."""
  if a.shape[0] == size:
    return a
  return jnp.concatenate([a, jnp.repeat(a[:1], size - a.shape[0], axis=0)], axis=0)


def _multiple(size: int, mesh) -> int:
  """`size` rounded up to a multiple of the mesh's device count (1 without a mesh)."""
  d = 1 if mesh is None else mesh.devices.size
  return -(-size // d) * d


def _on_mesh(tree, mesh):
  """Places the rows of `tree` (leading axis a multiple of the device count) sharded over
  the mesh's data axis; unchanged without a mesh."""
  if mesh is None:
    return tree
  return jax.device_put(tree, parallel.batch_sharding(mesh))


def _predictions(logits_fn, x, mesh, what: str = "the images") -> np.ndarray:
  """argmax of `logits_fn` on x (n, ...), computed sharded over the mesh (rows padded
  to a multiple of the device count, the padding dropped): (n,) numpy int. ValueError,
  naming `what` (e.g. 'the clean images'), for NaN / inf logits."""
  n = x.shape[0]
  xp = _on_mesh(_pad_rows(jnp.asarray(x), _multiple(n, mesh)), mesh)
  logits = logits_fn(xp)
  _check_finite_logits(logits, n, what)
  return np.asarray(jnp.argmax(logits, -1))[:n]


def robust_accuracy(logits_fn: lp.LogitsFn, x: jax.Array, y: jax.Array, key,
                    attacks: Union[Sequence[Attack], Mapping[str, Attack]], *,
                    batch_size: int | None = None, threat_model: tuple[str, float] | None = None,
                    only_robust: bool = False, mesh=None) -> dict:
  """Clean and robust accuracy; an example is robust only if EVERY attack fails on it.

  Attack j is called as `attacks[j](x_batch, y_batch, keys_batch)` with per-example keys
  (typed (b,) or raw (b, 2), derived from `key`), so results do not depend on
  `batch_size` for attacks that honour per-example keys (`pgd`, `apgd`).
  Wrap e.g. `lambda x, y, k: pgd(logits_fn, x, y, k, norm='linf', eps=8/255, ...)`.

  Args:
    logits_fn: x (B, H, W, C) -> logits (B, K).
    x: (N, H, W, C) images in [0, 1].
    y: (N,) int labels.
    key: one key; split into one key per attack, then one per example.
    attacks: callables `(x, y, key) -> x_adv`, or a mapping name -> callable.
    batch_size: evaluate in chunks of this many examples (default: all at once).
    threat_model: `(norm, eps)`: check every returned point (`check_threat_model`) and
      raise, naming the attack, if one lies outside the ball or [0, 1]; None: no check.
    only_robust: attack only the examples still robust after the previous attacks (the
      AutoAttack protocol; the worst case is the same for attacks with per-example keys,
      at less cost); 'per_attack' is then cumulative (robust accuracy after that attack
      and all before it). The attacked subsets are padded to a power of two (at least
      `MIN_PADDED`, at most the batch): a few compiled shapes per attack.
    mesh: a `jax.sharding.Mesh` with axis 'data' (`parallel.make_mesh()`): every batch
      the model and the attacks see is sharded over its devices (rows padded to a
      multiple of the device count, the padding dropped). With per-example attacks the
      numbers equal the one-device ones. One process: the arrays are this host's.
  Returns:
    dict with 'clean_accuracy' (float), 'robust_accuracy' (float; fraction of examples
    correct clean and under every attack), 'per_attack' ({name: fraction correct clean
    and under that attack; cumulative with `only_robust`}), 'robust' (N,) bool numpy
    mask, 'num_examples' (int), 'x_adv' (N, H, W, C) numpy: per example the first
    returned point that fooled the model (x where none did), 'num_attacked' ({name:
    examples the attack was run on, padding excluded}).

  Raises:
    ValueError: for bad inputs (an empty batch, labels outside [0, K), a key array
      instead of one key, no attacks, a `batch_size` that is not an int >= 1, a
      `logits_fn` failing on x (named, the original error chained), a `threat_model`
      radius that is 0, negative, NaN / inf or, for l_inf, > 1; text such as '8/255' is
      parsed), an attack returning the wrong
      shape or NaN / inf values, `logits_fn` returning NaN / inf logits (on the clean
      images or an attack's points), or (with `threat_model`) a point outside the
      threat model.
  """
  check_images(x, allow_empty=False)
  check_labels(y, jnp.shape(x)[0])
  check_key(key, single=True)
  _check_attacks(attacks)
  if threat_model is not None:  # checked in Python, before anything is traced
    threat_model = _check_threat_model_arg(threat_model, x)
  if batch_size is not None:
    check_steps(batch_size, "batch_size", minimum=1)
  # Traced only (`jax.eval_shape`): the model's own errors named, and labels < K (a label
  # >= K would silently count as misclassified).
  check_labels(y, jnp.shape(x)[0], check_logits_fn(logits_fn, x))
  names, fns = _names(attacks)
  n = x.shape[0]
  attack_keys = jax.random.split(key, max(len(fns), 1))
  ex_keys = [jax.random.split(k, n) for k in attack_keys]
  bs = n if batch_size is None else int(batch_size)
  correct_clean = np.zeros((n,), bool)
  correct_adv = np.zeros((len(fns), n), bool)
  x_adv = np.array(x, np.float32, copy=True)
  fooled = np.zeros((n,), bool)
  calls = [0] * len(fns)
  for start in range(0, n, bs):
    sl = slice(start, min(start + bs, n))
    xb, yb = x[sl], y[sl]
    correct_clean[sl] = _predictions(
        logits_fn, xb, mesh, f"the clean images x[{start}:{sl.stop}]") == np.asarray(yb)
    still = correct_clean[sl].copy()
    for j, fn in enumerate(fns):
      if only_robust:
        idx = np.flatnonzero(still)
        if idx.size == 0:
          continue
        size = min(xb.shape[0], max(MIN_PADDED, 1 << int(np.ceil(np.log2(idx.size)))))
        xs, ys, ks = xb[idx], yb[idx], ex_keys[j][sl][idx]
      else:
        idx, xs, ys, ks = np.arange(xb.shape[0]), xb, yb, ex_keys[j][sl]
        size = xb.shape[0]
      size = _multiple(size, mesh)
      xs, ys, ks = _on_mesh(tuple(_pad_rows(a, size) for a in (xs, ys, ks)), mesh)
      xa = fn(xs, ys, ks)
      if jnp.shape(xa) != jnp.shape(xs):
        raise ValueError(f"attack {names[j]!r} returned shape {jnp.shape(xa)}, "
                         f"expected {jnp.shape(xs)}.")
      bad = nonfinite_summary(xa[:idx.size])  # before the model sees them
      if bad is not None:
        raise ValueError(f"attack {names[j]!r} returned NaN or inf values ({bad}).")
      pred = _predictions(logits_fn, xa, mesh,
                          f"the points of attack {names[j]!r}")[:idx.size]
      xa, xs, ys = xa[:idx.size], xs[:idx.size], ys[:idx.size]
      if threat_model is not None:
        check_threat_model(xa, xs, norm=threat_model[0], eps=float(threat_model[1]),
                           name=names[j])
      ok = np.zeros((xb.shape[0],), bool)
      ok[idx] = pred == np.asarray(ys)
      fooled_now = np.flatnonzero(~ok[idx] & correct_clean[sl][idx] & ~fooled[sl][idx])
      if fooled_now.size:  # keep the first point that fooled the model
        rows = start + idx[fooled_now]
        x_adv[rows] = np.asarray(xa)[fooled_now]
        fooled[rows] = True
      calls[j] += int(idx.size)
      if only_robust:  # examples not attacked were already fooled (or wrong clean)
        still &= ok
        correct_adv[j, sl] = still
      else:
        correct_adv[j, sl] = ok
  robust = correct_clean & np.all(correct_adv, axis=0)
  return {
      "clean_accuracy": float(correct_clean.mean()) if n else float("nan"),
      "robust_accuracy": float(robust.mean()) if n else float("nan"),
      "per_attack": {nm: float((correct_clean & correct_adv[j]).mean()) if n else float("nan")
                     for j, nm in enumerate(names)},
      "robust": robust,
      "num_examples": int(n),
      "x_adv": x_adv,
      "num_attacked": dict(zip(names, calls)),
  }
