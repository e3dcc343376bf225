"""Robust accuracy under a set of attacks (per-example worst case), optionally attacking
only the examples still robust (AutoAttack's protocol) and checking every returned point
against the threat model."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.attacks import lp
from adacorr.core.checks import check_images, check_key, check_labels, check_norm

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


def check_threat_model(x_adv: jax.Array, x: jax.Array, *, norm: str, eps: float,
                       name: str = "attack", rtol: float = 1e-5) -> None:
  """Raises ValueError, naming `name`, unless every point of `x_adv` lies in [0, 1] and
  within `||x_adv - x||_norm <= eps * (1 + rtol)` (+ 1e-7 absolute, for eps = 0)."""
  check_norm(norm)
  delta = (jnp.asarray(x_adv, jnp.float32) - jnp.asarray(x, jnp.float32)).reshape(
      x.shape[0], -1)
  norms = (jnp.max(jnp.abs(delta), axis=1) if norm == "linf"
           else jnp.sqrt(jnp.sum(jnp.square(delta), axis=1)))
  worst = float(jnp.max(norms)) if x.shape[0] else 0.0
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


def robust_accuracy(logits_fn: lp.LogitsFn, x: jax.Array, y: jax.Array, key,
                    attacks: Union[Sequence[Attack], Mapping[str, Attack]], *,
                    batch_size: int | None = None, threat_model: tuple[str, float] | None = None,
                    only_robust: bool = False) -> dict:
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
  Returns:
    dict with 'clean_accuracy' (float), 'robust_accuracy' (float; fraction of examples
    correct clean and under every attack), 'per_attack' ({name: fraction correct clean
    and under that attack; cumulative with `only_robust`}), 'robust' (N,) bool numpy
    mask, 'num_examples' (int), 'x_adv' (N, H, W, C) numpy: per example the first
    returned point that fooled the model (x where none did), 'num_attacked' ({name:
    examples the attack was run on, padding excluded}).

  Raises:
    ValueError: for bad inputs, an attack returning the wrong shape, or (with
      `threat_model`) a point outside the threat model.
  """
  check_images(x)
  check_labels(y, jnp.shape(x)[0])
  check_key(key)
  names, fns = _names(attacks)
  n = x.shape[0]
  attack_keys = jax.random.split(key, max(len(fns), 1))
  ex_keys = [jax.random.split(k, n) for k in attack_keys]
  bs = n if batch_size is None else int(batch_size)
  if bs < 1:
    raise ValueError(f"batch_size={batch_size!r} must be >= 1.")
  correct_clean = np.zeros((n,), bool)
  correct_adv = np.zeros((len(fns), n), bool)
  x_adv = np.array(x, np.float32, copy=True)
  fooled = np.zeros((n,), bool)
  calls = [0] * len(fns)
  for start in range(0, n, bs):
    sl = slice(start, min(start + bs, n))
    xb, yb = x[sl], y[sl]
    correct_clean[sl] = np.asarray(jnp.argmax(logits_fn(xb), -1) == yb)
    still = correct_clean[sl].copy()
    for j, fn in enumerate(fns):
      if only_robust:
        idx = np.flatnonzero(still)
        if idx.size == 0:
          continue
        size = min(xb.shape[0], max(MIN_PADDED, 1 << int(np.ceil(np.log2(idx.size)))))
        xs, ys = _pad_rows(xb[idx], size), _pad_rows(yb[idx], size)
        ks = _pad_rows(ex_keys[j][sl][idx], size)
      else:
        idx, xs, ys, ks = np.arange(xb.shape[0]), xb, yb, ex_keys[j][sl]
      xa = fn(xs, ys, ks)
      if jnp.shape(xa) != jnp.shape(xs):
        raise ValueError(f"attack {names[j]!r} returned shape {jnp.shape(xa)}, "
                         f"expected {jnp.shape(xs)}.")
      xa, xs, ys = xa[:idx.size], xs[:idx.size], ys[:idx.size]
      if threat_model is not None:
        check_threat_model(xa, xs, norm=threat_model[0], eps=float(threat_model[1]),
                           name=names[j])
      ok = np.zeros((xb.shape[0],), bool)
      ok[idx] = np.asarray(jnp.argmax(logits_fn(xa), -1) == ys)
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
