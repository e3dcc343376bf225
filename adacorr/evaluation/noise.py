"""Noise robustness (Rusak et al. 2020): eps*_GN, the median l2 norm of label-flipping noise."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adacorr import data as data_lib
from adacorr.core import checks
from adacorr.metrics import noise_robustness as noise_metrics


def evaluate_noise(model, variables, source: data_lib.Source, *, batch_size: int = 500,
                   seed: int = 0) -> dict[str, Any]:
  """eps*_GN (Rusak et al. 2020, Eq. 4) of `model` on every example of `source`.

  The median over `source` of the smallest l2 norm of (clipping-aware rescaled) Gaussian
  noise that changes the prediction, searched up to the largest possible norm
  sqrt(H * W * C); batches of `batch_size`, batch `i` keyed by `fold_in(PRNGKey(seed), i *
  batch_size)`.

  Returns:
    dict with 'num_examples', 'max_norm', 'eps_star' (inf counts as +inf, misclassified
    clean examples as 0), 'fraction_unflipped' (no noise up to max_norm flips the
    label) and 'fraction_misclassified_clean'.
  """
  checks.check_steps(batch_size, "batch_size", minimum=1)
  images, labels = source.get(np.arange(source.num_examples))
  max_norm = float(np.sqrt(np.prod(images.shape[1:])))
  logits_fn = lambda x: model.apply(variables, x, train=False)
  search = jax.jit(lambda x, y, k: noise_metrics.minimal_noise_norm(
      logits_fn, x, y, k, max_norm=max_norm))
  norms = []
  for start in range(0, len(labels), batch_size):
    x = jnp.asarray(images[start:start + batch_size], jnp.float32) / 255.0
    y = jnp.asarray(labels[start:start + batch_size])
    norms.append(np.asarray(search(x, y, jax.random.fold_in(jax.random.PRNGKey(seed), start))))
  norms = np.concatenate(norms)
  return {"num_examples": int(len(norms)), "max_norm": max_norm,
          "eps_star": noise_metrics.eps_star(norms),
          "fraction_unflipped": float(np.mean(np.isinf(norms))),
          "fraction_misclassified_clean": float(np.mean(norms == 0))}
