"""Pretraining of the AdA corruption networks (image-to-image nets): a task of the engine.

AdA (Calian et al. 2022, App. E.6) perturbs the weights of *pretrained* corruption nets
(`adacorr.models.corruption`). This module trains them on a dataset's own images:

  net     input                               target  loss
  edsr    x, downsampled x2 (bicubic) by the  x       mean |out - x|   (x2 super-resolution)
          net in 'down_then_sr' mode
  cae     x (stochastic binarisation)         x       mean (out - x)^2
  vqvae   x                                   x       mean (out - x)^2 / data_variance + vq_loss
  unet    x with 2-35% of pixels zeroed       x       mean |out - x| + 0.05 mean (out - x)^2

EDSR is trained on the super-resolution task (`corruption.super_resolution_net`: the same
parameters in 'down_then_sr' mode) and used by AdA / DeepAugment in its own `resample`
mode (default 'sr_then_down', a near-identity); the evaluation reports both ('psnr' /
'ssim': the task; 'applied': the net as built, e.g. the unperturbed AdA backbone's SSIM).
`data_variance` is the variance of the training images (a fixed sample of up to 10,000),
as in the VQ-VAE example of van den Oord et al.; the VQ-VAE's codebook follows its EMA
updates (collection 'vq_ema'). The U-Net's mask (`completion_mask`) zeroes a fraction
p ~ U(0.02, 0.35) of the pixels of each image (exactly round(p H W) pixels, all channels
of a pixel together). Optimiser: Adam (optax) with `make_schedule`'s schedule.
`config.zero_init` names modules whose parameters start at zero (`zero_params`): the
configs use it for the U-Net's residual head and the CAE's last conv, whose outputs are
clipped to [0, 1] and start largely clipped (no gradient) from the nets' default init.

`pretrain(config, workdir)` runs the classifiers' loop (`adacorr.train.loop.run`) on
a corruption-net `Task`: data-parallel over all devices, metrics in
`workdir/metrics.jsonl`, orbax checkpoints in `workdir/checkpoints` (every
`checkpoint_every_steps` and at the end), exact resume, reconstruction PSNR (dB) and SSIM
(`dm_pix.ssim`) on the test split against parameter-free baselines, and
`workdir/summary.json`. The net's state collections (the VQ-VAE's 'vq_ema') are the
`TrainState`'s `batch_stats`. Loading a finished run, or pretraining it on first use, is
the run layer's (`adacorr.run.corruption_nets`).
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any, Callable, Sequence

import dm_pix as pix
import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from adacorr import data as data_lib
from adacorr.core.types import LossFn
from adacorr.data import augment as augment_lib
from adacorr.models import corruption
from adacorr.train import config_checks
from adacorr.train import loop
from adacorr.train import optim
from adacorr.train.state import TrainState

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
REQUIRED_FIELDS = ("net", "net_kwargs", "dataset", "global_batch_size", "num_epochs",
                   "learning_rate", "schedule", "warmup_epochs", "seed", "augment")


# --- state ----------------------------------------------------------------------------

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
                          zero_init: Sequence[str] = ()) -> TrainState:
  """Initialises the net and the optimizer state (the state of step 0).

  The net's state collections other than 'params' (e.g. the VQ-VAE's `{'vq_ema': ...}`,
  or {}) are the state's `batch_stats`: the engine's non-parameter model state.
  `zero_init`: module paths whose parameters start at zero (`zero_params`), e.g. the
  U-Net's residual 'head', so that the net starts as the identity on its input.
  """

  @jax.jit  # one program: eager optimizer init would compile a kernel per parameter
  def create(key):
    init_key, state_key = jax.random.split(key)
    variables = init_variables(net, init_key, image_shape)
    params = zero_params(variables.pop("params"), zero_init)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables,
                      opt_state=tx.init(params), rng=state_key)

  return create(key)


def net_variables(state: TrainState) -> dict[str, Any]:
  """`{'params', **state collections}` for `net.apply`, from a corruption net's state."""
  return {"params": state.params, **state.batch_stats}


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
  """The pretraining loss of net `name`, a `LossFn`: `loss_fn(params, collections,
  batch, key) -> (loss, {'batch_stats': updated collections, 'metrics': {...}})`.

  `batch['image']` are the (augmented) training images (the target); `key` drives the U-Net's masks and the
  CAE's stochastic binarisation. The net runs with `train=True` and every state
  collection mutable; values sown into 'losses' under a name ending in 'loss' (the
  VQ-VAE's 'vq_loss') are added to the loss, the others (its 'perplexity') are metrics.
  """
  if name not in NET_LOSSES:
    raise ValueError(f"No pretraining loss for net {name!r}; known: {sorted(NET_LOSSES)}.")
  if name == "vqvae" and not data_variance:
    raise ValueError("The VQ-VAE loss needs data_variance (variance of the training images).")
  net = corruption.super_resolution_net(net)

  def loss_fn(params, collections, batch, key):
    images = batch["image"]
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
    return loss, {"batch_stats": new_collections, "metrics": metrics}

  return loss_fn


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

  The net runs in eval mode (`train=False`) on its pretraining task (EDSR: as
  `corruption.super_resolution_net`). Inputs: the images, except for the U-Net
  (masked by `mask_pixels(images, key)`). For EDSR also `applied_psnr` / `applied_ssim`:
  the net in its own `resample` mode on the clean images (AdA's unperturbed backbone). Also sums `<baseline>_psnr` / `<baseline>_ssim`
  of the parameter-free baselines (`baseline_names`; 'dataset_mean' needs `mean`, the
  per-channel dataset mean, else it is left out). Divide the sums by `count`.
  """
  baselines = [b for b in baseline_names(name, net) if b != "dataset_mean" or mean]
  task_net = corruption.super_resolution_net(net)

  def eval_step(variables, batch, key):
    images = batch["image"]
    inputs = mask_pixels(images, key)[0] if name == "unet" else images
    out = task_net.apply(variables, inputs, train=False)
    mask = batch.get("mask", jnp.ones(images.shape[:1], jnp.float32))

    def total(x):
      return jnp.sum(jnp.where(mask > 0, x, 0.0))

    sums = {"psnr": total(psnr(out, images)), "ssim": total(pix.ssim(out, images)),
            "mse": total(jnp.mean(jnp.square(out - images), axis=(1, 2, 3))),
            "count": jnp.sum(mask)}
    if task_net is not net:  # EDSR: also the net as AdA / DeepAugment apply it
      applied = net.apply(variables, images, train=False)
      sums["applied_psnr"] = total(psnr(applied, images))
      sums["applied_ssim"] = total(pix.ssim(applied, images))
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
  return corruption.get_corruption_net(config.net, **_kwargs(config.get("net_kwargs", {})))


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the fields `pretrain` needs; raises ValueError naming what is wrong."""
  missing = [f for f in REQUIRED_FIELDS if f not in config]
  if missing:
    raise ValueError(f"The corruption-net config lacks the fields {missing}; start from "
                     f"experiments/configs/corruption_nets/__init__.py:get_base_config().")
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
  # Batch, steps, epochs, learning rate, warm-up, schedule, ...: named errors, before any
  # data is read.
  config_checks.check_training_values(config)
  config_checks.check_kwargs(config.get("net_kwargs") or {},
                             corruption.CORRUPTION_NETS[config.net], key="net_kwargs",
                             owner=f"net {config.net!r}")
  config_checks.check_int(config, "num_eval_examples")
  config_checks.check_augment(config)


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON data (what `workdir/config.json` holds)."""
  return json.loads(config.to_json_best_effort())


# --- the run --------------------------------------------------------------------------

def pretrain(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config.net` on `config.dataset` with the engine's loop, evaluates it,
  returns the summary.

  Resumes from the latest checkpoint in `workdir/checkpoints`. Writes
  `workdir/config.json` (at the start), `workdir/metrics.jsonl` and
  `workdir/summary.json` (at the end; its presence marks a finished run).

  Raises:
    ValueError: for a bad config, or a workdir holding a run of another net or dataset.
    NonFiniteLossError: if the loss or a gradient becomes NaN/inf.
  """
  validate_config(config)
  info, (train_source, test_source) = data_lib.load_dataset(config)
  if config.get("num_eval_examples", -1) > 0:
    test_source = data_lib.first_n(test_source, config.num_eval_examples)
  steps_per_epoch = data_lib.steps_per_epoch(train_source, config.global_batch_size)
  num_steps = loop.num_train_steps(config, max(1, steps_per_epoch))

  net = build_net(config)
  variance = data_variance(train_source) if config.net == "vqvae" else None
  schedule = optim.make_schedule(_schedule_config(config), steps_per_epoch=steps_per_epoch,
                                 num_steps=num_steps)
  tx = make_optimizer(config, schedule)

  def init_state() -> TrainState:
    return create_pretrain_state(net, tx, jax.random.PRNGKey(config.seed), info.image_shape,
                                 zero_init=tuple(config.get("zero_init", ())))

  abstract = jax.eval_shape(init_state)
  num_params = int(sum(x.size for x in jax.tree.leaves(abstract.params)))
  num_state = int(sum(x.size for x in jax.tree.leaves(abstract.batch_stats)))
  baselines = baseline_names(config.net, net)

  def summarize(stats, test):
    return {
        "net": config.net, "dataset": config.dataset, "loss": NET_LOSSES[config.net],
        "num_params": num_params, "num_state": num_state,
        **{k: stats[k] for k in ("devices", "platform", "global_batch_size", "steps",
                                 "epochs", "resumed_from_step", "wall_seconds",
                                 "train_steps_per_second", "train_loss")},
        "data_variance": variance,
        "test_psnr": test["psnr"], "test_ssim": test["ssim"], "test_mse": test["mse"],
        "baseline": baselines[0], "baseline_psnr": test[f"{baselines[0]}_psnr"],
        "baseline_ssim": test[f"{baselines[0]}_ssim"],
        "baselines": {b: {"psnr": test[f"{b}_psnr"], "ssim": test[f"{b}_ssim"]}
                      for b in baselines},
        "test_examples": int(test["num_examples"]),
        **({"applied": {"resample": getattr(net, "resample", None),
                        "psnr": test["applied_psnr"], "ssim": test["applied_ssim"]}}
           if "applied_ssim" in test else {}),
    }

  task = loop.Task(
      name=config.net,
      title=(f"Pretraining corruption net {config.net} ({num_params:,} params"
             f"{f' + {num_state:,} state' if num_state else ''}) on {config.dataset} "
             f"({train_source.num_examples} examples)"),
      init_state=init_state, loss_fn=make_loss_fn(config.net, net, data_variance=variance),
      tx=tx, schedule=schedule, eval_step=make_eval_step(config.net, net, mean=info.mean),
      variables=net_variables,
      describe_eval=lambda m: (f"test PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}"
                               + (f"; as applied SSIM {m['applied_ssim']:.4f}"
                                  if "applied_ssim" in m else "")),
      summarize=summarize, format_summary=format_results,
      augment_fn=augment_lib.get_augment(config.augment, **config.get("augment_kwargs", {})),
      eval_seed=EVAL_MASK_SEED, structural_fields=("net", "net_kwargs", "dataset"),
      tensorboard=False)
  return loop.run(task, config, workdir, train_source=train_source, test_source=test_source)


def _schedule_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The fields `optim.make_schedule` reads, with defaults for the optional ones."""
  return ml_collections.ConfigDict({
      "learning_rate": config.learning_rate,
      "scale_learning_rate": config.get("scale_learning_rate", False),
      "global_batch_size": config.global_batch_size, "schedule": config.schedule,
      "warmup_epochs": config.warmup_epochs,
      "piecewise_boundaries": tuple(config.get("piecewise_boundaries", (0.34, 0.67))),
      "piecewise_factor": config.get("piecewise_factor", 0.1)})


def format_results(summary: dict[str, Any]) -> str:
  """A small table: the net vs its parameter-free baselines on the test split."""
  rows = [("", "PSNR (dB)", "SSIM"),
          (f"{summary['net']} (trained)", f"{summary['test_psnr']:.2f}",
           f"{summary['test_ssim']:.4f}")]
  rows += [(f"{name} (baseline)", f"{m['psnr']:.2f}", f"{m['ssim']:.4f}")
           for name, m in summary["baselines"].items()]
  if summary.get("applied"):  # EDSR as AdA applies it, to the full-resolution image
    a = summary["applied"]
    rows.append((f"{summary['net']} as applied ({a['resample']})", f"{a['psnr']:.2f}",
                 f"{a['ssim']:.4f}"))
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
