"""DeepAugment's PyTorch EDSR / CAE state dicts -> params of our `EDSR` / `CAE`.

The public weights are `EDSR_Weights/edsr_baseline_x4.pt` (EDSR-PyTorch's
`edsr_baseline_x4` model) and `CAE_Weights/model_final.state` (alexandru-dinu/cae), as
loaded by `DeepAugment/EDSR_distort_imagenet.py` and `DeepAugment/CAE_distort_imagenet.py`
in hendrycks/imagenet-r. Usage:

  sd = load_torch_state_dict("edsr_baseline_x4.pt")   # needs torch
  variables = {"params": edsr_params_from_torch(sd, scale=4)}
  EDSR(scale=4).apply(variables, x)

The two converters do not need torch: values may be torch tensors or arrays; they
return nested dicts of float32 jax arrays.
Conv weights (out, in, kh, kw) -> flax kernels (kh, kw, in, out). Transposed-conv
weights (in, out, kh, kw) -> kernels (kh, kw, out, in) for
`nn.ConvTranspose(transpose_kernel=True)` (no spatial flip: with `transpose_kernel=True`
flax computes the gradient of a conv, which is what PyTorch's `ConvTranspose2d` does).

Key mapping, EDSR (n = num_blocks, inferred from the state dict):
  head.0                  -> head
  body.{i}.body.0 / .2    -> body_{i}/conv1 / conv2      (i < n)
  body.{n}                -> body_conv
  tail.0.0 [, tail.0.2]   -> upsample_0 [, upsample_1]   (scale 2 [, 4])
  tail.1                  -> tail
  sub_mean, add_mean      -> not parameters; checked against our fixed mean shift
Key mapping, CAE:
  e_conv_1.1, e_conv_2.1, e_conv_3.0   -> e_conv_1, e_conv_2, e_conv_3
  {e,d}_block_{k}.1 / .4                -> {e,d}_block_{k}/conv_1 / conv_2
  d_up_conv_{1,2}.0 / .3                -> d_up_conv_{1,2}/conv / deconv (transposed)
  d_up_conv_3.0 / .3                    -> d_up_conv_3/conv_1 / conv_2
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.models.corruption.edsr import DIV2K_RGB_MEAN

Params = dict[str, Any]

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "params")


def to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # torch.Tensor
    value = value.detach().cpu().numpy()
  return np.asarray(value, dtype=np.float32)


def strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Drops a 'module.' prefix (DataParallel / DistributedDataParallel) from every key."""
  out = {}
  for key, value in state_dict.items():
    while key.startswith("module."):
      key = key[len("module."):]
    out[key] = value
  return out


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Loads a PyTorch checkpoint as {key: float32 array} on the CPU.

  Unwraps checkpoints that nest the state dict (under 'state_dict', 'model_state_dict',
  'model', 'net' or 'params') and strips 'module.' prefixes. Loads with
  `weights_only=True` (tensors only, no arbitrary pickled code).

  Raises:
    ImportError: if torch is not installed.
    ValueError: if the file holds no state dict of tensors.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "Loading PyTorch checkpoints needs torch: `pip install torch==2.13.0` "
        "(or install adacorr with the `torch` extra: `pip install adacorr[torch]`).") from e
  obj = torch.load(path, map_location="cpu", weights_only=True)
  for _ in range(3):  # unwrap a few levels of nesting
    if not isinstance(obj, Mapping):
      break
    inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
    if inner is None:
      break
    obj = inner
  if not isinstance(obj, Mapping) or not obj:
    raise ValueError(f"{path!r} does not hold a state dict (got {type(obj).__name__}).")
  obj = strip_prefix(obj)
  bad = [k for k, v in obj.items() if not hasattr(v, "shape")]
  if bad:
    raise ValueError(f"{path!r}: entries that are not tensors: {bad[:10]}.")
  return {k: to_numpy(v) for k, v in obj.items()}


