"""Figure 2 of the AdA paper as numbers: SSIM(clean, AdA image) per image, for a backbone
and a relative radius nu (the images BEFORE the SSIM line search, as in the figure).

`ssim_samples` returns the per-image SSIMs, `summarize` their statistics; the figure is
`evaluation.plots.save_ssim_densities`. The CLI is `python -m experiments.ada_ssim_histogram`.
"""

from __future__ import annotations

import jax
import numpy as np

from adacorr import attacks


def ssim_samples(backbone, logits_fn, x, y, key, *, nu, num_steps, batch_size,
                 blocks="layer") -> np.ndarray:
  """SSIM(x, AdA(x)) per image (N,) (no line search); nu = 0: the unperturbed backbone.

  Args:
    backbone: a `methods.Backbone` (its `apply(params, images)` and `params`).
    logits_fn: the classifier AdA attacks (images -> logits).
    x: (N, H, W, C) images in [0, 1]; y: (N,) labels.
    key: batch i is attacked with `fold_in(key, i)`.
    nu, num_steps, blocks: AdA's (`attacks.ada`, nano-batches chunk_size='auto');
      batch_size: images per call.
  """
  out = []
  if nu == 0:
    run = jax.jit(lambda xb: attacks.ssim(xb, backbone.apply(backbone.params, xb)))
    for i in range(0, len(x), batch_size):
      out.append(np.asarray(run(x[i:i + batch_size])))
    return np.concatenate(out)
  run = jax.jit(lambda xb, yb, k: attacks.ssim(xb, attacks.ada(
      backbone.apply, backbone.params, logits_fn, xb, yb, k, nu=nu, num_steps=num_steps,
      blocks=blocks, chunk_size="auto")))
  for n, i in enumerate(range(0, len(x), batch_size)):
    out.append(np.asarray(run(x[i:i + batch_size], y[i:i + batch_size],
                              jax.random.fold_in(key, n))))
  return np.concatenate(out)


def summarize(values: np.ndarray) -> dict:
  """Mean, std, min, count and the 5/25/50/75/95% quantiles of `values` (plain floats)."""
  q = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
  return {"mean": float(values.mean()), "std": float(values.std()), "q05": float(q[0]),
          "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]), "q95": float(q[4]),
          "min": float(values.min()), "count": int(values.size)}
