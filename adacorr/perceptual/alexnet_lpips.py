"""ImageNet AlexNet LPIPS: torchvision / `lpips` weights -> `features_fn` and channel weights.

Two definitions share the trunk (torchvision's AlexNet, features after each of its five
conv+ReLUs):
  * Laidlaw et al. 2021 (PAT): no learned weights; `d = lpips_distance(features_fn, x1, x2)`.
  * Zhang et al. 2018 (the `lpips` package, v0.1): per-channel weights w_l from
    `weights/v0.1/alex.pth`; `d = weighted_lpips_distance(features_fn, x1, x2, w)` and
    `d ** 2 == lpips.LPIPS(net='alex')(x1, x2, normalize=True)`.
Usage:

  features_fn, w = load_alexnet_lpips("alexnet-owt-7be5be79.pth", "alex.pth")
  d = jax.jit(lambda a, b: weighted_lpips_distance(features_fn, a, b, w))(x1, x2)

Input scaling: PAT normalises [0, 1] images with the ImageNet mean/std; `lpips` maps them
to [-1, 1] and applies its ScalingLayer, (2x - 1 - shift) / scale, i.e. mean (1 + shift) / 2
and std scale / 2 (`lpips_input_scaling=True`). These equal the ImageNet statistics
(0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) up to float rounding, so both choices give
the same features to ~1e-6.

Converters accept torch tensors or arrays (no torch needed); reading .pth files needs torch.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.core import checks
from adacorr.models.alexnet import AlexNet
from adacorr.models.corruption.convert_torch import (
    check_state_dict_keys, conv_params, strip_prefix, to_numpy, load_torch_state_dict)
from adacorr.perceptual.features import model_features_fn
from adacorr.perceptual.lpips import embedding_distance, normalize_features

Array = jax.Array
FeaturesFn = Callable[[Array], Sequence[Array]]

# lpips v0.1 ScalingLayer, applied to 2x - 1.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_MEAN = tuple((1.0 + s) / 2.0 for s in LPIPS_SHIFT)
LPIPS_STD = tuple(s / 2.0 for s in LPIPS_SCALE)

LPIPS_CHANNELS = (64, 192, 384, 256, 256)

# torchvision `features.{i}` index of each conv -> (flax module, weight shape).
_CONVS = {0: ("Conv_0", (64, 3, 11, 11)), 3: ("Conv_1", (192, 64, 5, 5)),
          6: ("Conv_2", (384, 192, 3, 3)), 8: ("Conv_3", (256, 384, 3, 3)),
          10: ("Conv_4", (256, 256, 3, 3))}
# torchvision `classifier.{i}` index -> (flax module, in features); out is 4096 / classes.
_DENSES = {1: ("fc1", 9216), 4: ("fc2", 4096), 6: ("head", 4096)}
# The `lpips` package's trunk: `net.slice{k}.{i}` holds torchvision's `features.{i}`.
_LPIPS_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
_LPIPS_EXTRA = re.compile(r"(scaling_layer\.(shift|scale)|lin\d+\.model\.\d+\.weight)")


def _canonical_trunk_keys(sd: Mapping[str, Any]) -> dict[str, Any]:
  """Renames the `lpips` trunk keys (`[net.]slice{k}.{i}.*`) to torchvision's `features.{i}.*`."""
  rename = {}
  for i, k in _LPIPS_SLICES.items():
    for t in ("weight", "bias"):
      for prefix in ("net.", ""):
        rename[f"{prefix}slice{k}.{i}.{t}"] = f"features.{i}.{t}"
  out: dict[str, Any] = {}
  for key, value in sd.items():
    new = rename.get(key, key)
    if new in out:
      raise ValueError(f"The state dict holds {new!r} twice (as {key!r} too); pass one naming.")
    out[new] = value
  return out


def _check_shape(name: str, value: np.ndarray, shape: tuple[int, ...]) -> None:
  if value.shape != shape:
    raise ValueError(f"{name} has shape {value.shape}, AlexNet needs {shape}.")


