"""l_p robustness: accuracy under PGD, APGD-CE and APGD-DLR and their per-example worst case."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from adacorr import attacks
from adacorr import data as data_lib
from adacorr.core import checks
from adacorr.evaluation.radius import parse_radius


def lp_robustness(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, y: jax.Array, *,
                  radii: Mapping[str, Sequence[str | float]], pgd_steps: int = 20,
                  apgd_steps: int = 50, seed: int = 0,
                  batch_size: int = 250) -> list[dict[str, Any]]:
  """Accuracy under PGD, APGD-CE and APGD-DLR, and the per-example worst case, per radius.

  Args:
    logits_fn: x (B, H, W, C) -> logits (B, K).
    x: (N, H, W, C) images in [0, 1].
    y: (N,) int labels.
    radii: `{norm: [radius, ...]}`, norm 'linf' or 'l2', a radius a number or a string
      such as '8/255' (see `parse_radius`), in the order evaluated.
    pgd_steps: PGD steps (random start, step size 2.5 eps / steps).
    apgd_steps: APGD steps (CE and DLR losses).
    seed: the attacks' key.
    batch_size: examples attacked at once.

  Returns:
    One dict per radius: 'norm', 'eps' (as given), 'clean', f'PGD-{pgd_steps}',
    'APGD-CE', 'APGD-DLR' and 'worst_case' (fraction correct under every attack), all
    accuracies in [0, 1]. The attacks are success-aware (a misclassified iterate is
    kept over a higher-loss correct one) and every returned point is checked against
    the threat model (a violation raises, naming the attack).
  """
  checks.check_steps(pgd_steps, "pgd_steps", minimum=1)
  checks.check_steps(apgd_steps, "apgd_steps", minimum=1)
  for norm in radii:
    checks.check_norm(norm, "radii key")
  results = []
  for norm, eps_list in radii.items():
    for text in eps_list:
      eps = parse_radius(text)
      suite = {
          f"PGD-{pgd_steps}": lambda a, b, k, n=norm, e=eps: attacks.pgd(
              logits_fn, a, b, k, norm=n, eps=e, step_size=2.5 * e / pgd_steps,
              num_steps=pgd_steps),
          "APGD-CE": lambda a, b, k, n=norm, e=eps: attacks.apgd(
              logits_fn, a, b, k, norm=n, eps=e, num_steps=apgd_steps, loss="ce"),
          "APGD-DLR": lambda a, b, k, n=norm, e=eps: attacks.apgd(
              logits_fn, a, b, k, norm=n, eps=e, num_steps=apgd_steps, loss="dlr"),
      }
      r = attacks.robust_accuracy(logits_fn, x, y, jax.random.PRNGKey(seed), suite,
                                  batch_size=batch_size, threat_model=(norm, eps))
      results.append({"norm": norm, "eps": text, "clean": r["clean_accuracy"],
                      **{k: float(v) for k, v in r["per_attack"].items()},
                      "worst_case": r["robust_accuracy"]})
  return results


def evaluate_lp(model, variables, source: data_lib.Source, *,
                radii: Mapping[str, Sequence[str | float]], pgd_steps: int = 20,
                apgd_steps: int = 50) -> dict[str, Any]:
  """`lp_robustness` of `model.apply(variables, x, train=False)` on every example of `source`.

  Returns:
    dict with 'num_examples' and 'results' (the list of `lp_robustness`).
  """
  images, labels = source.get(np.arange(source.num_examples))
  logits_fn = jax.jit(lambda x: model.apply(variables, x, train=False))
  results = lp_robustness(logits_fn, jnp.asarray(images, jnp.float32) / 255.0,
                          jnp.asarray(labels), radii=radii, pgd_steps=pgd_steps,
                          apgd_steps=apgd_steps)
  return {"num_examples": int(source.num_examples), "results": results}