def conv_params(sd: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
  """Conv2d weight (out, in, kh, kw) -> {'kernel': (kh, kw, in, out), 'bias'}."""
  w = to_numpy(sd[prefix + ".weight"])
  if w.ndim != 4:
    raise ValueError(f"{prefix}.weight must be 4-D (out, in, kh, kw), got {w.shape}.")
  return {"kernel": np.transpose(w, (2, 3, 1, 0)), "bias": to_numpy(sd[prefix + ".bias"])}


def _conv_transpose(sd: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
  """ConvTranspose2d weight (in, out, kh, kw) -> {'kernel': (kh, kw, out, in), 'bias'}.

  The layout of `nn.ConvTranspose(transpose_kernel=True)`.
  """
  w = to_numpy(sd[prefix + ".weight"])
  if w.ndim != 4:
    raise ValueError(f"{prefix}.weight must be 4-D (in, out, kh, kw), got {w.shape}.")
  return {"kernel": np.transpose(w, (2, 3, 1, 0)), "bias": to_numpy(sd[prefix + ".bias"])}


def check_state_dict_keys(state_dict: Mapping[str, Any], expected: set[str], ignored: set[str],
                what: str) -> None:
  keys = set(state_dict)
  missing = sorted(expected - keys)
  unexpected = sorted(keys - expected - ignored)
  if missing or unexpected:
    raise ValueError(
        f"The state dict does not match {what}: missing keys {missing}, unexpected keys "
        f"{unexpected}.")


def _check_mean_shift(state_dict: Mapping[str, Any], rgb_range: float) -> None:
  """Checks sub_mean / add_mean (1x1 convs, fixed) against our constant mean shift."""
  mean = np.asarray(DIV2K_RGB_MEAN, np.float32)
  for name, sign in (("sub_mean", -1.0), ("add_mean", 1.0)):
    if name + ".weight" in state_dict:
      w = to_numpy(state_dict[name + ".weight"]).reshape(-1)
      if w.size != 9 or not np.allclose(w, np.eye(3, dtype=np.float32).reshape(-1),
                                         atol=1e-5):
        raise ValueError(
            f"{name}.weight is not the identity (rgb_std != 1?): {w.tolist()}; our EDSR "
            "only supports the fixed mean shift x - rgb_range * DIV2K mean.")
    if name + ".bias" in state_dict:
      b = to_numpy(state_dict[name + ".bias"])
      want = sign * rgb_range * mean
      if b.shape != want.shape or not np.allclose(b, want, rtol=1e-4, atol=1e-4):
        raise ValueError(
            f"{name}.bias = {b.tolist()} differs from the fixed {sign:+.0f} * rgb_range * "
            f"DIV2K mean = {want.tolist()} (rgb_range={rgb_range}); pass the rgb_range the "
            "weights were trained with (and to EDSR).")


def edsr_params_from_torch(state_dict: Mapping[str, Any], *, scale: int = 4,
                           rgb_range: float = 255.0) -> Params:
  """Converts an EDSR-PyTorch (EDSR-baseline) state dict into `EDSR(scale=scale)` params.

  The number of residual blocks is inferred from the keys (use
  `EDSR(num_blocks=...)` to match). `rgb_range` is only used to check the mean-shift
  entries, when present.

  Raises:
    ValueError: naming the missing / unexpected keys if the state dict does not fit an
      EDSR-baseline with this `scale`, or if the mean shift differs from ours.
  """
  if scale not in (2, 4):
    raise ValueError(f"scale must be 2 or 4, got {scale}.")
  sd = strip_prefix(state_dict)
  blocks = sorted({int(m.group(1)) for k in sd
                   if (m := re.fullmatch(r"body\.(\d+)\.body\.0\.weight", k))})
  num_blocks = len(blocks)
  stages = 1 if scale == 2 else 2
  expected = {"head.0", "body.%d" % num_blocks, "tail.1"}
  expected |= {f"body.{i}.body.{j}" for i in range(num_blocks) for j in (0, 2)}
  expected |= {f"tail.0.{2 * s}" for s in range(stages)}
  expected = {f"{p}.{t}" for p in expected for t in ("weight", "bias")}
  ignored = {f"{n}.{t}" for n in ("sub_mean", "add_mean") for t in ("weight", "bias")}
  check_state_dict_keys(sd, expected, ignored, f"EDSR (scale {scale}, {num_blocks} blocks)")
  _check_mean_shift(sd, rgb_range)

  params: Params = {"head": conv_params(sd, "head.0")}
  for i in range(num_blocks):
    params[f"body_{i}"] = {"conv1": conv_params(sd, f"body.{i}.body.0"),
                           "conv2": conv_params(sd, f"body.{i}.body.2")}
  params["body_conv"] = conv_params(sd, f"body.{num_blocks}")
  for s in range(stages):
    params[f"upsample_{s}"] = conv_params(sd, f"tail.0.{2 * s}")
  params["tail"] = conv_params(sd, "tail.1")
  return jax.tree_util.tree_map(jnp.asarray, params)


_CAE_CONVS = {  # torch prefix -> flax path
    "e_conv_1.1": ("e_conv_1",),
    "e_conv_2.1": ("e_conv_2",),
    "e_conv_3.0": ("e_conv_3",),
    **{f"{p}_block_{k}.{i}": (f"{p}_block_{k}", name)
       for p in ("e", "d") for k in (1, 2, 3) for i, name in ((1, "conv_1"), (4, "conv_2"))},
    "d_up_conv_1.0": ("d_up_conv_1", "conv"),
    "d_up_conv_2.0": ("d_up_conv_2", "conv"),
    "d_up_conv_3.0": ("d_up_conv_3", "conv_1"),
    "d_up_conv_3.3": ("d_up_conv_3", "conv_2"),
}
_CAE_DECONVS = {
    "d_up_conv_1.3": ("d_up_conv_1", "deconv"),
    "d_up_conv_2.3": ("d_up_conv_2", "deconv"),
}


def cae_params_from_torch(state_dict: Mapping[str, Any]) -> Params:
  """Converts a `cae_32x32x32_zero_pad_bin.CAE` state dict into `CAE` params.

  Raises:
    ValueError: naming the missing / unexpected keys if the state dict does not fit.
  """
  sd = strip_prefix(state_dict)
  prefixes = list(_CAE_CONVS) + list(_CAE_DECONVS)
  expected = {f"{p}.{t}" for p in prefixes for t in ("weight", "bias")}
  check_state_dict_keys(sd, expected, set(), "the CAE (cae_32x32x32_zero_pad_bin)")
  params: Params = {}
  for table, convert in ((_CAE_CONVS, conv_params), (_CAE_DECONVS, _conv_transpose)):
    for prefix, path in table.items():
      node = params
      for part in path[:-1]:
        node = node.setdefault(part, {})
      node[path[-1]] = convert(sd, prefix)
  return jax.tree_util.tree_map(jnp.asarray, params)
