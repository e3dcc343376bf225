"""Relaxed LPIPS Adversarial Training (RLAT; Kireev et al. 2022) as a `LossFn` factory.

One attack step on additive perturbations of several activations, then cross-entropy
on the perturbed pass only. Following the paper and the reference code
(tml-epfl/adv-training-corruptions, `train.py` / `models.py`):

* Perturbation points: the model's marked `FEATURE_POINTS` (PreActResNet-18: input, stem
  conv output, the 4 residual stage outputs before the final BN-ReLU). The input
  perturbation is applied as `clip(x + d, 0, 1)` (the model does not clip); the others
  through the model's 'perturbations' collection.
* Zero init, one step; the gradient is taken w.r.t. the perturbations only (parameters
  are `stop_gradient`-ed, like `requires_grad=False` in the reference), then held
  constant. The gradient w.r.t. the input point is taken at `x` itself (= the
  reference's gradient through `clamp(x + 0)`).
* l2 (default): `delta_l = eps_l * g_l / ||g_l||`, the norm per example over all
  non-batch dims of that activation. linf (not in the paper, which defines RLAT with l2
  bounds only): `delta_l = eps_l * sign(g_l)` then, as the reference's linf branch,
  clamped to the GLOBAL `[-eps, eps]` (`linf_bound='global'`, the default), i.e.
  `min(eps_l, eps) * sign(g_l)`; `linf_bound='layer'` keeps `eps_l * sign(g_l)` (ours
  before).
* eps_l = eps * (d_l / d_input) / (l + 1), d = per-example element count (the
  reference's "scaling" eps policy with the "descending" grow policy); `l` is the
  position of the layer among the SELECTED layers (as in the reference, which
  enumerates the chosen layer list), so with all six PreActResNet-18 points on CIFAR the
  multipliers are [1, 10.67, 7.11, 2.67, 1.07, 0.44]. d_input is always the image size.
* BatchNorm in train mode for both passes. As in the PyTorch reference, the attack pass
  updates the running statistics too and the perturbed (training) pass starts from them
  (`attack_bn_stats='update'`, the default); 'discard' keeps only the training pass's
  update (ours before).
* `fraction` < 1: the perturbations are applied to the FIRST `round(fraction * B)`
  examples only (the reference's `batch_part` zeroes the perturbations of the first
  `(1 - f) B`; equivalent on shuffled batches).

Checked against the reference code (tml-epfl/adv-training-corruptions `train.py`: the
`--attack rlat` branch, eps/grow/layers policies; `models.py`: `PreActResNet.forward(x,
delta)`, `PreActResNet_Imagenet`; `utils.py`; `data.py`) for choices the paper does not
state:
  - BatchNorm during the attack pass: train mode (`model.train()` throughout), running
    statistics updated by it. Ours before: train mode, its update discarded. CHANGED:
    the reference's is the default (`attack_bn_stats='update'`), ours `'discard'`.
  - linf variant: per-layer step clamped to the global eps. Ours before: eps_l. CHANGED:
    the reference's is the default (`linf_bound='global'`), ours `'layer'`.
  - Input point: `normalize(clamp(x + delta_0, 0, 1))`; the other points add to the
    conv / stage outputs before the final BN-ReLU (ImageNet stem: after conv1, before
    its BN). Same.
  - Zero init, one step, all layers (`--layers-policy all`), model weights frozen
    during the attack, l2 normalisation with `--normreg 0` (ours floors the norm at
    1e-12), loss = CE on the perturbed pass only. Same.
  - eps_l from the per-example element counts (`shp.numel() / shp[0]`) / 3072 (CIFAR)
    or / (224*224*3) (ImageNet), divided by (l + 1). Same (d_input = our image size).
  - `--batch-part`: the first `int((1 - f) B)` examples clean. Ours: the first
    `round(f B)` perturbed. Equivalent on shuffled batches.
  Optimisation (the configs' settings): SGD momentum 0.9, no Nesterov, weight decay 5e-4
  on every parameter, lr 0.1 piecewise /10 at 34% and 67% (per iteration), batch 128,
  150 epochs (README), pad-4 crop + flip; same as `cifar10_rlat.py`. ImageNet-100 in the
  reference: the same script (SGD, no Nesterov, piecewise, batch 128) with
  RandomResizedCrop(224) + flip; `imagenet100_rlat.py` uses our ImageNet-100 nominal
  schedule (Nesterov, cosine, 128-px crops) instead.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adacorr.core.radius import as_radius
from adacorr.methods import augmix as augmix_lib
from adacorr.methods.adversarial_training import check_attack_bn_stats
from adacorr.methods.common import (
    TINY, accuracy, check_fraction, check_nonnegative, check_norm, cross_entropy, per_example_l2,
    perturbed_mask, train_apply)


def feature_points(model: nn.Module) -> tuple[str, ...]:
  """The model's marked perturbation points; ValueError if it has none."""
  points = getattr(model, "FEATURE_POINTS", None)
  if not points:
    raise ValueError(
        f"{type(model).__name__} has no FEATURE_POINTS (marked perturbation points); RLAT "
        "needs a model that marks them, e.g. PreActResNet18.")
  return tuple(points)


