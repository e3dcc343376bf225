"""Pretraining of the AdA corruption networks (image-to-image nets), and reusing them.

AdA (Calian et al. 2022, App. E.6) perturbs the weights of *pretrained* corruption nets
(`adacorr.models.corruption`). This module trains them on a dataset's own images:

  net     input                               target  loss
  edsr    x (EDSR downsamples x2 internally)   x       mean |out - x|   (x2 super-resolution)
  cae     x (stochastic binarisation)         x       mean (out - x)^2
  vqvae   x                                   x       mean (out - x)^2 / data_variance + vq_loss
  unet    x with 2-35% of pixels zeroed       x       mean |out - x| + 0.05 mean (out - x)^2

`data_variance` is the variance of the training images (a fixed sample of up to 10,000),
as in the VQ-VAE example of van den Oord et al.; the VQ-VAE's codebook follows its EMA
updates (collection 'vq_ema'). The U-Net's mask (`completion_mask`) zeroes a fraction
p ~ U(0.02, 0.35) of the pixels of each image (exactly round(p H W) pixels, all channels
of a pixel together). Optimiser: Adam (optax) with `make_schedule`'s schedule.
`config.zero_init` names modules whose parameters start at zero (`zero_params`): the
configs use it for the U-Net's residual head and the CAE's last conv, whose outputs are
clipped to [0, 1] and start largely clipped (no gradient) from the nets' default init.

Typical use (the AdA quickstart)::

  net, variables = ensure_pretrained(config, workdir)   # trains once, then reuses
  images = net.apply(variables, x, train=False)

`pretrain(config, workdir)` trains data-parallel over all devices (`adacorr.parallel`),
logs to `workdir/metrics.jsonl`, checkpoints with orbax to `workdir/checkpoints` (every
`checkpoint_every_steps` and at the end), resumes from the latest checkpoint, evaluates
reconstruction PSNR (dB) and SSIM (`dm_pix.ssim`) on the test split, and writes
`workdir/summary.json`; `load_corruption_net(workdir)` rebuilds the net from
`workdir/config.json` and restores its variables. The batch and the PRNG key of step `s`
depend only on the seed and `s`, so an interrupted run resumes exactly.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import dm_pix as pix
import flax
import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm

from adacorr import data as data_lib
from adacorr import parallel
from adacorr.data import augment as augment_lib
from adacorr.train import optim
from adacorr.train.checkpoint import Checkpointer
from adacorr.train.metric_writer import MetricWriter

LossFn = Callable[[Any, Any, jax.Array, jax.Array], tuple[jax.Array, dict[str, Any]]]

# Per-net training objective (see the module docstring).
NET_LOSSES = {"edsr": "l1", "cae": "mse", "vqvae": "mse_over_variance + vq_loss",
              "unet": "completion: l1 + 0.05 * mse on masked inputs"}
# The U-Net's image-completion mask: fraction of zeroed pixels per image.
MASK_FRACTION_RANGE = (0.02, 0.35)
# U-Net loss: mean |.| + L2_WEIGHT * mean(.^2) (paper: "scaled by 0.5 * 0.1").
COMPLETION_L2_WEIGHT = 0.5 * 0.1
# Fixed key of the U-Net's evaluation masks (the same masks for every run and seed).
EVAL_MASK_SEED = 1234
# Examples used to estimate the VQ-VAE's data variance.
DATA_VARIANCE_EXAMPLES = 10_000
# Collections that hold per-call outputs, not state: never stored in the train state.
_OUTPUT_COLLECTIONS = ("losses", "intermediates")
# Config fields that do not change the trained net (ignored when matching a finished run).
BOOKKEEPING_FIELDS = ("name", "data_dir", "fashion_mnist_dir", "log_every_steps",
                      "checkpoint_every_steps", "keep_checkpoints", "eval_every_epochs",
                      "num_eval_examples", "eval_batch_size", "tensorboard", "prefetch")
REQUIRED_FIELDS = ("net", "net_kwargs", "dataset", "global_batch_size", "num_epochs",
                   "learning_rate", "schedule", "warmup_epochs", "seed", "augment")
CLI = "python experiments/train_corruption_net.py"
CONFIG_DIR = "experiments/configs/corruption_nets"


class NonFiniteLossError(FloatingPointError):
  """The loss or a gradient became NaN/inf; the run stopped and kept its last good checkpoint."""


# --- state ----------------------------------------------------------------------------

@flax.struct.dataclass
class PretrainState:
  """Everything a pretraining run needs to continue exactly where it stopped.

  Attributes:
    step: int32 scalar, number of optimizer updates applied so far.
    params: the net's 'params' collection (the blocks AdA perturbs).
    collections: the net's other state collections, e.g. `{'vq_ema': ...}` ({} if none).
    opt_state: the optax state.
    rng: raw uint32 PRNG key; the key of step `s` is `fold_in(rng, s)`.
  """
  step: jax.Array
  params: Any
  collections: Any
  opt_state: Any
  rng: jax.Array

  @property
  def variables(self) -> dict[str, Any]:
    """`{'params', **collections}` for `net.apply`."""
    return {"params": self.params, **self.collections}


def init_variables(net: nn.Module, key: jax.Array,
                   image_shape: tuple[int, int, int]) -> dict[str, Any]:
  """The net's variables from a (1, H, W, C) dummy input (jitted init, eval mode).

  `key` (a raw threefry key) seeds an 'rbg' key for the initialisers: XLA:CPU compiles
  the threefry initialisers of these nets in 10-20 s, their 'rbg' version in 1-7 s.
  """
  rbg_key = jax.random.wrap_key_data(jnp.tile(jax.random.key_data(key), 2), impl="rbg")
  params_key, other_key = jax.random.split(rbg_key)
  init = jax.jit(lambda k1, k2, x: net.init({"params": k1, "binarize": k2}, x, train=False))
  variables = init(params_key, other_key, jnp.zeros((1, *image_shape), jnp.float32))
  return {k: v for k, v in variables.items() if k not in _OUTPUT_COLLECTIONS}


def zero_params(params: Any, modules: Sequence[str]) -> Any:
  """`params` with every array under the given module paths ('a/b', e.g. 'head') zeroed.

  Raises:
    ValueError: if a path names no parameter.
  """
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  for module in modules:
    hits = [k for k in flat if k == module or k.startswith(module + "/")]
    if not hits:
      raise ValueError(f"zero_init: no parameters under {module!r}; the net's parameters "
                       f"are {sorted(flat)}.")
    for k in hits:
      flat[k] = jnp.zeros_like(flat[k])
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def create_pretrain_state(net: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
                          image_shape: tuple[int, int, int], *,
                          zero_init: Sequence[str] = ()) -> PretrainState:
  """Initialises the net and the optimizer state (the state of step 0).

  `zero_init`: module paths whose parameters start at zero (`zero_params`), e.g. the
  U-Net's residual 'head', so that the net starts as the identity on its input.
  """

  @jax.jit  # one program: eager optimizer init would compile a kernel per parameter
  def create(key):
    init_key, state_key = jax.random.split(key)
    variables = init_variables(net, init_key, image_shape)
    params = zero_params(variables.pop("params"), zero_init)
    return PretrainState(step=jnp.zeros((), jnp.int32), params=params,
                         collections=variables, opt_state=tx.init(params), rng=state_key)

  return create(key)


def make_optimizer(config: ml_collections.ConfigDict,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  """Adam (optax defaults b1 0.9, b2 0.999, eps 1e-8) with the learning-rate `schedule`."""
  return optax.adam(schedule)


# --- inputs and losses ----------------------------------------------------------------

def completion_mask(key: jax.Array, shape: tuple[int, int, int, int],
                    fraction_range: tuple[float, float] = MASK_FRACTION_RANGE) -> jax.Array:
  """Pixel masks of the U-Net's image-completion task: float32 (B, H, W, 1), 0 = zeroed.

  Image `i` (key `split(key, B)[i]`) draws p ~ U(lo, hi) and zeroes exactly
  `round(p H W)` pixels (clipped to [ceil(lo H W), floor(hi H W)]) chosen uniformly;
  the mask is shared by all channels of a pixel.
  """
  return _completion_mask(key, tuple(shape), tuple(fraction_range))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _completion_mask(key, shape, fraction_range):
  b, h, w, _ = shape
  n = h * w
  lo, hi = fraction_range
  k_min, k_max = math.ceil(lo * n - 1e-9), math.floor(hi * n + 1e-9)

  def one(key):
    frac_key, pix_key = jax.random.split(key)
    k = jnp.round(jax.random.uniform(frac_key, (), minval=lo, maxval=hi) * n)
    k = jnp.clip(k, k_min, k_max).astype(jnp.int32)
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(pix_key, (n,))))
    return (ranks >= k).astype(jnp.float32).reshape(h, w, 1)

  return jax.vmap(one)(jax.random.split(key, b))


def mask_pixels(images: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`(images * mask, mask)` with `mask = completion_mask(key, images.shape)`."""
  mask = completion_mask(key, images.shape)
  return images * mask, mask


