"""AdversarialAugment training (AdA; Calian et al. 2022) as a `LossFn` factory.

The data pipeline of App. E.5, stage by stage, and where each one lives:

  1. clean or DeepAugment-processed sample   the data source (`config.deepaugment_dirs`)
  2. standard augmentation (pad-crop + flip)  the train step's `augment_fn`
  3. AdA                                      `ada_stage` (this module)
  4. SSIM line search                         `ada_stage` (this module)
  5. AugMix                                   `augmix` of `make_ada` (`methods.augmix`)

then the classifier step on the result (Algorithm 1 trains on the AdA images only).

The attack uses the classifier in evaluation mode (frozen BatchNorm statistics, as the
attack API requires) and no gradient flows from it into the classifier's parameters.
AdA(All): with several backbones, each one corrupts an equal, contiguous share of the
batch (App. E.4).

A backbone is a pretrained corruption net. In a config it is a dict (see
`load_backbone`): `net` (a name in `adacorr.models.corruption.CORRUPTION_NETS`), and
where its weights come from: `workdir` (a run of `experiments/train_corruption_net.py`;
with `pretrain`, a corruption-net config, it is trained there first if absent),
`torch_weights` (DeepAugment's published EDSR / CAE PyTorch files), or `init='random'`
(untrained weights: only for tests and benchmarks). Optional `nu`, `num_steps`,
`step_size` override the method's values for that backbone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from adacorr.attacks import adversarial_augment as ada_attack
from adacorr.methods import augmix as augmix_lib
from adacorr.methods.adversarial_training import (
    accuracy, check_nonnegative, cross_entropy, method_kwargs, train_apply)

PyTree = Any
PostAugment = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A pretrained corruption net ready for AdA.

  Attributes:
    name: what to call it in metrics and tables (e.g. 'edsr').
    apply: `(params, images (b, H, W, C)) -> images` in [0, 1].
    params: the pretrained parameters phi (the blocks AdA perturbs).
    nu, num_steps, step_size: per-backbone overrides (None: the method's values).
  """
  name: str
  apply: Callable[[PyTree, jax.Array], jax.Array]
  params: PyTree
  nu: float | None = None
  num_steps: int | None = None
  step_size: float | None = None


def backbone_from_net(name: str, net: nn.Module, variables: Mapping[str, Any],
                      **overrides: Any) -> Backbone:
  """A `Backbone` from a corruption net and its variables ('params' plus any state
  collections, e.g. the VQ-VAE's 'vq_ema', which are held fixed)."""
  variables = dict(variables)
  if "params" not in variables:
    raise ValueError(f"variables of backbone {name!r} have no 'params' collection.")
  state = {k: v for k, v in variables.items() if k != "params"}

  def apply(params, images):
    return net.apply({"params": params, **state}, images, train=False)

  return Backbone(name=name, apply=apply, params=variables["params"], **overrides)


def load_backbone(spec: Mapping[str, Any], *, image_shape: Sequence[int] | None = None,
                  seed: int = 0) -> Backbone:
  """Builds a `Backbone` from a config dict (see the module docstring).

  Args:
    spec: {'net', 'net_kwargs'?, 'name'?, one of 'workdir' (+ 'pretrain'?) /
      'torch_weights' / init='random', 'nu'?, 'num_steps'?, 'step_size'?}.
    image_shape: (H, W, C) of the data, needed for `init='random'`.
    seed: seed of the random init.

  Raises:
    ValueError: for an unknown net or a spec that names no weights.
    FileNotFoundError: for a `workdir` with no finished run and no `pretrain` config.
  """
  from adacorr.models import corruption  # pylint: disable=import-outside-toplevel
  spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
  if "net" not in spec:
    raise ValueError(f"backbone spec {spec} must name its 'net' "
                     f"(one of {sorted(corruption.CORRUPTION_NETS)}).")
  name = spec.get("name") or spec["net"]
  overrides = {k: spec[k] for k in ("nu", "num_steps", "step_size") if spec.get(k) is not None}
  net_kwargs = dict(spec.get("net_kwargs") or {})
  if spec.get("workdir"):
    from adacorr.train import corruption_pretraining  # pylint: disable=import-outside-toplevel
    if spec.get("pretrain") is not None:
      pretrain = spec["pretrain"]
      if not isinstance(pretrain, ml_collections.ConfigDict):  # e.g. read from config.json
        pretrain = ml_collections.ConfigDict(dict(pretrain))
      net, variables = corruption_pretraining.ensure_pretrained(pretrain, spec["workdir"])
    else:
      net, variables = corruption_pretraining.load_corruption_net(spec["workdir"])
    if type(net) is not corruption.CORRUPTION_NETS.get(spec["net"]):
      raise ValueError(f"backbone {name!r}: {spec['workdir']} holds a "
                       f"{type(net).__name__}, not a {spec['net']!r} net.")
  elif spec.get("torch_weights"):
    from adacorr.models.corruption import convert_torch  # pylint: disable=import-outside-toplevel
    state_dict = convert_torch.load_torch_state_dict(os.path.expanduser(spec["torch_weights"]))
    if spec["net"] == "edsr":
      net_kwargs.setdefault("scale", 4)
      params = convert_torch.edsr_params_from_torch(state_dict, scale=net_kwargs["scale"])
    elif spec["net"] == "cae":
      params = convert_torch.cae_params_from_torch(state_dict)
    else:
      raise ValueError(f"torch_weights are supported for 'edsr' and 'cae' (DeepAugment's "
                       f"published nets), not {spec['net']!r}.")
    net = corruption.get_corruption_net(spec["net"], **net_kwargs)
    variables = {"params": params}
  elif spec.get("init") == "random":
    if image_shape is None:
      raise ValueError("init='random' needs the image_shape.")
    net = corruption.get_corruption_net(spec["net"], **net_kwargs)
    variables = dict(jax.jit(net.init)(jax.random.PRNGKey(seed),
                                       jnp.zeros((1,) + tuple(image_shape), jnp.float32)))
  else:
    raise ValueError(f"backbone spec {spec} names no weights: give 'workdir' (a pretrained "
                     "run, optionally with a 'pretrain' config), 'torch_weights', or "
                     "init='random'.")
  return backbone_from_net(name, net, variables, **overrides)