def check_layers(model: nn.Module, layers: Sequence[str] | None) -> tuple[str, ...]:
  """The selected layers in the model's order (all points when `layers` is None)."""
  points = feature_points(model)
  if layers is None:
    return points
  if isinstance(layers, str):
    layers = [s.strip() for s in layers.split(",") if s.strip()]
  layers = list(layers)
  unknown = [l for l in layers if l not in points]
  if unknown:
    raise ValueError(f"layers {unknown} are not among {type(model).__name__}.FEATURE_POINTS "
                     f"{points}.")
  if not layers:
    raise ValueError("layers must name at least one perturbation point.")
  if len(set(layers)) != len(layers):
    raise ValueError(f"layers has duplicates: {layers}.")
  return tuple(p for p in points if p in layers)


def perturbation_shapes(model: nn.Module, images_shape: Sequence[int],
                        dtype: Any = jnp.float32) -> dict[str, jax.ShapeDtypeStruct]:
  """Shape/dtype of each marked activation for a batch of shape `images_shape` (no FLOPs)."""
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
      jax.ShapeDtypeStruct(tuple(images_shape), dtype))
  perts = variables.get("perturbations", {})
  missing = [p for p in feature_points(model) if p not in perts]
  if missing:
    raise ValueError(f"{type(model).__name__} does not create perturbation variables {missing}.")
  return dict(perts)


def rlat_eps_multipliers(model: nn.Module, image_shape: Sequence[int],
                         layers: Sequence[str] | None = None) -> list[float]:
  """eps_l / eps = (d_l / d_input) / (l + 1) for the selected layers (model order).

  `image_shape` is (H, W, C) of one image.
  """
  layers = check_layers(model, layers)
  shapes = perturbation_shapes(model, (1, *image_shape))
  d_input = math.prod(image_shape)
  return [math.prod(shapes[name].shape[1:]) / d_input / (i + 1)
          for i, name in enumerate(layers)]


LINF_BOUNDS = ("global", "layer")