def alexnet_params_from_torch(state_dict: Mapping[str, Any], *,
                              classifier: bool | None = None) -> dict[str, Any]:
  """Converts a torchvision AlexNet state dict into variables {'params': ...} for `AlexNet`.

  Accepts torchvision's keys (`features.{0,3,6,8,10}.*`, `classifier.{1,4,6}.*`) or the
  `lpips` package's trunk keys (`net.slice{1..5}.{i}.*`, also without `net.`; its
  `lin*` / `scaling_layer.*` entries are ignored). 'module.' prefixes are dropped.

  Args:
    state_dict: {key: tensor or array}.
    classifier: convert `classifier.*` (True: required), drop it (False: variables for
      `AlexNet(features_only=True)`), or None: True iff any `classifier.` key is present.
  Returns:
    {'params': ...} float32; with the classifier, use `AlexNet(num_classes=K)` with K the
    rows of `classifier.6.weight`.
  Raises:
    ValueError: naming missing / unexpected keys or wrongly shaped entries.
  """
  sd = _canonical_trunk_keys(strip_prefix(state_dict))
  has_classifier = any(k.startswith("classifier.") for k in sd)
  if classifier is None:
    classifier = has_classifier
  ignored = {k for k in sd if _LPIPS_EXTRA.fullmatch(k)}
  if not classifier:
    ignored |= {k for k in sd if k.startswith("classifier.")}
  prefixes = [f"features.{i}" for i in _CONVS]
  if classifier:
    prefixes += [f"classifier.{i}" for i in _DENSES]
  expected = {f"{p}.{t}" for p in prefixes for t in ("weight", "bias")}
  check_state_dict_keys(sd, expected, ignored, "torchvision's AlexNet" +
              ("" if classifier else " trunk (features.*)"))

  params: dict[str, Any] = {}
  for i, (name, shape) in _CONVS.items():
    w = to_numpy(sd[f"features.{i}.weight"])
    _check_shape(f"features.{i}.weight", w, shape)
    _check_shape(f"features.{i}.bias", to_numpy(sd[f"features.{i}.bias"]), shape[:1])
    params[name] = conv_params(sd, f"features.{i}")
  if classifier:
    for i, (name, fan_in) in _DENSES.items():
      w = to_numpy(sd[f"classifier.{i}.weight"])
      out = w.shape[0] if i == 6 else 4096
      _check_shape(f"classifier.{i}.weight", w, (out, fan_in))
      b = to_numpy(sd[f"classifier.{i}.bias"])
      _check_shape(f"classifier.{i}.bias", b, (out,))
      params[name] = {"kernel": w.T, "bias": b}
  return {"params": jax.tree_util.tree_map(jnp.asarray, params)}


def lpips_linear_weights_from_torch(state_dict: Mapping[str, Any]) -> list[Array]:
  """The `lpips` package's AlexNet linear layers as 5 non-negative float32 arrays (C_l,).

  Reads `lin{0..4}.model.1.weight` (or `.model.0.` when saved without dropout), each of
  shape (1, C_l, 1, 1) with C_l = 64, 192, 384, 256, 256, from e.g. `weights/v0.1/alex.pth`
  or a whole `lpips.LPIPS(net='alex')` state dict (its trunk entries are ignored).

  Raises:
    ValueError: naming missing / unexpected keys, wrong shapes or negative weights.
  """
  sd = strip_prefix(state_dict)
  keys = {}
  for l in range(len(LPIPS_CHANNELS)):
    found = [k for k in (f"lin{l}.model.1.weight", f"lin{l}.model.0.weight") if k in sd]
    if len(found) > 1:
      raise ValueError(f"The state dict holds both {found}; pass one.")
    keys[l] = found[0] if found else f"lin{l}.model.1.weight"
  ignored = {k for k in sd if k.startswith(("net.", "scaling_layer."))}
  check_state_dict_keys(sd, set(keys.values()), ignored, "the lpips AlexNet linear layers (lin0..lin4)")
  weights = []
  for l, c in enumerate(LPIPS_CHANNELS):
    w = to_numpy(sd[keys[l]])
    _check_shape(keys[l], w, (1, c, 1, 1))
    if np.any(w < 0):
      raise ValueError(f"{keys[l]} has negative entries (min {w.min():.3g}); LPIPS weights "
                       "must be non-negative.")
    weights.append(jnp.asarray(w.reshape(c)))
  return weights