def split_sizes(batch_size: int, num_backbones: int) -> list[int]:
  """Equal contiguous shares of the batch (the first ones one larger if uneven)."""
  return [len(a) for a in np.array_split(np.arange(batch_size), num_backbones)]


def resolve_chunk_size(chunk_size: int | str | None) -> int | None:
  """'auto': one example per nano-batch on CPU (XLA:CPU's grouped convolutions, which a
  vmap over per-example weights becomes, are ~20x slower than a loop of single-example
  passes there), the whole batch vmapped at once on GPU/TPU."""
  if isinstance(chunk_size, str):  # configs hold a string: 'auto', 'none' or digits
    if chunk_size.lower() == "auto":
      return 1 if jax.default_backend() == "cpu" else None
    if chunk_size.lower() == "none":
      return None
    if not chunk_size.isdigit():
      raise ValueError(f"chunk_size={chunk_size!r} must be 'auto', None or a positive int.")
    chunk_size = int(chunk_size)
  return None if chunk_size is None else int(chunk_size)


def ada_stage(backbones: Sequence[Backbone], *, nu: float = 0.015, num_steps: int = 10,
              step_size: float | None = None, ssim_threshold: float | None = 0.3,
              ssim_strict: bool = True, chunk_size: int | str | None = "auto",
              chunk_loop: str = "map"):
  """Stages 3-4 of the pipeline: `stage(logits_fn, x, y, key) -> (x_ada, metrics)`.

  `logits_fn` is the classifier in eval mode; `x` (B, H, W, C) in [0, 1] after standard
  augmentation; the result is stop-gradient-ed. `ssim_threshold=None` skips the line
  search. Metrics: mean SSIM(x, .) before and after the line search, and the fraction
  of images the line search pulled back.
  """
  if not backbones:
    raise ValueError("backbones must name at least one corruption net.")
  chunk_size = resolve_chunk_size(chunk_size)
  ada_attack.check_nu(nu)
  ada_attack.check_num_steps(num_steps)
  for b in backbones:
    if b.nu is not None:
      ada_attack.check_nu(b.nu)
    if b.num_steps is not None:
      ada_attack.check_num_steps(b.num_steps)

  def stage(logits_fn, x, y, key):
    sizes = split_sizes(x.shape[0], len(backbones))
    keys = jax.random.split(key, len(backbones))
    outs, start = [], 0
    for b, size, k in zip(backbones, sizes, keys):
      sl = slice(start, start + size)
      start += size
      if size == 0:
        continue
      outs.append(ada_attack.ada(
          b.apply, b.params, logits_fn, x[sl], y[sl], k,
          nu=b.nu if b.nu is not None else nu,
          num_steps=b.num_steps if b.num_steps is not None else num_steps,
          step_size=b.step_size if b.step_size is not None else step_size,
          chunk_size=chunk_size, chunk_loop=chunk_loop))
    x_ada = jax.lax.stop_gradient(jnp.concatenate(outs, axis=0))
    ssim_before = ada_attack.ssim(x, x_ada)
    metrics = {"ssim_before_line_search": jnp.mean(ssim_before)}
    if ssim_threshold is not None:
      x_ada = ada_attack.ssim_line_search(x, x_ada, threshold=ssim_threshold,
                                          strict=ssim_strict)
      metrics["line_search_fraction"] = jnp.mean(ssim_before < ssim_threshold)
    metrics["ssim"] = jnp.mean(ada_attack.ssim(x, x_ada))
    return x_ada, metrics

  return stage


