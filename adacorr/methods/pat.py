"""Perceptual Adversarial Training (PAT; Laidlaw et al. 2021) as a `LossFn` factory.

Per batch (paper Sec. 5 and App. F; reference `adv_train.py` with
`--only_attack_correct`):
  1. the model in EVALUATION mode (BatchNorm running statistics, parameters
     `stop_gradient`-ed) classifies the clean batch;
  2. Fast-LPA (`adacorr.attacks.fast_lpa`: 10 steps, lambda 1 -> 10, step bound -> bound/10,
     no projection; `adacorr.attacks.perceptual.fast_lpa_schedule`, step index t = 1..T as
     the paper's Algorithm 3, `convention='reference'` for the code's t = 0..T-1) attacks
     the examples it classifies correctly; the others stay clean
     (`only_attack_correct=False` attacks every example);
  3. cross-entropy of the model in TRAINING mode on the resulting batch.
The LPIPS distance bounding the attack is either the model's own (`lpips_model='self'`,
self-bounded PAT: its `lpips_layers`, the ResNet stage outputs) or an external network's,
given as the workdir of a trained classifier (e.g. a CifarAlexNet trained with
`experiments/configs/cifar10_alexnet.py`: AlexNet-bounded PAT). Paper bounds on CIFAR-10:
0.5 self-bounded, 1.0 AlexNet-bounded.

Self-bounded bounds depend on the layers: the paper's 0.5 is calibrated on the robustness
library's post-activation CIFAR ResNet-50 (`adacorr.models.resnet_cifar.CifarResNet`, model
'cifar_resnet'), whose LPIPS layers are its block outputs after ReLU (non-negative). With
`PreActResNet` (model 'preact_resnet50', still usable) the stage outputs are signed residual
sums before the final BN-ReLU; their channel-normalised embedding differs, so a bound there
is not the paper's bound.

Fast-LPA runs on the whole batch (static shapes under `jit`) and the correctly
classified examples are selected afterwards; the reference attacks only that subset,
which saves the attack's work on the misclassified ones (the same result: in eval mode
an example's attack does not depend on the others).

Fast-LPA's step length m = d(x_adv, x_adv + h Delta) / h is a finite difference with
h = 0.1, as the paper's Algorithm 3 ("m ~ derivative of d(x, .) in the direction of
Delta; h = 0.1") and the reference (`FastLagrangePerceptualAttack`, which divides by a
literal 0.1) compute it: `derivative='finite_difference'`, the default. `'jvp'` (ours
before) is the exact directional derivative ||J Delta||, the h -> 0 limit.

Checked against the reference code (cassidylaidlaw/perceptual-advex `adv_train.py`,
`perceptual_advex/perceptual_attacks.py` (`FastLagrangePerceptualAttack`,
`get_lpips_model`), `distances.py` (`normalize_flatten_features`), `utilities.py`
(`MarginLoss`), README's training commands; robustness library `data_augmentation.py`):
  - BatchNorm during the attack: eval mode (`model.eval()` before the attack and the
    correctness test, `model.train()` only for the training pass). Same.
  - Which examples: `--only_attack_correct`, correctness from the eval-mode logits of the
    clean batch; the others train clean. Same.
  - LPIPS network: 'self' is the model being trained, in eval mode, its own features;
    AlexNet-bounded CIFAR: the `alexnet_cifar` CifarAlexNet checkpoint (ours: a workdir
    of our trained CifarAlexNet). Same idea; weights are ours.
  - Fast-LPA: init x + 0.01 N, loss summed over the batch, margin loss (kappa inf),
    gradient normalised with +1e-8, step eta / (m + 1e-4), clip to [0, 1] after every
    step, no projection, lambda 10 * 0.1^(1 - t/T), eta = bound * 0.1^(t/T). The
    reference's t runs 0..T-1, the paper's 1..T: the paper's stays the default
    (`convention='paper'`, the code's 'reference'). The reference does NOT clip the
    random start (its first forward pass sees x + 0.01 N unclipped); ours
    (`adacorr.attacks.fast_lpa`) clips it. Not changed here (the attack is not this
    module's); a difference of <= 0.01-ish at saturated pixels in the first step only.
  - m: finite difference, h = 0.1. Ours before: exact JVP. CHANGED: the paper's and the
    code's finite difference is the default (`derivative='finite_difference'`), the JVP
    an option (`derivative='jvp'`).
  - Training pass: CE (mean) in train mode on the batch with the attacked examples
    replaced; gradient values clipped to 1.0 (`--clip_grad 1.0`). Same (config).
  Optimisation (CIFAR-10; `cifar10_pat.py` matches): SGD momentum 0.9, no Nesterov,
  weight decay 2e-4 on every parameter, lr 0.1 with a linear ramp over the first 5 epochs
  (`(iteration + 1) / (5 * len(loader)) * lr`), /10 at epochs 75 and 90, 100 epochs,
  batch 50 (README; the script's default is 100). Data augmentation differs: the paper
  uses "the default data augmentation techniques from the robustness library",
  `TRAIN_TRANSFORMS_DEFAULT(32)` = pad-4 crop, flip, ColorJitter(.25, .25, .25) and
  RandomRotation(2); `cifar10_pat.py` uses pad-crop + flip only.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adacorr.attacks.perceptual import CONVENTIONS, fast_lpa
from adacorr.core.checks import check_choice
from adacorr.methods.common import (
    accuracy, check_nonnegative, cross_entropy, train_apply)
from adacorr.perceptual import lpips_layers as check_lpips_layers
from adacorr.perceptual.features import features_and_logits_fn, model_logits_fn
from adacorr.perceptual.lpips import embedding_distance, normalize_features


def make_pat(model: nn.Module, *, bound: float = 0.5,
             num_steps: int = 10, lpips_layers: Sequence[str] | str | None = None, step_size: float | None = None,
             lam: float = 10.0, h: float = 0.1, derivative: str = "finite_difference",
             kappa: float = math.inf, only_attack_correct: bool = True,
             unroll: int | bool | str = "auto", convention: str = "paper",
             features_fn=None):
  """PAT LossFn. Defaults: self-bounded, bound 0.5, Fast-LPA 10 steps (paper, CIFAR-10).

  Args:
    model: the classifier being trained.
    bound: LPIPS bound of the training attack (1.0 for AlexNet-bounded on CIFAR-10).
    num_steps, step_size, lam, h, derivative, kappa, unroll: Fast-LPA's (see
      `adacorr.attacks.fast_lpa`); `derivative` defaults to 'finite_difference' with
      h = 0.1 (the paper's Algorithm 3 and the reference code), 'jvp' is exact.
    convention: Fast-LPA's schedule index, 'paper' (Algorithm 3, t = 1..T) or
      'reference' (perceptual-advex, t = 0..T-1).
    lpips_layers: the model's layers that define its own LPIPS distance (default: its
      `LPIPS_LAYERS`, e.g. CifarResNet's post-ReLU stage1..stage4, the paper's conv2_x ..
      conv5_x); used when no `features_fn` is given (self-bounded PAT).
    only_attack_correct: attack only the examples the model classifies correctly.
    features_fn: an external LPIPS network `features_fn(x) -> [maps]` (externally
      bounded PAT, e.g. a trained CifarAlexNet or ImageNet AlexNet); None: self-bounded.
      In an experiment config, `lpips_model` (the workdir of a trained classifier) is
      resolved into it by the run layer (`adacorr.run.methods`).

  Metrics: 'accuracy' (training pass on the trained-on batch), 'clean_accuracy'
  (evaluation mode, clean), 'attacked_fraction', 'lpips' (mean LPIPS distance of the
  attacked examples from their clean images, under the bounding network).
  """
  kw = dict(bound=bound, num_steps=num_steps, lpips_layers=lpips_layers, step_size=step_size, lam=lam, h=h,
            derivative=derivative, kappa=kappa, only_attack_correct=only_attack_correct,
            unroll=unroll)
  bound = float(kw["bound"])
  check_nonnegative(bound, "bound")
  num_steps = int(kw["num_steps"])
  if num_steps < 1:
    raise ValueError(f"num_steps must be a positive integer, got num_steps={num_steps}.")
  step_size = None if kw["step_size"] is None else float(kw["step_size"])
  only_correct = bool(kw["only_attack_correct"])
  check_choice(convention, CONVENTIONS, "convention")
  attack_kw = dict(bound=bound, num_steps=num_steps, step_size=step_size,
                   lam=float(kw["lam"]), h=float(kw["h"]), derivative=kw["derivative"],
                   kappa=float(kw["kappa"]), unroll=kw["unroll"], convention=convention)
  external = features_fn
  layers = None if external is not None else check_lpips_layers(model, kw["lpips_layers"])

  def loss_fn(params, batch_stats, batch, key):
    x, y = batch["image"], batch["label"]
    attack_key, dropout_key = jax.random.split(key)
    frozen = {"params": jax.lax.stop_gradient(params), "batch_stats": batch_stats}
    if external is None:
      attacked_fn = features_and_logits_fn(model, frozen, layers)
      clean_logits, clean_features = attacked_fn(x)
      x_adv = fast_lpa(attacked_fn, None, x, y, attack_key, **attack_kw)
      phi = lambda z: normalize_features(attacked_fn(z)[1])  # noqa: E731
      phi_x = normalize_features(clean_features)
    else:
      logits_fn = model_logits_fn(model, frozen)
      clean_logits = logits_fn(x)
      x_adv = fast_lpa(logits_fn, external, x, y, attack_key, **attack_kw)
      phi = lambda z: normalize_features(external(z))  # noqa: E731
      phi_x = phi(x)
    attacked = jnp.argmax(clean_logits, -1) == y if only_correct else jnp.ones_like(y, bool)
    x_train = jax.lax.stop_gradient(
        jnp.where(attacked.reshape((-1,) + (1,) * (x.ndim - 1)), x_adv, x))
    logits, new_stats = train_apply(model, params, batch_stats, x_train, dropout_key)
    n_attacked = jnp.sum(attacked)
    dist = jax.lax.stop_gradient(embedding_distance(phi(x_adv), phi_x))
    metrics = {
        "accuracy": accuracy(logits, y),
        "clean_accuracy": accuracy(clean_logits, y),
        "attacked_fraction": jnp.mean(attacked.astype(jnp.float32)),
        "lpips": jnp.sum(jnp.where(attacked, dist, 0.0)) / jnp.maximum(n_attacked, 1),
    }
    return cross_entropy(logits, y), {"batch_stats": new_stats, "metrics": metrics}

  return loss_fn