def completion_loss(out: jax.Array, target: jax.Array) -> jax.Array:
  """mean |out - target| + 0.05 * mean (out - target)^2 (the paper's U-Net loss)."""
  diff = out - target
  return jnp.mean(jnp.abs(diff)) + COMPLETION_L2_WEIGHT * jnp.mean(jnp.square(diff))


def _sown_losses(tree: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Splits what a net sowed into 'losses': `(sum of the values named '*loss', {name:
  mean} of the others)` (e.g. the VQ-VAE's 'vq_loss', and its 'perplexity' as a metric)."""
  total = jnp.zeros((), jnp.float32)
  others: dict[str, list] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    keys = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
    name = str(keys[-1]) if keys else "loss"
    if name.endswith("loss"):
      total = total + jnp.sum(leaf)
    else:
      others.setdefault(name, []).append(jnp.mean(leaf))
  return total, {k: sum(v) / len(v) for k, v in others.items()}


def make_loss_fn(name: str, net: nn.Module, *, data_variance: float | None = None) -> LossFn:
  """The pretraining loss of net `name`: `loss_fn(params, collections, images, key)
  -> (loss, {'collections': updated, 'metrics': {...}})`.

  `images` are the (augmented) training images; `key` drives the U-Net's masks and the
  CAE's stochastic binarisation. The net runs with `train=True` and every state
  collection mutable; values sown into 'losses' under a name ending in 'loss' (the
  VQ-VAE's 'vq_loss') are added to the loss, the others (its 'perplexity') are metrics.
  """
  if name not in NET_LOSSES:
    raise ValueError(f"No pretraining loss for net {name!r}; known: {sorted(NET_LOSSES)}.")
  if name == "vqvae" and not data_variance:
    raise ValueError("The VQ-VAE loss needs data_variance (variance of the training images).")

  def loss_fn(params, collections, images, key):
    mask_key, binarize_key = jax.random.split(key)
    inputs = mask_pixels(images, mask_key)[0] if name == "unet" else images
    out, updates = net.apply({"params": params, **collections}, inputs, train=True,
                             rngs={"binarize": binarize_key},
                             mutable=[*collections, "losses"])
    diff = out - images
    mse = jnp.mean(jnp.square(diff))
    metrics = {"mse": mse}
    if name == "edsr":
      loss = jnp.mean(jnp.abs(diff))
    elif name == "cae":
      loss = mse
    elif name == "vqvae":
      loss = mse / data_variance
    else:  # unet
      loss = completion_loss(out, images)
    aux_loss, sown_metrics = _sown_losses(updates.get("losses", {}))
    metrics.update(sown_metrics)
    if name == "vqvae":
      metrics["vq_loss"] = aux_loss
    loss = loss + aux_loss
    new_collections = {k: updates.get(k, v) for k, v in collections.items()}
    return loss, {"collections": new_collections, "metrics": metrics}

  return loss_fn


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, *,
                    augment_fn: Callable | None = None,
                    schedule: optax.Schedule | None = None
                    ) -> Callable[[PretrainState, jax.Array], tuple[PretrainState, dict]]:
  """`train_step(state, images) -> (state, metrics)` (not yet jitted).

  The step's key is `fold_in(state.rng, state.step)`, split into the augmentation key
  and the loss key. A non-finite loss or gradient leaves the state unchanged and sets
  `metrics['finite']` to 0 (as `adacorr.train.step.make_train_step`).
  """

  def train_step(state: PretrainState, images: jax.Array):
    step_key = jax.random.fold_in(state.rng, state.step)
    augment_key, loss_key = jax.random.split(step_key)
    if augment_fn is not None:
      images = augment_fn(images, augment_key)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.collections, images, loss_key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              collections=aux["collections"], opt_state=opt_state)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite.astype(jnp.float32),
               **aux["metrics"]}
    if schedule is not None:
      metrics["learning_rate"] = schedule(state.step)
    return new_state, metrics

  return train_step


