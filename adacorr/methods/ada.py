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

A backbone is a pretrained corruption net (`Backbone`). In a config it is a dict that the
run layer resolves (`adacorr.run.corruption_nets.load_backbone`): `net` (a name in
`adacorr.models.corruption.CORRUPTION_NETS`), and
where its weights come from: `workdir` (a run of `experiments/train_corruption_net.py`;
with `pretrain`, a corruption-net config, it is trained there first if absent),
`torch_weights` (DeepAugment's published EDSR / CAE PyTorch files), or `init='random'`
(untrained weights: only for tests and benchmarks). Optional `nu`, `num_steps`,
`step_size` override the method's values for that backbone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adacorr.attacks import adversarial_augment as ada_attack
from adacorr.core.checks import check_choice, check_steps
from adacorr.methods import augmix as augmix_lib
from adacorr.methods.common import accuracy, cross_entropy, train_apply

PyTree = Any
PostAugment = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A pretrained corruption net ready for AdA.

  Attributes:
    name: what to call it in metrics and tables (e.g. 'edsr').
    apply: `(params, images (b, H, W, C)) -> images`, ideally in [0, 1] (AdA clips its
      output to [0, 1] either way, see `adacorr.attacks.adversarial_augment`).
    params: the pretrained parameters phi (the blocks AdA perturbs).
    nu, num_steps, step_size: per-backbone overrides (None: the method's values).
  """
  name: str
  apply: Callable[[PyTree, jax.Array], jax.Array]
  params: PyTree
  nu: float | None = None
  num_steps: int | None = None
  step_size: float | None = None


def check_backbone(backbone, name: str = "backbone") -> None:
  """ValueError (TypeError for a non-`Backbone`) unless `backbone` is a `Backbone` with
  a callable `apply`, params that are a pytree of finite float arrays, and per-backbone
  overrides that are valid (`nu` in (0, 1), `num_steps` an int >= 0, `step_size` a
  finite number >= 0) or None. Static checks: nothing is traced."""
  if not isinstance(backbone, Backbone):
    raise TypeError(
        f"{name} is a {type(backbone).__name__}, not a Backbone; build it with "
        "backbone_from_net(name, net, variables) or, from a config spec, "
        "adacorr.run.corruption_nets.load_backbone(spec).")
  label = f"{name} ({backbone.name!r})"
  if not callable(backbone.apply):
    raise ValueError(f"{label}.apply must be a function (params, images) -> images, got "
                     f"{type(backbone.apply).__name__}.")
  ada_attack.check_corruption_params(backbone.params, f"{label}.params")
  if backbone.nu is not None:
    ada_attack.check_nu(backbone.nu, f"{label}.nu")
  if backbone.num_steps is not None:
    check_steps(backbone.num_steps, f"{label}.num_steps")
  ada_attack.check_step_size(backbone.step_size, f"{label}.step_size")


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


def split_sizes(batch_size: int, num_backbones: int) -> list[int]:
  """Equal contiguous shares of the batch (the first ones one larger if uneven)."""
  return [len(a) for a in np.array_split(np.arange(batch_size), num_backbones)]


def resolve_chunk_size(chunk_size: int | str | None) -> int | str | None:
  """The global nano-batch size of `chunk_size` (None: the whole batch at once).

  'auto' stays 'auto': `adacorr.attacks.ada` picks, per backbone and batch, the largest
  nano-batch whose estimated memory fits the device's budget
  (`adacorr.attacks.memory`); on CPU one example per device (XLA:CPU's grouped
  convolutions, which a vmap over per-example weights becomes, are ~20x slower than a
  loop of single-example passes there). 'N/device' (e.g. '1/device',
  the paper's ImageNet setting; '8/device' its CIFAR-10 one): N examples per device,
  i.e. N * `jax.device_count()` over all devices. 'none' / None: the whole batch. An int
  or digits: that many examples over all devices.
  """
  if isinstance(chunk_size, str):  # configs hold a string: 'auto', 'none', 'N/device', digits
    text = chunk_size.lower()
    if text == "auto":
      return "auto"
    if text == "none":
      return None
    per_device = text.endswith("/device") and text[:-len("/device")].isdigit()
    if not (text.isdigit() or per_device) or int(text.split("/")[0]) < 1:
      raise ValueError(f"chunk_size={chunk_size!r} must be 'auto', 'none', 'N/device' or a "
                       "positive int.")
    if per_device:
      return int(text.split("/")[0]) * jax.device_count()
    chunk_size = int(text)
  if chunk_size is not None and (isinstance(chunk_size, (bool, np.bool_)) or not isinstance(
      chunk_size, (int, np.integer)) or chunk_size < 1):
    raise ValueError(f"chunk_size={chunk_size!r} must be 'auto', 'none', 'N/device' or a "
                     "positive int.")
  return None if chunk_size is None else int(chunk_size)


def ada_stage(backbones: Sequence[Backbone], *, nu: float = 0.015, num_steps: int = 10,
              step_size: float | None = None, ssim_threshold: float | None = 0.3,
              ssim_strict: bool = False, ssim_reading: str = "similarity",
              blocks: str = "layer", chunk_size: int | str | None = "auto",
              chunk_loop: str = "map", memory_budget: int | None = None):
  """Stages 3-4 of the pipeline: `stage(logits_fn, x, y, key) -> (x_ada, metrics)`.

  `logits_fn` is the classifier in eval mode; `x` (B, H, W, C) in [0, 1] after standard
  augmentation; the result is stop-gradient-ed. `ssim_threshold=None` skips the line
  search. Metrics: mean SSIM(x, .) before and after the line search, and the fraction
  of images the line search pulled back.
  """
  if isinstance(backbones, (Backbone, str, Mapping)) or not backbones:
    raise ValueError(f"backbones must be a non-empty sequence of Backbones (one per "
                     f"corruption net), got {backbones!r:.80}.")
  chunk_size = resolve_chunk_size(chunk_size)
  ada_attack.check_blocks(blocks)
  check_choice(ssim_reading, ada_attack.SSIM_READINGS, "ssim_reading")
  if ssim_threshold is not None:
    ada_attack.check_ssim_threshold(ssim_threshold, ssim_reading, "ssim_threshold")
  ada_attack.check_flag(ssim_strict, "ssim_strict")
  ada_attack.check_nu(nu)
  ada_attack.check_num_steps(num_steps)
  ada_attack.check_step_size(step_size)
  ada_attack.check_memory_budget(memory_budget)
  ada_attack.check_chunk_size(chunk_size)
  check_choice(chunk_loop, ada_attack.CHUNK_LOOPS, "chunk_loop")
  for i, b in enumerate(backbones):
    check_backbone(b, f"backbones[{i}]")

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
          chunk_size=chunk_size, chunk_loop=chunk_loop, blocks=blocks,
          memory_budget=memory_budget))
    x_ada = jax.lax.stop_gradient(jnp.concatenate(outs, axis=0))
    ssim_before = ada_attack.ssim(x, x_ada)
    metrics = {"ssim_before_line_search": jnp.mean(ssim_before)}
    if ssim_threshold is not None:
      x_ada = ada_attack.ssim_line_search(x, x_ada, threshold=ssim_threshold,
                                          strict=ssim_strict, reading=ssim_reading)
      metrics["line_search_fraction"] = jnp.mean(
          ssim_before < ada_attack.min_ssim(ssim_threshold, ssim_reading))
    metrics["ssim"] = jnp.mean(ada_attack.ssim(x, x_ada))
    return x_ada, metrics

  return stage


def make_ada(model: nn.Module, *, backbones: Sequence[Backbone] = (),
             nu: float = 0.015, num_steps: int = 10, step_size: float | None = None,
             ssim_threshold: float | None = 0.3, ssim_strict: bool = False,
             ssim_reading: str = "similarity", blocks: str = "layer",
             chunk_size: int | str | None = "auto", chunk_loop: str = "map",
             memory_budget: int | None = None,
             augmix: Mapping[str, Any] | None = None,
             post_augment: PostAugment | None = None):
  """AdA training: CE of the classifier (train mode) on the AdA images.

  Defaults are the paper's CIFAR-10 settings (nu 0.015, 10 steps, step size 1/4 of the
  median block radius, SSIM threshold 0.3). In an experiment config, `backbones` are
  spec dicts that the run layer turns into `Backbone`s
  (`adacorr.run.corruption_nets.load_backbone`).

  Args:
    model: the classifier.
    backbones: `Backbone`s; several = AdA(All) (equal shares of the batch).
    blocks: the perturbation blocks: 'layer' (default, the paper's "i-th layer": a
      module's kernel and bias together) or 'tensor' (every kernel and bias on its own,
      our earlier default); see `adacorr.attacks.adversarial_augment`.
    ssim_threshold, ssim_strict, ssim_reading: the SSIM line search (App. F): threshold
      t (None: no line search); `ssim_strict=False` (default) is App. F exactly, True
      adds our measured refinement (every output obeys the threshold; earlier
      default); `ssim_reading` 'similarity' (SSIM >= t, default) or 'distance'
      (1 - SSIM <= t). See `adacorr.attacks.ssim_line_search`.
    chunk_size: examples per nano-batch (`adacorr.attacks.ada`); 'auto' (default): the
      largest that fits `memory_budget` bytes per device (None: half the accelerator's
      memory), one per device on CPU (see `resolve_chunk_size`).
    augmix: stage 5 of the pipeline, AugMix on the AdA images (a dict of AugMix
      hyperparameters, see `adacorr.methods.augmix.check_augmix_kwargs`; with
      `jsd=True` the loss is CE on the AdA images + 12 * JSD with two AugMix views of
      them, else CE on AugMix(AdA images)); None: no AugMix.
    post_augment: any other `(images, key) -> images` last stage (not with `augmix`).

  The LossFn's metrics: accuracy (on the AdA images), ssim, ssim_before_line_search,
  line_search_fraction (and 'jsd' with AugMix + JSD).

  Raises:
    TypeError: if a backbone is not a `Backbone` (a spec dict must be resolved first).
    ValueError: for an argument of the wrong type or range, named: nu not a finite
      number in (0, 1), num_steps not an int >= 0, a negative / infinite / text
      step_size, an ssim_threshold outside [-1, 1] ([0, 2] for the 'distance' reading),
      a bad backbone (`check_backbone`), chunk_size, chunk_loop or memory_budget.
  Warns:
    UserWarning: for nu > 0.1 (`adacorr.attacks.adversarial_augment.check_nu`).
  """
  augmix = augmix_lib.check_augmix_kwargs(augmix)
  if augmix is not None and post_augment is not None:
    raise ValueError("give either augmix or post_augment, not both.")
  if post_augment is not None and not callable(post_augment):
    raise ValueError(f"post_augment must be None or a function (images, key) -> images, "
                     f"got {type(post_augment).__name__}.")
  if isinstance(backbones, (Backbone, str, Mapping)):
    raise ValueError(f"backbones must be a sequence of Backbones, got {backbones!r:.80} "
                     f"(wrap one backbone in a list).")
  for i, b in enumerate(backbones):
    check_backbone(b, f"backbones[{i}]")
  # Checked before the conversions below (float('abc'), int(2.7) = 2 would hide them).
  ada_attack.check_nu(nu)
  check_steps(num_steps)
  ada_attack.check_step_size(step_size)
  if ssim_threshold is not None:
    ada_attack.check_ssim_threshold(ssim_threshold, ssim_reading, "ssim_threshold")
  ada_attack.check_memory_budget(memory_budget)
  stage = ada_stage(
      tuple(backbones), nu=float(nu), num_steps=int(num_steps),
      step_size=None if step_size is None else float(step_size),
      ssim_threshold=None if ssim_threshold is None else float(ssim_threshold),
      ssim_strict=bool(ssim_strict), ssim_reading=ssim_reading, blocks=blocks,
      chunk_size=chunk_size, chunk_loop=chunk_loop,
      memory_budget=None if memory_budget is None else int(memory_budget))

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