def make_ada(model: nn.Module, config: Any = None, *,
             backbones: Sequence[Backbone | Mapping[str, Any]] = (),
             nu: float = 0.015, num_steps: int = 10, step_size: float | None = None,
             ssim_threshold: float | None = 0.3, ssim_strict: bool = True,
             chunk_size: int | str | None = "auto", chunk_loop: str = "map",
             augmix: Mapping[str, Any] | None = None,
             post_augment: PostAugment | None = None):
  """AdA training: CE of the classifier (train mode) on the AdA images.

  Defaults are the paper's CIFAR-10 settings (nu 0.015, 10 steps, step size 1/4 of the
  median block radius, SSIM threshold 0.3). `config.method_kwargs` overrides them;
  `backbones` there are spec dicts (`load_backbone`), built with the dataset's image
  shape from `config.dataset` when `init='random'`.

  Args:
    model: the classifier.
    backbones: `Backbone`s or spec dicts; several = AdA(All) (equal shares of the batch).
    chunk_size: examples per nano-batch (`adacorr.attacks.ada`); 'auto' (default): 1 on
      CPU, the whole batch on GPU/TPU (see `resolve_chunk_size`).
    augmix: stage 5 of the pipeline, AugMix on the AdA images (a dict of AugMix
      hyperparameters, see `adacorr.methods.augmix.check_augmix_kwargs`; with
      `jsd=True` the loss is CE on the AdA images + 12 * JSD with two AugMix views of
      them, else CE on AugMix(AdA images)); None: no AugMix.
    post_augment: any other `(images, key) -> images` last stage (not with `augmix`).

  The LossFn's metrics: accuracy (on the AdA images), ssim, ssim_before_line_search,
  line_search_fraction (and 'jsd' with AugMix + JSD).
  """
  kw = dict(backbones=backbones, nu=nu, num_steps=num_steps, step_size=step_size,
            ssim_threshold=ssim_threshold, ssim_strict=ssim_strict, chunk_size=chunk_size,
            chunk_loop=chunk_loop, augmix=augmix)
  kw.update(method_kwargs(config))
  augmix = augmix_lib.check_augmix_kwargs(kw["augmix"])
  if augmix is not None and post_augment is not None:
    raise ValueError("give either augmix or post_augment, not both.")
  image_shape, seed = None, 0
  if config is not None and config.get("dataset") is not None:
    from adacorr import data as data_lib  # pylint: disable=import-outside-toplevel
    info = data_lib.DATASETS.get(config.dataset)
    image_shape = info.image_shape if info is not None else None
    seed = int(config.get("seed", 0))
  resolved = []
  for i, b in enumerate(kw["backbones"]):
    if isinstance(b, Backbone):
      resolved.append(b)
    else:
      resolved.append(load_backbone(b, image_shape=image_shape, seed=seed + i))
      logging.info("AdA backbone %d: %s", i, resolved[-1].name)
  if kw["step_size"] is not None:
    check_nonnegative("step_size", float(kw["step_size"]))
  stage = ada_stage(
      resolved, nu=float(kw["nu"]), num_steps=int(kw["num_steps"]),
      step_size=None if kw["step_size"] is None else float(kw["step_size"]),
      ssim_threshold=None if kw["ssim_threshold"] is None else float(kw["ssim_threshold"]),
      ssim_strict=bool(kw["ssim_strict"]),
      chunk_size=kw["chunk_size"], chunk_loop=kw["chunk_loop"])

  def loss_fn(params, batch_stats, batch, key):
    ada_key, post_key, dropout_key = jax.random.split(key, 3)
    x, y = batch["image"], batch["label"]
    frozen = {"params": jax.lax.stop_gradient(params), "batch_stats": batch_stats}

    def logits_fn(images):
      return model.apply(frozen, images, train=False)

    x_train, metrics = stage(logits_fn, x, y, ada_key)
    if augmix is not None:
      loss, new_stats, final = augmix_lib.augmix_objective(
          model, params, batch_stats, x_train, y, post_key, augmix)
      return loss, {"batch_stats": new_stats, "metrics": dict(metrics, **final)}
    if post_augment is not None:
      x_train = post_augment(x_train, post_key)
    logits, new_stats = train_apply(model, params, batch_stats, x_train, dropout_key)
    metrics = dict(metrics, accuracy=accuracy(logits, y))
    return cross_entropy(logits, y), {"batch_stats": new_stats, "metrics": metrics}

  return loss_fn