# --- evaluation -----------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames="max_val")
def psnr(a: jax.Array, b: jax.Array, max_val: float = 1.0) -> jax.Array:
  """Per-image PSNR in dB, `10 log10(max_val^2 / mse)` over (H, W, C): (B,...) -> (B,).

  The MSE is floored at 1e-10 (100 dB for max_val 1), so identical images stay finite.
  """
  mse = jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)),
                 axis=tuple(range(1, a.ndim)))
  return 10.0 * jnp.log10(max_val ** 2 / jnp.maximum(mse, 1e-10))


def bicubic_down_up(images: jax.Array, factor: int) -> jax.Array:
  """Antialiased bicubic downsampling by `factor`, then bicubic upsampling back, in [0, 1]."""
  b, h, w, c = images.shape
  small = jax.image.resize(images, (b, h // factor, w // factor, c), "bicubic", antialias=True)
  return jnp.clip(jax.image.resize(small, images.shape, "bicubic"), 0.0, 1.0)


def baseline_names(name: str, net: nn.Module) -> tuple[str, ...]:
  """The parameter-free maps the net is compared with in the evaluation, main one first.

  'masked_input' (the U-Net's input itself), 'bicubic_x<k>' (bicubic down- and
  upsampling by k: EDSR's own input for k = its scale; for the autoencoders k = 4, the
  resolution of their latents) and 'dataset_mean' (a constant image of the dataset's
  mean pixel values: the trivial reconstruction).
  """
  if name == "unet":
    return ("masked_input",)
  if name == "edsr":
    return (f"bicubic_x{int(getattr(net, 'scale', 2))}",)
  return ("bicubic_x4", "dataset_mean")


def make_eval_step(name: str, net: nn.Module, *, mean: Sequence[float] | None = None
                   ) -> Callable[[Any, dict, jax.Array], dict]:
  """`eval_step(variables, batch, key) -> sums` of per-image PSNR / SSIM over real examples.

  The net runs in eval mode (`train=False`). Inputs: the images, except for the U-Net
  (masked by `mask_pixels(images, key)`). Also sums `<baseline>_psnr` / `<baseline>_ssim`
  of the parameter-free baselines (`baseline_names`; 'dataset_mean' needs `mean`, the
  per-channel dataset mean, else it is left out). Divide the sums by `count`.
  """
  baselines = [b for b in baseline_names(name, net) if b != "dataset_mean" or mean]

  def eval_step(variables, batch, key):
    images = batch["image"]
    inputs = mask_pixels(images, key)[0] if name == "unet" else images
    out = net.apply(variables, inputs, train=False)
    mask = batch.get("mask", jnp.ones(images.shape[:1], jnp.float32))

    def total(x):
      return jnp.sum(jnp.where(mask > 0, x, 0.0))

    sums = {"psnr": total(psnr(out, images)), "ssim": total(pix.ssim(out, images)),
            "mse": total(jnp.mean(jnp.square(out - images), axis=(1, 2, 3))),
            "count": jnp.sum(mask)}
    for baseline in baselines:
      if baseline == "masked_input":
        base = inputs
      elif baseline == "dataset_mean":
        base = jnp.broadcast_to(jnp.asarray(mean, images.dtype), images.shape)
      else:
        base = bicubic_down_up(images, int(baseline.split("_x")[1]))
      sums[f"{baseline}_psnr"] = total(psnr(base, images))
      sums[f"{baseline}_ssim"] = total(pix.ssim(base, images))
    return sums

  return eval_step


def evaluate(eval_step: Callable, variables: Any, batches: Iterable[dict]) -> dict[str, float]:
  """Means over `batches` of `eval_step`'s sums; batch `b` uses the fixed key
  `fold_in(PRNGKey(EVAL_MASK_SEED), b)`, so every evaluation sees the same masks."""
  totals = None
  base_key = jax.random.PRNGKey(EVAL_MASK_SEED)
  for b, batch in enumerate(batches):
    sums = eval_step(variables, batch, jax.random.fold_in(base_key, b))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals.pop("count"))
  return {**{k: float(v) / count for k, v in totals.items()}, "num_examples": count}


class _FirstN:
  """The first `n` examples of a `Source` (a `Source` itself)."""

  def __init__(self, source: data_lib.Source, n: int):
    self._source = source
    self.num_examples = min(int(n), source.num_examples)
    self.image_shape = source.image_shape
    self.num_classes = source.num_classes

  def get(self, indices):
    return self._source.get(indices)


def data_variance(source: data_lib.Source, max_examples: int = DATA_VARIANCE_EXAMPLES) -> float:
  """Variance of the pixel values (in [0, 1]) of a fixed sample of up to `max_examples`."""
  n = source.num_examples
  if n > max_examples:
    indices = np.sort(np.random.default_rng(0).choice(n, max_examples, replace=False))
  else:
    indices = np.arange(n)
  images, _ = source.get(indices)
  return float(np.var(images.astype(np.float64) / 255.0))


# --- configs and workdirs -------------------------------------------------------------

def _kwargs(value: Any) -> Any:
  """JSON-ish net kwargs -> Python: lists become tuples (hashable module attributes)."""
  if isinstance(value, (ml_collections.ConfigDict, dict)):
    return {k: _kwargs(v) for k, v in dict(value).items()}
  if isinstance(value, (list, tuple)):
    return tuple(_kwargs(v) for v in value)
  return value


def build_net(config: ml_collections.ConfigDict) -> nn.Module:
  """The corruption net `config.net` with `config.net_kwargs`."""
  from adacorr.models import corruption  # pylint: disable=g-import-not-at-top
  return corruption.get_corruption_net(config.net, **_kwargs(config.get("net_kwargs", {})))


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the fields `pretrain` needs; raises ValueError naming what is wrong."""
  missing = [f for f in REQUIRED_FIELDS if f not in config]
  if missing:
    raise ValueError(f"The corruption-net config lacks the fields {missing}; start from "
                     f"experiments/configs/corruption_nets/__init__.py:get_base_config().")
  from adacorr.models import corruption  # pylint: disable=g-import-not-at-top
  if config.net not in corruption.CORRUPTION_NETS or config.net not in NET_LOSSES:
    raise ValueError(f"config.net={config.net!r} is not a corruption net; known: "
                     f"{sorted(corruption.CORRUPTION_NETS)}.")
  if config.dataset not in data_lib.DATASETS:
    raise ValueError(f"config.dataset={config.dataset!r} is not one of "
                     f"{sorted(data_lib.DATASETS)}.")
  if data_lib.DATASETS[config.dataset].train_split is None:
    raise ValueError(f"config.dataset={config.dataset!r} has no training split.")
  if config.schedule not in optim.SCHEDULES:
    raise ValueError(f"config.schedule={config.schedule!r} is not one of {optim.SCHEDULES}.")
  if not config.learning_rate > 0:
    raise ValueError(f"config.learning_rate={config.learning_rate!r} must be positive.")


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON data (what `workdir/config.json` holds)."""
  return json.loads(config.to_json_best_effort())


def _result_fields(d: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in d.items() if k not in BOOKKEEPING_FIELDS}


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
  """Fields (other than `BOOKKEEPING_FIELDS`) whose values differ between two configs."""
  a, b = _result_fields(a), _result_fields(b)
  return sorted(k for k in set(a) | set(b) if a.get(k, "<missing>") != b.get(k, "<missing>"))


def read_config(workdir: str) -> ml_collections.ConfigDict | None:
  """`workdir/config.json` as a ConfigDict, or None if there is none."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def _create_command(workdir: str, config_name: str | None = None) -> str:
  config = f"{CONFIG_DIR}/{config_name or '<config>'}.py"
  return f"{CLI} --config={config} --workdir={workdir}"


def _checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def _reader(directory: str) -> ocp.CheckpointManager:
  """A manager that only reads (creates, cleans and saves nothing). Not `read_only=True`,
  which logs three warnings per use."""
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      create=False, cleanup_tmp_directories=False, enable_async_checkpointing=False))


def latest_checkpoint_step(workdir: str) -> int | None:
  """The step of the newest complete checkpoint in `workdir/checkpoints`, or None."""
  directory = _checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    return None
  with _reader(directory) as manager:
    return manager.latest_step()


# --- the run --------------------------------------------------------------------------

def pretrain(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config.net` on `config.dataset`, evaluates it, returns the summary.

  Resumes from the latest checkpoint in `workdir/checkpoints`. Writes
  `workdir/config.json` (at the start), `workdir/metrics.jsonl` and
  `workdir/summary.json` (at the end; its presence marks a finished run).

  Raises:
    ValueError: for a bad config, or a workdir holding a run of another net or dataset.
    NonFiniteLossError: if the loss or a gradient becomes NaN/inf.
  """
  validate_config(config)
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  _record_config(config, workdir)
  summary_path = os.path.join(workdir, "summary.json")
  if is_main and os.path.exists(summary_path):
    os.remove(summary_path)  # rewritten when this run finishes
  mesh = parallel.make_mesh()

  info = data_lib.DATASETS[config.dataset]
  load_kwargs = {"data_dir": config.get("data_dir")}
  if config.dataset == "fashion_mnist":
    load_kwargs["fashion_mnist_dir"] = config.get("fashion_mnist_dir")
  train_source = data_lib.load_split(config.dataset, info.train_split, **load_kwargs)
  test_source = data_lib.load_split(config.dataset, info.test_split, **load_kwargs)
  if config.get("num_eval_examples", -1) > 0:
    test_source = _FirstN(test_source, config.num_eval_examples)
  batch_size = config.global_batch_size
  eval_batch_size = config.get("eval_batch_size", -1)
  eval_batch_size = eval_batch_size if eval_batch_size > 0 else batch_size
  parallel.local_batch_size(batch_size, mesh)  # validates divisibility
  parallel.local_batch_size(eval_batch_size, mesh)
  steps_per_epoch = data_lib.steps_per_epoch(train_source, batch_size)
  if steps_per_epoch < 1:
    raise ValueError(f"global_batch_size={batch_size} is larger than the training set "
                     f"({train_source.num_examples} examples).")
  num_steps = (int(config.num_steps) if config.get("num_steps", -1) > 0
               else max(1, int(math.ceil(config.num_epochs * steps_per_epoch))))

  net = build_net(config)
  variance = data_variance(train_source) if config.net == "vqvae" else None
  schedule = optim.make_schedule(_schedule_config(config), steps_per_epoch=steps_per_epoch,
                                 num_steps=num_steps)
  tx = make_optimizer(config, schedule)
  replicated = parallel.replicated_sharding(mesh)

  def initial_state():
    return create_pretrain_state(net, tx, jax.random.PRNGKey(config.seed), info.image_shape,
                                 zero_init=tuple(config.get("zero_init", ())))

  abstract = jax.eval_shape(initial_state)
  num_params = int(sum(x.size for x in jax.tree.leaves(abstract.params)))
  num_state = int(sum(x.size for x in jax.tree.leaves(abstract.collections)))
  checkpointer = Checkpointer(_checkpoint_dir(workdir),
                              max_to_keep=config.get("keep_checkpoints", 2))
  if checkpointer.latest_step() is None:
    state = parallel.replicate(initial_state(), mesh)
  else:  # restore into the abstract state: no need to compile the initialisers
    state = checkpointer.restore(jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract))
    logging.info("Resumed from step %d in %s.", int(state.step), checkpointer.directory)
    if is_main:
      print(f"Resuming from checkpoint at step {int(state.step)} in {checkpointer.directory}",
            flush=True)
  start_step = int(state.step)

  augment_fn = augment_lib.get_augment(config.augment, **config.get("augment_kwargs", {}))
  loss_fn = make_loss_fn(config.net, net, data_variance=variance)
  train_step = jax.jit(make_train_step(loss_fn, tx, augment_fn=augment_fn, schedule=schedule),
                       out_shardings=(replicated, replicated), donate_argnums=(0,))
  eval_step = jax.jit(make_eval_step(config.net, net, mean=info.mean),
                      out_shardings=replicated)

  def run_eval() -> dict[str, float]:
    return evaluate(eval_step, state.variables,
                    data_lib.eval_batches(test_source, global_batch_size=eval_batch_size,
                                          mesh=mesh))

  writer = MetricWriter(workdir, tensorboard=config.get("tensorboard", False))
  log_every = max(1, config.get("log_every_steps", 50))
  eval_epochs = config.get("eval_every_epochs", -1)
  eval_every = max(1, int(round(eval_epochs * steps_per_epoch))) if eval_epochs > 0 else 0
  ckpt_every = config.get("checkpoint_every_steps", -1)
  if is_main:
    print(f"Pretraining corruption net {config.net} ({num_params:,} params"
          f"{f' + {num_state:,} state' if num_state else ''}) on {config.dataset} "
          f"({train_source.num_examples} examples): {num_steps} steps of {batch_size} "
          f"({num_steps / steps_per_epoch:.2f} epochs) on {mesh.devices.size} device(s) "
          f"[{jax.devices()[0].platform}]", flush=True)

  pending: list[dict] = []
  last_train: dict[str, float] = {}

  def flush(step: int) -> None:
    nonlocal last_train
    if not pending:
      return
    window = jax.device_get(pending)
    pending.clear()
    finite = np.array([m["finite"] for m in window])
    if not finite.all():
      i = int(np.argmin(finite))
      checkpointer.wait_until_finished()
      raise NonFiniteLossError(
          f"The loss or its gradient became NaN/inf at step {step - len(window) + i + 1} "
          f"(loss={float(window[i]['loss'])}); training stopped. That update was not "
          f"applied. The last good checkpoint is step {checkpointer.latest_step()} in "
          f"{checkpointer.directory}; lower the learning rate, then rerun to resume from it.")
    last_train = {k: float(np.mean([m[k] for m in window])) for k in window[0] if k != "finite"}
    writer.write(step, "train", last_train)
    progress.set_postfix(loss=f"{last_train['loss']:.4f}", refresh=False)

  progress = tqdm.tqdm(total=num_steps, initial=start_step, unit="step", desc=config.net,
                       disable=not is_main, dynamic_ncols=True, file=sys.stdout,
                       mininterval=1.0 if sys.stdout.isatty() else 15.0)
  wall_start = time.perf_counter()
  timing_start, timing_step = None, start_step
  batches = None
  try:
    batches = data_lib.train_batches(train_source, global_batch_size=batch_size,
                                     seed=config.seed, mesh=mesh, start_step=start_step,
                                     prefetch=config.get("prefetch", 2))
    for step in range(start_step + 1, num_steps + 1):
      state, metrics = train_step(state, next(batches)["image"])
      pending.append(metrics)
      if timing_start is None:  # exclude compilation from the throughput
        jax.block_until_ready(state.step)
        timing_start, timing_step = time.perf_counter(), step
      progress.update(1)
      if step % log_every == 0 or step == num_steps:
        flush(step)
      if ckpt_every > 0 and step % ckpt_every == 0 and step != num_steps:
        flush(step)
        checkpointer.save(step, state)
      if eval_every and step % eval_every == 0 and step != num_steps:
        test = run_eval()
        writer.write(step, "test", test)
        progress.write(f"step {step} (epoch {step / steps_per_epoch:.2f}): test PSNR "
                       f"{test['psnr']:.2f} dB, SSIM {test['ssim']:.4f}")
    flush(num_steps)
    jax.block_until_ready(state.step)
    train_seconds = time.perf_counter() - timing_start if timing_start else 0.0
    if checkpointer.latest_step() != num_steps:
      checkpointer.save(num_steps, state)
    checkpointer.wait_until_finished()
  finally:
    if batches is not None:
      batches.close()
    progress.close()
    checkpointer.close()

  test = run_eval()
  writer.write(num_steps, "test", test)
  writer.close()
  timed_steps = num_steps - timing_step
  baselines = baseline_names(config.net, net)
  summary = {
      "net": config.net, "dataset": config.dataset, "loss": NET_LOSSES[config.net],
      "num_params": num_params, "num_state": num_state,
      "devices": int(mesh.devices.size), "platform": jax.devices()[0].platform,
      "global_batch_size": batch_size, "steps": num_steps,
      "epochs": num_steps / steps_per_epoch, "resumed_from_step": start_step,
      "wall_seconds": time.perf_counter() - wall_start,
      "train_steps_per_second": timed_steps / train_seconds if train_seconds > 0 else None,
      "train_loss": last_train.get("loss"), "data_variance": variance,
      "test_psnr": test["psnr"], "test_ssim": test["ssim"], "test_mse": test["mse"],
      "baseline": baselines[0], "baseline_psnr": test[f"{baselines[0]}_psnr"],
      "baseline_ssim": test[f"{baselines[0]}_ssim"],
      "baselines": {b: {"psnr": test[f"{b}_psnr"], "ssim": test[f"{b}_ssim"]}
                    for b in baselines},
      "test_examples": int(test["num_examples"]),
  }
  if is_main:
    with open(summary_path, "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=2)
    print(format_results(summary), flush=True)
  return summary


def _schedule_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The fields `optim.make_schedule` reads, with defaults for the optional ones."""
  return ml_collections.ConfigDict({
      "learning_rate": config.learning_rate,
      "scale_learning_rate": config.get("scale_learning_rate", False),
      "global_batch_size": config.global_batch_size, "schedule": config.schedule,
      "warmup_epochs": config.warmup_epochs,
      "piecewise_boundaries": tuple(config.get("piecewise_boundaries", (0.34, 0.67))),
      "piecewise_factor": config.get("piecewise_factor", 0.1)})


def _record_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes `workdir/config.json`; refuses to resume a run of another net or dataset."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, "config.json")
  current = config_to_dict(config)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      previous = json.load(f)
    changed = config_differences(previous, current)
    structural = [k for k in changed if k in ("net", "net_kwargs", "dataset")]
    if structural and latest_checkpoint_step(workdir) is not None:
      raise ValueError(
          f"{workdir} holds a run with another {', '.join(structural)} "
          f"({', '.join(f'{k}={previous.get(k)!r}' for k in structural)}); use another "
          "--workdir or delete this one.")
    if changed:
      logging.warning("The config differs from the one recorded in %s in %s; a resumed run "
                      "will not equal an unbroken one.", path, changed)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(current, f, indent=2, sort_keys=True)


def format_results(summary: dict[str, Any]) -> str:
  """A small table: the net vs its parameter-free baselines on the test split."""
  rows = [("", "PSNR (dB)", "SSIM"),
          (f"{summary['net']} (trained)", f"{summary['test_psnr']:.2f}",
           f"{summary['test_ssim']:.4f}")]
  rows += [(f"{name} (baseline)", f"{m['psnr']:.2f}", f"{m['ssim']:.4f}")
           for name, m in summary["baselines"].items()]
  widths = [max(len(r[i]) for r in rows) for i in range(3)]
  rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
  lines = [f"{summary['net']} on {summary['dataset']}: {summary['steps']} steps "
           f"({summary['epochs']:.2f} epochs), {summary['num_params']:,} params, "
           f"{summary['wall_seconds']:.0f} s; test split, {summary['test_examples']} images",
           rule]
  for j, r in enumerate(rows):
    lines.append("| " + " | ".join(r[i].ljust(widths[i]) if i == 0 else r[i].rjust(widths[i])
                                   for i in range(3)) + " |")
    if j == 0:
      lines.append(rule)
  return "\n".join(lines + [rule])


# --- loading --------------------------------------------------------------------------

def load_corruption_net(workdir: str, step: int | None = None
                        ) -> tuple[nn.Module, dict[str, Any]]:
  """The net and its variables (`{'params', **state collections}`) of a pretraining run.

  Rebuilds the net from `workdir/config.json` and restores checkpoint `step` (default:
  the latest) onto the first local device.

  Raises:
    FileNotFoundError: if `workdir` holds no config or no complete checkpoint.
  """
  config = read_config(workdir)
  if config is None or latest_checkpoint_step(workdir) is None:
    what = "no config.json" if config is None else "no complete checkpoint"
    name = config.get("name") if config is not None else None
    raise FileNotFoundError(
        f"No pretrained corruption net in {os.path.abspath(workdir)} ({what}). Create it "
        f"with:\n  {_create_command(workdir, name)}\n(configs: {CONFIG_DIR}/*.py), or call "
        "adacorr.train.corruption_pretraining.ensure_pretrained(config, workdir).")
  net = build_net(config)
  info = data_lib.DATASETS[config.dataset]
  tx = make_optimizer(config, optax.constant_schedule(0.0))
  abstract = jax.eval_shape(
      lambda: create_pretrain_state(net, tx, jax.random.PRNGKey(0), info.image_shape))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                        abstract)
  with _reader(_checkpoint_dir(workdir)) as manager:
    step = manager.latest_step() if step is None else step
    state = manager.restore(int(step), args=ocp.args.StandardRestore(target))
  return net, state.variables


def ensure_pretrained(config: ml_collections.ConfigDict, workdir: str
                      ) -> tuple[nn.Module, dict[str, Any]]:
  """Pretrain or reuse: `(net, variables)` of the finished run of `config` in `workdir`.

  Reuses the run if `workdir/summary.json` exists and `workdir/config.json` matches
  `config` (ignoring `BOOKKEEPING_FIELDS`); otherwise trains (resuming an interrupted
  run of the same config), then loads.

  Raises:
    ValueError: for a bad config, or if `workdir` holds checkpoints of a different config.
  """
  validate_config(config)
  previous = read_config(workdir)
  if previous is not None:
    changed = config_differences(config_to_dict(previous), config_to_dict(config))
    if changed and latest_checkpoint_step(workdir) is not None:
      raise ValueError(
          f"{os.path.abspath(workdir)} holds a corruption-net run with a different config "
          f"(fields {changed} differ: "
          + ", ".join(f"{k}: {previous.get(k)!r} there vs {config.get(k)!r}" for k in changed)
          + "). Pass another workdir, or delete this one to retrain.")
    if (not changed and os.path.exists(os.path.join(workdir, "summary.json"))
        and latest_checkpoint_step(workdir) is not None):
      return load_corruption_net(workdir)
  pretrain(config, workdir)
  return load_corruption_net(workdir)
