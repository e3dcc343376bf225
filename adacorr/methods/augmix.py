"""AugMix (Hendrycks et al. 2020), with and without the JSD consistency loss, and
RobustAugMix (Martinez et al. 2022), as `LossFn` factories.

* AugMix without JSD: cross-entropy on `augmix(x)` (the reference's `--no-jsd`).
* AugMix + JSD: the clean view and two independent AugMix views go through the
  classifier as ONE batch of 3B (train-mode BatchNorm sees all three, as in the
  reference's `torch.cat`); loss = CE(clean logits) + lambda * JSD(p_clean, p_aug1,
  p_aug2), lambda = 12.
* RobustAugMix: the third view is an l2 PGD adversarial example instead of a second
  AugMix view (eps 1.0, 7 steps of 2.5 * eps / 7, random start; the attack is
  `adversarial_training.input_attack`, see `robust_augmix_attack`). The paper does not say
  how BatchNorm behaves during the attack or where PGD starts; we follow the first author's
  public code (github.com/martinez-hub/robustaugmix, `training/trainer.py` and
  `attacks/pgd.py`): the three views go through the model as three train-mode passes
  (each normalised with its own batch statistics; `bn_views='pooled'`, one pass over the
  concatenated views, is our earlier behaviour), the attack runs with the model in EVAL mode (BatchNorm on its running
  statistics, `model.eval()` around `pgd_l2_attack`) and starts on the eps-sphere (theirs
  projects a Gaussian direction onto the l2 eps-ball, whose norm, ~sqrt(3072) on CIFAR, is
  far above eps; ours scales it to norm eps exactly). `attack_bn_mode='train',
  random_start='ball'` is our earlier attack (train-mode BatchNorm whose updates are
  discarded, radius U(0, eps), like our l_p AT).

  The author's PGD steps on the image: `x_adv + step * g / ||g||`, projection of
  `x_adv - x` onto the eps-ball, THEN the clip to [0, 1], from `clip(x + delta_0)`
  (`attack_order='project_clip'`, the default); `'clip_project'` is l_p AT's reference
  order (clip, then project; an unclipped start), our earlier attack.

Checked against the reference code for choices the papers do not state.
  AugMix (google-research/augmix `cifar.py`, `augmentations.py`): the clean view and two
  AugMix views in ONE `torch.cat` train-mode pass (`views_apply(bn_views='pooled')`);
  loss CE(clean) + 12 * mean_i KL(p_i || M), M clamped to [1e-7, 1]; views made from the
  flipped + cropped image; per-example Dirichlet / Beta draws; depth U{1, 2, 3} per chain.
  Same; nothing changed here. (The op-level details, e.g. PIL's uint8 rounding between
  ops and integer rotate / translate / posterize / solarize levels, are
  `adacorr.augment.augmix`'s.) Optimisation of `cifar.py` (reported; our AugMix configs
  use Kireev et al.'s PreActResNet-18 settings instead): WRN-40-2 (dropout 0), SGD
  Nesterov, momentum 0.9, weight decay 5e-4 on every parameter, lr cosine per iteration
  from 0.1 to 1e-6, batch 128, 100 epochs, inputs normalised with mean = std = 0.5.
  RobustAugMix (martinez-hub/robustaugmix `training/trainer.py`, `attacks/pgd.py`,
  `training/losses.py`, `experiments/train.py`, `experiments/configs/*.yaml`):
  - BatchNorm during the attack: eval mode (`model.eval()` around `pgd_l2_attack`). Same
    (changed earlier; 'train' is an option).
  - Views: three train-mode passes, clean, AugMix, adversarial, in that order. Same
    (`bn_views='separate'`, changed earlier; 'pooled' is an option).
  - PGD start: a Gaussian direction projected onto the l2 ball (norm >> eps, so on the
    sphere), then clipped. Same (`random_start='sphere'`).
  - PGD step order: project, then clip; gradient w.r.t. the image. Ours before: clip,
    then project, unclipped start. CHANGED: the author's is the default
    (`attack_order='project_clip'`), ours `'clip_project'`.
  - Loss: CE(clean) + 12 * JSD with the AugMix reference's clamp, cross-entropy mean.
    Same.
  - AugMix ops: the author's configs set `all_ops: true` (+ color, contrast, brightness,
    sharpness); the paper says "the same augmentation scheme as presented in [AugMix]"
    (the CIFAR scheme without those four), so `all_ops=False` (the paper) stays the
    default and `all_ops=True` is the code's. The repository's `robustaugmix/data/`
    (where its AugMix view is made) is excluded by its `.gitignore`, so the view's
    pipeline could not be checked.
  - Optimisation (reported; `cifar10_robust_augmix.py` matches except the schedule):
    SGD Nesterov, momentum 0.9, weight decay 5e-4 on every parameter, lr 0.1, cosine
    stepped once per EPOCH (`CosineAnnealingLR(T_max=epochs)`, eta_min 0; ours per
    step), batch 128, 100 epochs, WRN-50-2, inputs normalised with CIFAR-10's mean/std.

`augmix_kwargs(...)`/`check_augmix_kwargs` hold the AugMix hyperparameters that other
methods accept as their `augmix` keyword (AdA + AugMix, AugMix + RLAT): a dict of
`severity`, `width`, `depth`, `alpha`, `all_ops` and `jsd` (whether to use the
consistency loss), or None for no AugMix. `consistency_loss` is the shared objective.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adacorr.core.radius import as_radius
from adacorr.augment.augmix import augmix, jsd_consistency
from adacorr.methods.common import (
    accuracy, check_attack_args, check_nonnegative, cross_entropy, train_apply)
from adacorr.methods.adversarial_training import ORDERS, RANDOM_STARTS, input_attack

AUGMIX_DEFAULTS = dict(severity=3, width=3, depth=-1, alpha=1.0, all_ops=False)
JSD_WEIGHT = 12.0
# RobustAugMix's attack: BatchNorm on running statistics ('eval', the author's code) or on
# the attacked batch ('train', updates discarded).
ATTACK_BN_MODES = ("eval", "train")
# The order of the clip to [0, 1] and the eps-ball projection in the attack's steps
# (`adversarial_training.ORDERS`): the author's 'project_clip' or l_p AT's 'clip_project'.
ATTACK_ORDERS = ORDERS
# How the views' train-mode passes meet BatchNorm: one pass over all views ('pooled') or one
# pass per view ('separate'); see `views_apply`.
BN_VIEWS = ("separate", "pooled")


def check_augmix_kwargs(kwargs: Mapping[str, Any] | None, *, jsd_default: bool = False
                        ) -> dict[str, Any] | None:
  """`kwargs` completed with the AugMix defaults and validated; None stays None.

  Raises:
    ValueError: for an unknown key or a bad value (named).
  """
  if kwargs is None:
    return None
  kwargs = dict(kwargs.to_dict() if hasattr(kwargs, "to_dict") else kwargs)
  known = set(AUGMIX_DEFAULTS) | {"jsd", "jsd_weight"}
  unknown = sorted(set(kwargs) - known)
  if unknown:
    raise ValueError(f"augmix has unknown keys {unknown}; known: {sorted(known)}.")
  out = dict(AUGMIX_DEFAULTS, jsd=jsd_default, jsd_weight=JSD_WEIGHT)
  out.update(kwargs)
  out["severity"] = float(out["severity"])
  out["width"], out["depth"] = int(out["width"]), int(out["depth"])
  out["alpha"], out["all_ops"] = float(out["alpha"]), bool(out["all_ops"])
  out["jsd"], out["jsd_weight"] = bool(out["jsd"]), float(out["jsd_weight"])
  if not 0.0 < out["severity"] <= 10.0:
    raise ValueError(f"augmix severity must be in (0, 10], got severity={out['severity']}.")
  if out["width"] < 1:
    raise ValueError(f"augmix width must be >= 1, got width={out['width']}.")
  if out["depth"] != -1 and out["depth"] < 1:
    raise ValueError(f"augmix depth must be -1 (random 1-3) or >= 1, got depth={out['depth']}.")
  if not out["alpha"] > 0:
    raise ValueError(f"augmix alpha must be > 0, got alpha={out['alpha']}.")
  check_nonnegative(out["jsd_weight"], "jsd_weight")
  return out


def augment_fn(kwargs: Mapping[str, Any]) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`(images, key) -> augmix(images, key, **AugMix hyperparameters of kwargs)`."""
  ops = {k: kwargs[k] for k in AUGMIX_DEFAULTS}
  return lambda images, key: augmix(images, key, **ops)


