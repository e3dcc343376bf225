"""pyautoattack's CIFAR-10 ResNet-18 (`examples/model_test.pt`) in flax, and test images.

pyautoattack 0.2.0 (fra31/auto-attack on PyPI) ships an adversarially trained CIFAR-10
ResNet-18 in `pyautoattack/examples/model_test.pt`, its architecture in
`pyautoattack/examples/resnet.py` (the kuangliu/pytorch-cifar layout): a 3x3 stride-1
stem conv (no bias) - BN - ReLU, four stages of two post-activation `BasicBlock`s
(conv3x3(stride)-BN-ReLU, conv3x3-BN, + shortcut (conv1x1(stride)-BN where the shape
changes), ReLU) of widths 64, 128, 256, 512 and strides 1, 2, 2, 2, `avg_pool2d(out, 4)`
(the global mean for 32x32 inputs: stage 4 is 4x4), and a linear layer. The model takes
[0, 1] NCHW images and does NOT normalise them (its `eval.py` feeds `ToTensor()` output).

That is exactly `adacorr.models.resnet_cifar.CifarResNet(stage_sizes=(2, 2, 2, 2),
block='basic')` with the identity normalisation (`mean=(0, 0, 0)`, `std=(1, 1, 1)`;
our models normalise inside), so `flax_resnet18()` is that module and
`variables_from_torch` maps the state dict onto it (evaluation mode: BatchNorm uses the
running statistics; both frameworks use BN epsilon 1e-5):

  conv1 / bn1                         -> stem_conv / stem_bn
  layer{s}.{b}.conv1 / bn1 / conv2 / bn2
                                      -> stage{s}_block{b+1}/conv1 / bn1 / conv2 / bn2
  layer{s}.{b}.shortcut.0 / .1        -> stage{s}_block{b+1}/shortcut_conv / shortcut_bn
  linear                              -> head
  conv weight (O, I, kh, kw)          -> kernel (kh, kw, I, O)
  BN weight, bias, running_mean, running_var
                                      -> params scale, bias; batch_stats mean, var
  linear weight (O, I)                -> kernel (I, O)
  num_batches_tracked                 -> ignored

`natural_images(n)` gives deterministic 32x32 RGB patches of scikit-image's bundled
photographs (astronaut, chelsea, coffee, rocket), float32 in [0, 1], NHWC.

Usage (needs torch and pyautoattack for the checkpoint and the torch model):

  from benchmarks import torch_resnet18 as tr
  torch_model = tr.torch_resnet18()                 # eval mode, CPU
  module, variables = tr.flax_resnet18(), tr.variables_from_torch(torch_model.state_dict())
  logits = module.apply(variables, x_nhwc)
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from adacorr.models.resnet_cifar import CifarResNet

STAGE_SIZES = (2, 2, 2, 2)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def _np(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # torch.Tensor
    value = value.detach().cpu().numpy()
  return np.asarray(value, np.float32)


def checkpoint_path() -> str:
  """The path of pyautoattack's `examples/model_test.pt` (needs pyautoattack)."""
  import pyautoattack  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(pyautoattack.__file__), "examples", "model_test.pt")


def torch_resnet18(path: str | None = None):
  """pyautoattack's `examples/resnet.py` ResNet18 with `model_test.pt` loaded, eval mode."""
  import torch  # pylint: disable=g-import-not-at-top
  from pyautoattack.examples import resnet  # pylint: disable=g-import-not-at-top
  model = resnet.ResNet18()
  sd = torch.load(path or checkpoint_path(), map_location="cpu", weights_only=True)
  model.load_state_dict(sd)
  return model.eval()