def alexnet_lpips_features_fn(variables: Mapping[str, Any], *,
                              lpips_input_scaling: bool = False) -> FeaturesFn:
  """`features_fn(x) -> [f_1..f_5]`: AlexNet's five conv+ReLU maps in evaluation mode.

  Args:
    variables: `AlexNet` variables, with or without the classifier (it is not run).
    lpips_input_scaling: normalise like the `lpips` package ((2x - 1 - shift) / scale)
      instead of with the ImageNet mean/std (PAT); the two agree to float rounding.
  Returns:
    fn mapping images (B, H, W, 3) in [0, 1], H, W >= 31, to float32 maps
    (B, H_l, W_l, C_l) with C_l = 64, 192, 384, 256, 256 (55, 27, 13, 13, 13 px at 224).
  """
  params = dict(dict(variables)["params"])
  params = {k: v for k, v in params.items() if k not in {n for n, _ in _DENSES.values()}}
  kwargs = dict(mean=LPIPS_MEAN, std=LPIPS_STD) if lpips_input_scaling else {}
  model = AlexNet(features_only=True, **kwargs)
  return model_features_fn(model, {"params": params})


def _load(weights: Any, name: str) -> Mapping[str, Any]:
  if isinstance(weights, (str, os.PathLike)):
    if not os.path.exists(weights):
      raise ValueError(f"{name}={os.fspath(weights)!r} does not exist.")
    return load_torch_state_dict(os.fspath(weights))
  if isinstance(weights, Mapping):
    return weights
  raise ValueError(f"{name} must be a path to a .pth file or a state dict, got "
                   f"{type(weights).__name__}.")


def load_alexnet_lpips(torch_weights: Any = None, lpips_weights: Any = None, *,
                       lpips_input_scaling: bool | None = None
                       ) -> tuple[FeaturesFn, list[Array] | None]:
  """AlexNet LPIPS from weight files: `(features_fn, channel_weights)`.

  Args:
    torch_weights: torchvision AlexNet weights (e.g. `alexnet-owt-7be5be79.pth`) or a
      `lpips.LPIPS` state dict, as a path (read with torch) or a state dict. None: a
      randomly initialised trunk (seed 0), with a warning.
    lpips_weights: the `lpips` linear layers (`weights/v0.1/alex.pth`), path or state
      dict; None: channel_weights is None (PAT's unweighted LPIPS).
    lpips_input_scaling: see `alexnet_lpips_features_fn`; None: True iff lpips_weights
      is given.
  Returns:
    features_fn for images (B, H, W, 3) in [0, 1], and 5 arrays (C_l,) or None; pass
    both to `weighted_lpips_distance`.
  Raises:
    ImportError: a path is given and torch is not installed.
    ValueError: a path does not exist or the state dicts do not fit.
  """
  if lpips_input_scaling is None:
    lpips_input_scaling = lpips_weights is not None
  if torch_weights is None:
    warnings.warn("load_alexnet_lpips: no torch_weights given; using a randomly "
                  "initialised AlexNet trunk, whose distances are not the published ones.",
                  stacklevel=2)
    variables = AlexNet(features_only=True).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 31, 31, 3), jnp.float32))
    variables = {"params": variables["params"]}
  else:
    variables = alexnet_params_from_torch(_load(torch_weights, "torch_weights"),
                                          classifier=False)  # not run for LPIPS
  channel_weights = None
  if lpips_weights is not None:
    channel_weights = lpips_linear_weights_from_torch(_load(lpips_weights, "lpips_weights"))
  return (alexnet_lpips_features_fn(variables, lpips_input_scaling=lpips_input_scaling),
          channel_weights)


def weighted_lpips_distance(features_fn: FeaturesFn, x1: Array, x2: Array,
                            channel_weights: Sequence[Array] | None = None) -> Array:
  """Per-example LPIPS distance (B,) with optional per-channel weights [w_l (C_l,)].

  With the `lpips` package's weights, d ** 2 is Zhang et al.'s LPIPS value; with None it
  equals `lpips_distance(features_fn, x1, x2)` (Laidlaw et al.). Images (B, H, W, C) in
  [0, 1], equal shapes.

  Raises:
    ValueError: if the batches are not rank 4, differ in shape, or (when concrete) lie
      outside [0, 1], or channel_weights do not fit the features.
  """
  checks.check_images(x1, "x1")
  checks.check_images(x2, "x2")
  checks.check_same_shape(x1, x2, ("x1", "x2"))
  return embedding_distance(normalize_features(features_fn(x1), channel_weights),
                            normalize_features(features_fn(x2), channel_weights))
