"""Feature extractors for LPIPS: a classifier's own marked layers (self-bounded) or an
external network's (externally bounded: CifarAlexNet trained by us, ImageNet AlexNet).

Every extractor runs the network in evaluation mode (BatchNorm running statistics, no
dropout), so one example's features do not depend on its batch neighbours. The layers
are read from the `intermediates` collection the models `sow` into.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax

Array = jax.Array

# Default LPIPS layers per model: the outputs of the residual stages (ResNet family,
# Laidlaw et al. H.1) or of every conv+ReLU (AlexNet, SmallCNN). The paper's self-bounded
# bounds are calibrated on post-activation stage outputs (after ReLU, non-negative: the
# robustness library's CIFAR ResNet-50, `models.resnet_cifar.CifarResNet`, and torchvision's
# ResNet-50). PreActResNet's stage outputs are signed residual sums before BN-ReLU: its
# self-bounded distance is on another scale, so the paper's bounds do not carry over.


def lpips_layers(model: nn.Module, layers: Sequence[str] | str | None = None) -> tuple[str, ...]:
  """The sown layers LPIPS compares for `model` (validated against what it sows).

  `layers=None` picks the model's default: `LPIPS_LAYERS` if the class defines it, else
  the stage outputs among its `FEATURE_POINTS` (ResNets), else all `FEATURE_POINTS`
  (AlexNets). A comma-separated string is accepted.
  """
  points = tuple(getattr(model, "FEATURE_POINTS", ()) or ()) or tuple(
      getattr(model, "LPIPS_LAYERS", ()) or ())
  if layers is None:
    layers = getattr(model, "LPIPS_LAYERS", None)
    if layers is None:
      stages = tuple(p for p in points if p.startswith("stage"))
      layers = stages or points
    if not layers:
      raise ValueError(
          f"{type(model).__name__} marks no feature layers (FEATURE_POINTS or LPIPS_LAYERS); "
          "pass layers=[...] "
          "naming the values it sows to 'intermediates'.")
  if isinstance(layers, str):
    layers = [s.strip() for s in layers.split(",") if s.strip()]
  layers = tuple(layers)
  if not layers:
    raise ValueError("layers must name at least one feature layer.")
  if points:
    unknown = [l for l in layers if l not in points]
    if unknown:
      raise ValueError(f"layers {unknown} are not among the layers {type(model).__name__} "
                       f"marks: {points}.")
  return layers


def _eval_variables(variables: Mapping[str, Any]) -> dict:
  return {k: v for k, v in dict(variables).items() if k not in ("intermediates",)}


def features_and_logits_fn(model: nn.Module, variables: Mapping[str, Any],
                           layers: Sequence[str] | str | None = None
                           ) -> Callable[[Array], tuple[Array, list[Array]]]:
  """`fn(x) -> (logits (B, K), [f_l (B, H_l, W_l, C_l)])` from ONE eval-mode forward pass.

  This is the self-bounded form the perceptual attacks take as `logits_fn` with
  `features_fn=None`: one pass gives both the logits and the LPIPS features.
  """
  layers = lpips_layers(model, layers)
  variables = _eval_variables(variables)

  def fn(x):
    logits, state = model.apply(variables, x, train=False, mutable=["intermediates"])
    sown = state.get("intermediates", {})
    missing = [l for l in layers if l not in sown]
    if missing:
      raise ValueError(f"{type(model).__name__} did not sow {missing}; it sows "
                       f"{sorted(sown)}.")
    return logits, [sown[l][0] for l in layers]

  return fn


def model_features_fn(model: nn.Module, variables: Mapping[str, Any],
                      layers: Sequence[str] | str | None = None
                      ) -> Callable[[Array], list[Array]]:
  """`features_fn(x) -> [f_l]`: the LPIPS layers of `model` in evaluation mode.

  Works for any classifier that sows its layers (PreActResNet / ResNet / WideResNet
  stage outputs, CifarAlexNet / AlexNet conv+ReLU outputs, SmallCNN convs).
  """
  both = features_and_logits_fn(model, variables, layers)
  return lambda x: both(x)[1]


def model_logits_fn(model: nn.Module, variables: Mapping[str, Any]) -> Callable[[Array], Array]:
  """`logits_fn(x) -> (B, K)`: `model` in evaluation mode."""
  variables = _eval_variables(variables)
  return lambda x: model.apply(variables, x, train=False)