def flax_resnet18(num_classes: int = 10) -> CifarResNet:
  """Our module for the same network: basic blocks x (2, 2, 2, 2), no input normalisation."""
  return CifarResNet(stage_sizes=STAGE_SIZES, block="basic", num_classes=num_classes,
                     mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _conv(sd, key):
  w = _np(sd[key + ".weight"])
  if w.ndim != 4:
    raise ValueError(f"{key}.weight must be 4-D (O, I, kh, kw), got {w.shape}.")
  return {"kernel": jnp.asarray(np.transpose(w, (2, 3, 1, 0)))}


def _bn(sd, key):
  params = {"scale": jnp.asarray(_np(sd[key + ".weight"])),
            "bias": jnp.asarray(_np(sd[key + ".bias"]))}
  stats = {"mean": jnp.asarray(_np(sd[key + ".running_mean"])),
           "var": jnp.asarray(_np(sd[key + ".running_var"]))}
  return params, stats


def variables_from_torch(state_dict: Mapping[str, Any]) -> dict:
  """A kuangliu-layout ResNet state dict (basic blocks) -> flax variables
  {'params', 'batch_stats'} for `flax_resnet18()` (or any `CifarResNet(block='basic')`
  with the state dict's stage sizes). Values may be torch tensors or arrays.

  Raises:
    ValueError: on missing or unexpected keys (other than `num_batches_tracked`) or a
      weight of the wrong rank.
  """
  sd = {k[len("module."):] if k.startswith("module.") else k: v
        for k, v in state_dict.items()}
  used = set()
  params, stats = {}, {}

  def take(prefix, kind):
    keys = ([prefix + ".weight"] if kind == "conv" else
            [prefix + s for s in (".weight", ".bias", ".running_mean", ".running_var")])
    missing = [k for k in keys if k not in sd]
    if missing:
      raise ValueError(f"the state dict lacks {missing}.")
    used.update(keys)
    used.add(prefix + ".num_batches_tracked")
    return _conv(sd, prefix) if kind == "conv" else _bn(sd, prefix)

  params["stem_conv"] = take("conv1", "conv")
  params["stem_bn"], stats["stem_bn"] = take("bn1", "bn")
  blocks = sorted({(int(m.group(1)), int(m.group(2))) for k in sd
                   for m in [re.match(r"layer(\d)\.(\d+)\.", k)] if m})
  for s, b in blocks:
    src, dst = f"layer{s}.{b}", f"stage{s}_block{b + 1}"
    p, st = {}, {}
    p["conv1"] = take(src + ".conv1", "conv")
    p["bn1"], st["bn1"] = take(src + ".bn1", "bn")
    p["conv2"] = take(src + ".conv2", "conv")
    p["bn2"], st["bn2"] = take(src + ".bn2", "bn")
    if src + ".shortcut.0.weight" in sd:
      p["shortcut_conv"] = take(src + ".shortcut.0", "conv")
      p["shortcut_bn"], st["shortcut_bn"] = take(src + ".shortcut.1", "bn")
    params[dst], stats[dst] = p, st
  if "linear.weight" not in sd or "linear.bias" not in sd:
    raise ValueError("the state dict lacks linear.weight / linear.bias.")
  params["head"] = {"kernel": jnp.asarray(_np(sd["linear.weight"]).T),
                    "bias": jnp.asarray(_np(sd["linear.bias"]))}
  used.update(("linear.weight", "linear.bias"))
  extra = sorted(set(sd) - used)
  if extra:
    raise ValueError(f"unexpected keys in the state dict: {extra[:10]}.")
  return {"params": params, "batch_stats": stats}


def natural_images(n: int = 64, size: int = 32) -> np.ndarray:
  """(n, size, size, 3) float32 in [0, 1]: patches of scikit-image's bundled photographs.

  Per photograph (astronaut, chelsea, coffee, rocket, in turn) a 4 x 4 grid of square
  windows of side half the photograph's shorter side, evenly spaced from corner to
  corner (overlapping), each resized to `size` x `size` with anti-aliasing; patch i is
  window i // 4 of photograph i % 4. Deterministic; n <= 64.
  """
  import skimage.data  # pylint: disable=g-import-not-at-top
  from skimage.transform import resize  # pylint: disable=g-import-not-at-top
  if not 1 <= n <= 16 * len(PHOTOS):
    raise ValueError(f"n={n} must be in [1, {16 * len(PHOTOS)}].")
  per_photo = []
  for name in PHOTOS:
    img = getattr(skimage.data, name)()[..., :3].astype(np.float32) / 255.0
    h, w = img.shape[:2]
    side = min(h, w) // 2
    patches = []
    for top in np.linspace(0, h - side, 4).round().astype(int):
      for left in np.linspace(0, w - side, 4).round().astype(int):
        crop = img[top:top + side, left:left + side]
        patches.append(resize(crop, (size, size, 3), order=1, anti_aliasing=True,
                              preserve_range=True))
    per_photo.append(patches)
  out = [per_photo[i % len(PHOTOS)][i // len(PHOTOS)] for i in range(n)]
  return np.clip(np.stack(out), 0.0, 1.0).astype(np.float32)
