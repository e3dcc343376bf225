"""Robust accuracy under a set of attacks (per-example worst case)."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.attacks import lp
from adacorr.core.checks import check_images, check_key, check_labels

Attack = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


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


def robust_accuracy(logits_fn: lp.LogitsFn, x: jax.Array, y: jax.Array, key,
                    attacks: Union[Sequence[Attack], Mapping[str, Attack]], *,
                    batch_size: int | None = None) -> dict:
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
  Returns:
    dict with 'clean_accuracy' (float), 'robust_accuracy' (float; fraction of examples
    correct clean and under every attack), 'per_attack' ({name: fraction correct clean
    and under that attack}), 'robust' (N,) bool numpy mask, 'num_examples' (int).
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
  for start in range(0, n, bs):
    sl = slice(start, min(start + bs, n))
    xb, yb = x[sl], y[sl]
    correct_clean[sl] = np.asarray(jnp.argmax(logits_fn(xb), -1) == yb)
    for j, fn in enumerate(fns):
      xa = fn(xb, yb, ex_keys[j][sl])
      if jnp.shape(xa) != jnp.shape(xb):
        raise ValueError(f"attack {names[j]!r} returned shape {jnp.shape(xa)}, "
                         f"expected {jnp.shape(xb)}.")
      correct_adv[j, sl] = np.asarray(jnp.argmax(logits_fn(xa), -1) == yb)
  robust = correct_clean & np.all(correct_adv, axis=0)
  return {
      "clean_accuracy": float(correct_clean.mean()) if n else float("nan"),
      "robust_accuracy": float(robust.mean()) if n else float("nan"),
      "per_attack": {nm: float((correct_clean & correct_adv[j]).mean()) if n else float("nan")
                     for j, nm in enumerate(names)},
      "robust": robust,
      "num_examples": int(n),
  }