def rlat_deltas(model: nn.Module, params, batch_stats, batch, key, *, eps: float = 0.08,
                norm: str = "l2", layers: Sequence[str] | None = None,
                fraction: float = 1.0, linf_bound: str = "global"
                ) -> tuple[dict[str, jax.Array], dict[str, Any]]:
  """The RLAT perturbations (one step from zero) and the clean pass's loss / logits.

  `linf_bound` (linf only): 'global' (the reference) clamps every layer's step to
  [-eps, eps]; 'layer' lets layer l move by its own eps_l.

  Returns `(deltas, clean)`: `deltas[name]` for each selected layer, shaped like that
  activation, stop-gradient-ed, zero for the unperturbed examples; `clean` holds
  'loss' and 'logits' of the (unperturbed, train-mode) attack pass and 'batch_stats',
  the BatchNorm statistics that pass leaves (stop-gradient-ed).
  """
  _check(eps, norm, fraction)
  _check_linf_bound(linf_bound)
  layers = check_layers(model, layers)
  x, y = batch["image"], batch["label"]
  shapes = perturbation_shapes(model, x.shape, x.dtype)
  zeros = {name: jnp.zeros(s.shape, s.dtype) for name, s in shapes.items()}
  mults = rlat_eps_multipliers(model, x.shape[1:], layers)
  frozen = jax.lax.stop_gradient(params)

  def loss(selected):
    logits, new_stats = train_apply(model, frozen, batch_stats, x, key,
                                    perturbations={**zeros, **selected})
    return cross_entropy(logits, y), (logits, new_stats)

  (clean_loss, (clean_logits, clean_stats)), grads = jax.value_and_grad(loss, has_aux=True)(
      {name: zeros[name] for name in layers})
  mask = perturbed_mask(fraction, x.shape[0])
  deltas = {}
  for mult, name in zip(mults, layers):
    g = grads[name].astype(jnp.float32)
    eps_l = eps * mult
    if norm == "l2":
      d = eps_l * g / jnp.maximum(per_example_l2(g, keepdims=True), TINY)
    else:
      d = (min(eps_l, eps) if linf_bound == "global" else eps_l) * jnp.sign(g)
    d = jnp.where(mask.reshape((-1,) + (1,) * (d.ndim - 1)), d, 0.0)
    deltas[name] = jax.lax.stop_gradient(d.astype(zeros[name].dtype))
  return deltas, {"loss": clean_loss, "logits": clean_logits,
                  "batch_stats": jax.lax.stop_gradient(clean_stats)}


def perturbed_apply(model: nn.Module, params, batch_stats, images, deltas, key):
  """Train-mode forward with the perturbations `deltas` (input one clipped to [0, 1]).

  Returns (logits, new batch_stats, the images actually fed).
  """
  shapes = perturbation_shapes(model, images.shape, images.dtype)
  perts = {name: jnp.zeros(s.shape, s.dtype) for name, s in shapes.items()}
  perts.update({k: v for k, v in deltas.items() if k != "input"})
  x = jnp.clip(images + deltas["input"], 0.0, 1.0) if "input" in deltas else images
  logits, new_stats = train_apply(model, params, batch_stats, x, key, perturbations=perts)
  return logits, new_stats, x


def _check(eps: float, norm: str, fraction: float) -> None:
  check_norm(norm)
  check_nonnegative(eps, "eps")
  check_fraction(fraction)


def _check_linf_bound(linf_bound: str) -> None:
  if linf_bound not in LINF_BOUNDS:
    raise ValueError(f"linf_bound must be one of {LINF_BOUNDS}, got {linf_bound!r}.")


def rlat_apply(model: nn.Module, params, batch_stats, batch, key, *, eps: float = 0.08,
               norm: str = "l2", layers: Sequence[str] | None = None, fraction: float = 1.0,
               linf_bound: str = "global", attack_bn_stats: str = "update"):
  """The RLAT attack and the perturbed train-mode pass on `batch`.

  The perturbed pass starts from the BatchNorm statistics the attack pass left
  (`attack_bn_stats='update'`, the reference) or from `batch_stats` ('discard').
  Returns (logits, new batch_stats, the images fed, `clean` of `rlat_deltas`).
  """
  check_attack_bn_stats(attack_bn_stats)
  deltas, clean = rlat_deltas(model, params, batch_stats, batch, key, eps=eps, norm=norm,
                              layers=layers, fraction=fraction, linf_bound=linf_bound)
  start = clean["batch_stats"] if attack_bn_stats == "update" else batch_stats
  logits, new_stats, x_fed = perturbed_apply(model, params, start, batch["image"], deltas,
                                             key)
  return logits, new_stats, x_fed, clean