def consistency_loss(logits: Sequence[jax.Array], labels: jax.Array, *,
                     jsd_weight: float = JSD_WEIGHT) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CE(logits[0], labels) + jsd_weight * JSD(logits[0], logits[1], logits[2]).

  `logits`: the clean view's and two other views' (B, K) logits. Returns the loss and
  metrics: 'accuracy' (clean view), 'jsd', and '<i>_accuracy' of the other views.
  """
  clean, view1, view2 = logits
  jsd = jsd_consistency(clean, view1, view2)
  metrics = {"accuracy": accuracy(clean, labels), "jsd": jsd,
             "view1_accuracy": accuracy(view1, labels),
             "view2_accuracy": accuracy(view2, labels)}
  return cross_entropy(clean, labels) + jsd_weight * jsd, metrics


def views_apply(model: nn.Module, params, batch_stats, views: Sequence[jax.Array], key, *,
                bn_views: str = "pooled") -> tuple[list[jax.Array], Any]:
  """The views' train-mode logits and the new BatchNorm statistics.

  `bn_views='pooled'`: one pass over the concatenated views (BatchNorm normalises with
  the statistics of all of them and updates its running statistics once: AugMix's
  reference, `torch.cat`). 'separate': one pass per view, in order (each view normalised
  with its own batch statistics; the running statistics updated after each pass, the
  next pass starting from them: three `model(view)` calls in torch, RobustAugMix's
  reference trainer). Dropout draws an independent key per pass.
  """
  if bn_views not in BN_VIEWS:
    raise ValueError(f"bn_views must be one of {BN_VIEWS}, got {bn_views!r}.")
  if bn_views == "separate":
    logits = []
    for view, k in zip(views, jax.random.split(key, len(views))):
      out, batch_stats = train_apply(model, params, batch_stats, view, k)
      logits.append(out)
    return logits, batch_stats
  b = views[0].shape[0]
  logits, new_stats = train_apply(model, params, batch_stats, jnp.concatenate(views), key)
  return [logits[i * b:(i + 1) * b] for i in range(len(views))], new_stats


def augmix_objective(model: nn.Module, params, batch_stats, x: jax.Array, y: jax.Array,
                     key: jax.Array, kwargs: Mapping[str, Any]):
  """The final stage of a pipeline: AugMix on `x`, then CE (no JSD) or CE + JSD.

  `kwargs` from `check_augmix_kwargs`. Returns (loss, new batch_stats, metrics).
  """
  aug_key, view_key, dropout_key = jax.random.split(key, 3)
  aug = augment_fn(kwargs)
  if not kwargs["jsd"]:
    logits, new_stats = train_apply(model, params, batch_stats, aug(x, aug_key), dropout_key)
    return cross_entropy(logits, y), new_stats, {"accuracy": accuracy(logits, y)}
  views = [x, aug(x, aug_key), aug(x, view_key)]
  logits, new_stats = views_apply(model, params, batch_stats, views, dropout_key)
  loss, metrics = consistency_loss(logits, y, jsd_weight=kwargs["jsd_weight"])
  return loss, new_stats, metrics


def make_augmix(model: nn.Module, *, jsd: bool = True,
                jsd_weight: float = JSD_WEIGHT, severity: float = 3, width: int = 3,
                depth: int = -1, alpha: float = 1.0, all_ops: bool = False):
  """AugMix LossFn; defaults: the CIFAR settings with the JSD loss (lambda 12).

  Metrics: 'accuracy' (the clean view
  with JSD, the AugMix images without), and with JSD 'jsd', 'view1/2_accuracy'.
  """
  kw = dict(jsd=jsd, jsd_weight=jsd_weight, severity=severity, width=width, depth=depth,
            alpha=alpha, all_ops=all_ops)
  kw = check_augmix_kwargs(kw)

  def loss_fn(params, batch_stats, batch, key):
    loss, new_stats, metrics = augmix_objective(model, params, batch_stats, batch["image"],
                                                batch["label"], key, kw)
    return loss, {"batch_stats": new_stats, "metrics": metrics}

  return loss_fn


def robust_augmix_attack(model: nn.Module, params, batch_stats, x: jax.Array, y: jax.Array,
                         key: jax.Array, *, eps: float, step_size: float, num_steps: int,
                         random_init: bool = True, random_start: str = "sphere",
                         attack_bn_mode: str = "eval", attack_order: str = "project_clip",
                         dropout_key: jax.Array | None = None) -> jax.Array:
  """RobustAugMix's adversarial view: l2 PGD on `x`, stop-gradient-ed, in [0, 1].

  `attack_bn_mode='eval'` (default, the author's code): the attack's forward passes use
  BatchNorm's running statistics (`train=False`, no dropout), so an example's attack does
  not depend on the rest of the batch. 'train': train-mode BatchNorm on the attacked batch
  (and dropout), its statistic updates discarded. `random_start`: 'sphere' (default, the
  author's code) or 'ball' (radius U(0, eps) per example); see `input_attack`.
  `attack_order`: 'project_clip' (default, the author's `pgd_l2_attack`) or
  'clip_project' (l_p AT's reference order, ours before). `key` draws the random
  start, `dropout_key` (default: one split from `key`) the train-mode dropout. `batch_stats`
  is never updated here.
  """
  if dropout_key is None:
    key, dropout_key = jax.random.split(key)
  frozen = jax.lax.stop_gradient(params)
  if attack_bn_mode == "eval":
    def logits_fn(images):
      return model.apply({"params": frozen, "batch_stats": batch_stats}, images, train=False)
  elif attack_bn_mode == "train":
    def logits_fn(images):
      return train_apply(model, frozen, batch_stats, images, dropout_key)[0]
  else:
    raise ValueError(f"attack_bn_mode must be one of {ATTACK_BN_MODES}, got {attack_bn_mode!r}.")
  return jax.lax.stop_gradient(input_attack(
      logits_fn, x, y, key, norm="l2", eps=eps, step_size=step_size,
      num_steps=num_steps, random_init=random_init, random_start=random_start,
      random_radius="example", order=attack_order))


def make_robust_augmix(model: nn.Module, *, eps: float = 1.0,
                       num_steps: int = 7, step_size: float | None = None,
                       random_init: bool = True, random_start: str = "sphere",
                       attack_bn_mode: str = "eval", bn_views: str = "separate",
                       attack_order: str = "project_clip", jsd_weight: float = JSD_WEIGHT,
                       severity: float = 3, width: int = 3, depth: int = -1,
                       alpha: float = 1.0, all_ops: bool = False):
  """RobustAugMix: CE(clean) + 12 * JSD(p_clean, p_augmix, p_adversarial).

  The adversarial view: l2 PGD, eps 1.0, `num_steps` 7, step 2.5 * eps / num_steps
  (`step_size=None`), random start (Martinez et al. 2022, Sec. 4). Where the paper is
  silent the defaults follow the first author's public code (martinez-hub/robustaugmix):
  the PGD start lies on the eps-sphere (`random_start='sphere'`; 'ball' draws its radius
  from U(0, eps), our earlier start) and the attack runs with BatchNorm in eval mode
  (`attack_bn_mode='eval'`; 'train' uses the attacked batch's statistics and discards
  their updates, our earlier attack). The clean, AugMix and adversarial views then go
  through the model as three separate train-mode passes (`bn_views='separate'`, the
  author's `trainer.py`: `model(clean)`, `model(aug)`, `model(adv)`), so each view is
  normalised with its own batch statistics; `bn_views='pooled'` (our earlier default,
  AugMix's `torch.cat`) pools the three views in one pass. Each PGD step projects onto
  the ball and then clips to [0, 1] (`attack_order='project_clip'`, the author's
  `pgd_l2_attack`; 'clip_project' is l_p AT's order, ours before). `random_init=False`
  starts from zero. Metrics:
  'accuracy' (clean), 'jsd', 'augmix_accuracy', 'adversarial_accuracy', 'perturbation_norm'.

  Raises:
    ValueError: for a bad `eps`, `step_size`, `num_steps`, `random_start`,
      `attack_bn_mode`, `bn_views`, `attack_order` or AugMix argument (named).
  """
  kw = dict(eps=eps, num_steps=num_steps, step_size=step_size, random_init=random_init,
            jsd_weight=jsd_weight, severity=severity, width=width, depth=depth, alpha=alpha,
            all_ops=all_ops)
  eps, num_steps = float(as_radius(kw.pop("eps"))), int(kw.pop("num_steps"))
  step_size = kw.pop("step_size")
  step_size = 2.5 * eps / num_steps if step_size is None else float(step_size)
  random_init = bool(kw.pop("random_init"))
  check_attack_args("l2", eps, step_size, num_steps)
  if random_start not in RANDOM_STARTS:
    raise ValueError(f"random_start must be one of {RANDOM_STARTS}, got {random_start!r}.")
  if attack_bn_mode not in ATTACK_BN_MODES:
    raise ValueError(f"attack_bn_mode must be one of {ATTACK_BN_MODES}, got {attack_bn_mode!r}.")
  if bn_views not in BN_VIEWS:
    raise ValueError(f"bn_views must be one of {BN_VIEWS}, got {bn_views!r}.")
  if attack_order not in ATTACK_ORDERS:
    raise ValueError(f"attack_order must be one of {ATTACK_ORDERS}, got {attack_order!r}.")
  attack_kw = dict(eps=eps, step_size=step_size, num_steps=num_steps, random_init=random_init,
                   random_start=random_start, attack_bn_mode=attack_bn_mode,
                   attack_order=attack_order)
  aug_kw = check_augmix_kwargs(dict(kw, jsd=True))
  aug = augment_fn(aug_kw)

  def loss_fn(params, batch_stats, batch, key):
    aug_key, attack_key, attack_dropout, dropout_key = jax.random.split(key, 4)
    x, y = batch["image"], batch["label"]
    x_adv = robust_augmix_attack(model, params, batch_stats, x, y, attack_key,
                                 dropout_key=attack_dropout, **attack_kw)
    logits, new_stats = views_apply(model, params, batch_stats, [x, aug(x, aug_key), x_adv],
                                    dropout_key, bn_views=bn_views)
    loss, metrics = consistency_loss(logits, y, jsd_weight=aug_kw["jsd_weight"])
    metrics["augmix_accuracy"] = metrics.pop("view1_accuracy")
    metrics["adversarial_accuracy"] = metrics.pop("view2_accuracy")
    metrics["perturbation_norm"] = jnp.mean(
        jnp.sqrt(jnp.sum(jnp.square(x_adv - x), axis=(1, 2, 3))))
    return loss, {"batch_stats": new_stats, "metrics": metrics}

  return loss_fn