def make_rlat(model: nn.Module, *, eps: float = 0.08, norm: str = "l2",
              layers: Sequence[str] | None = None, fraction: float = 1.0,
              augmix: Mapping[str, Any] | None = None, linf_bound: str = "global",
              attack_bn_stats: str = "update"):
  """RLAT LossFn. Defaults: eps 0.08 (CIFAR; 0.02 ImageNet-100, 0.05 with AugMix), l2, all
  FEATURE_POINTS, whole batch; the reference's `linf_bound='global'` and
  `attack_bn_stats='update'` (see the module docstring; 'layer' / 'discard' are ours
  before).

  AugMix + RLAT (Kireev et al. 2022, Table 2; eps 0.05 there): `augmix` a dict of AugMix
  hyperparameters (`adacorr.methods.augmix.check_augmix_kwargs`). Without JSD, RLAT runs
  on AugMix(x). With `jsd=True` the clean view and two AugMix views form one batch of 3B
  (as AugMix + JSD trains); RLAT perturbs all three views (one attack on the 3B batch,
  labels repeated; `fraction` counts in that batch) and the loss is CE(perturbed clean
  view) + 12 * JSD of the three perturbed views. The paper does not spell this out and
  its code has no AugMix; this is our reading of "AugMix + JSD + RLAT".

  Metrics: 'accuracy' (perturbed pass; the clean view with JSD), 'clean_loss' /
  'clean_accuracy' (the attack's unperturbed train-mode pass), 'perturbation_norm' (mean
  over perturbed examples of the l2 norm of the input change after clipping; 0 if the
  input is not perturbed), and 'jsd' with AugMix + JSD.
  """
  kw = dict(eps=eps, norm=norm, layers=layers, fraction=fraction, augmix=augmix)
  eps, norm, fraction = float(as_radius(kw["eps"])), kw["norm"], float(kw["fraction"])
  _check(eps, norm, fraction)
  layers = check_layers(model, kw["layers"])
  augmix = augmix_lib.check_augmix_kwargs(kw["augmix"])
  _check_linf_bound(linf_bound)
  check_attack_bn_stats(attack_bn_stats)

  def loss_fn(params, batch_stats, batch, key):
    x, y = batch["image"], batch["label"]
    views = 1
    if augmix is not None:
      key, aug_key, view_key = jax.random.split(key, 3)
      aug = augmix_lib.augment_fn(augmix)
      if augmix["jsd"]:
        views = 3
        x = jnp.concatenate([x, aug(x, aug_key), aug(x, view_key)])
        y = jnp.tile(y, 3)
      else:
        x = aug(x, aug_key)
      batch = {"image": x, "label": y}
    logits, new_stats, x_fed, clean = rlat_apply(
        model, params, batch_stats, batch, key, eps=eps, norm=norm, layers=layers,
        fraction=fraction, linf_bound=linf_bound, attack_bn_stats=attack_bn_stats)
    extra = {}
    if views == 3:
      b = x.shape[0] // 3
      loss, extra = augmix_lib.consistency_loss(
          [logits[:b], logits[b:2 * b], logits[2 * b:]], y[:b],
          jsd_weight=augmix["jsd_weight"])
    else:
      loss = cross_entropy(logits, y)
    mask = perturbed_mask(fraction, x.shape[0]).astype(jnp.float32)
    metrics = {
        **extra,
        "accuracy": extra.get("accuracy", accuracy(logits, y)),
        "clean_loss": clean["loss"],
        "clean_accuracy": accuracy(clean["logits"], y),
        "perturbation_norm": jnp.sum(per_example_l2(x_fed - x) * mask)
                             / jnp.maximum(jnp.sum(mask), 1.0),
    }
    return loss, {"batch_stats": new_stats, "metrics": metrics}

  return loss_fn
