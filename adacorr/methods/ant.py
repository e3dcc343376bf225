"""Adversarial Noise Training (ANT; Rusak et al. 2020) as a `StatefulLoss` factory.

A noise generator (`adacorr.augment.noise_generator.NoiseGenerator`, 1x1 or 3x3) is
trained jointly with the classifier to produce the noise distribution that fools it
most, and the classifier trains on that noise. Per batch:

1. One Adam step (lr `generator_lr`, 1e-4) on the generator, maximising the
   cross-entropy of the classifier on the noisy part of the batch (the first
   `1 - clean_fraction`); the classifier is frozen (`stop_gradient`) and in EVAL mode.
2. The training batch: the first `current_fraction` (30%) get noise from the updated
   generator, the next `1 - clean_fraction - current_fraction` (20%) noise from
   generators saved at earlier epoch starts (experience replay; a saved generator drawn
   uniformly per example among the filled slots; the current generator while none is
   saved), the last `clean_fraction` (50%) stay clean. Every noise sample is rescaled
   with `clip_aware_rescale` so that `||clip(x + eta * delta, 0, 1) - x||_2 = eps`.
3. Cross-entropy of the classifier in TRAIN mode on the whole batch. With `rlat`, the
   classifier trains instead with RLAT (Kireev et al. 2022) on that ANT batch.

Restarts (paper: "to prevent the noise generator from being stuck in a local minimum,
we halt ANT at regular intervals and train a new noise generator from scratch"; once
per epoch, up to 1000 batches with Adam 5e-4): at the start of every epoch e >= 1 the
current generator is saved into the replay buffer (a ring of `replay_size` slots), a new
one is initialised and pretrained for `restart_steps` Adam steps (lr `restart_lr`)
against the current classifier (eval mode) on the loop's extra batches (the whole batch
noised). The Adam state is reset at a restart and carried on by the per-batch steps.

eps: the paper uses 135 on 224x224x3 ImageNet images in [0, 1], i.e. a root-mean-square
per-pixel change of 135 / sqrt(150528) = 0.348. By default (`eps=None`) the same rms
change is used at any image size: eps = 135 * sqrt(H * W * C / 150528) (CIFAR-10
32x32x3: 19.3; Fashion-MNIST 28x28x1: 9.74). The public reference code
(bethgelab/game-of-noise) holds only the evaluation: the generator's eps is the
command-line argument `epsilon_generator` of an unreleased training script, so 135 (paper,
ImageNet) is the only published value; Kireev et al. 2022 train ANT only on ImageNet-100
(224x224, so 135 unscaled).

Method state (`TrainState.method_state`): 'generator' (params), 'opt_state' (Adam
moments), 'replay' (the saved generators' params stacked along a leading axis of
`replay_size`) and 'num_saved' (int32, generators saved so far).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from adacorr.augment.noise_generator import (
    KERNELS, NoiseGenerator, clip_aware_rescale, init_generator, sample_noise)
from adacorr.methods.common import (
    accuracy, check_fraction, check_nonnegative, check_norm, cross_entropy, num_perturbed,
    per_example_l2, train_apply)
from adacorr.methods import rlat as rlat_lib
from adacorr.core.types import StatefulLoss

PAPER_EPS = 135.0                 # on 224x224x3 images in [0, 1]
PAPER_DIM = 224 * 224 * 3
RLAT_KEYS = ("eps", "norm", "layers", "fraction")


def default_eps(image_shape) -> float:
  """The paper's eps (135 at 224x224x3) scaled to `image_shape` (H, W, C): same rms."""
  return PAPER_EPS * math.sqrt(math.prod(image_shape) / PAPER_DIM)


def split_sizes(batch_size: int, clean_fraction: float, current_fraction: float
                ) -> tuple[int, int, int]:
  """(current, replay, clean) example counts: the batch's first, middle, last part."""
  n_clean = num_perturbed(clean_fraction, batch_size)
  n_noisy = batch_size - n_clean
  n_current = min(num_perturbed(current_fraction, batch_size), n_noisy)
  return n_current, n_noisy - n_current, n_clean


def ant_images(generator: NoiseGenerator, state: Mapping[str, Any], images: jax.Array,
               key: jax.Array, *, eps: float, clean_fraction: float = 0.5,
               current_fraction: float = 0.3) -> jax.Array:
  """The images ANT trains on: (B, H, W, C), parts as `split_sizes`.

  The first part gets noise from `state['generator']`, the middle part from the replay
  buffer `state['replay']` (a slot drawn per example among the
  `min(state['num_saved'], replay_size)` filled ones; the current generator while
  none is filled), the last part is `images` unchanged; every noise sample rescaled to
  l2 norm `eps` after clipping (`clip_aware_rescale`). Not stop-gradient-ed.
  """
  b, shape = images.shape[0], images.shape[1:]
  n_cur, n_rep, n_clean = split_sizes(b, clean_fraction, current_fraction)
  n_noisy = n_cur + n_rep
  if n_noisy == 0:
    return images
  replay_size = jax.tree.leaves(state["replay"])[0].shape[0]
  noise_key, slot_key = jax.random.split(key)
  filled = jnp.minimum(state["num_saved"], replay_size)
  slots = jax.random.randint(slot_key, (n_noisy,), 0, jnp.maximum(filled, 1))
  # Example i's generator: the current one for i < n_cur, else replay slot slots[i] (the
  # current one while none is saved). One per-example pass for both parts.
  replayed = (jnp.arange(n_noisy) >= n_cur) & (filled > 0)
  per_example = jax.tree.map(
      lambda buf, cur: jnp.where(replayed.reshape((-1,) + (1,) * cur.ndim), buf[slots],
                                 cur[None]),
      state["replay"], state["generator"])
  delta = sample_noise(generator, per_example, noise_key, (n_noisy, *shape),
                       per_example=True)
  noisy = clip_aware_rescale(images[:n_noisy], delta, eps)
  return jnp.concatenate([noisy, images[n_noisy:]], 0)


def _eval_logits(model, params, batch_stats, images):
  return model.apply({"params": jax.lax.stop_gradient(params),
                      "batch_stats": jax.lax.stop_gradient(batch_stats)}, images, train=False)


def make_ant(model: nn.Module, *, generator: str = "1x1",
             eps: float | None = None, clean_fraction: float = 0.5,
             current_fraction: float = 0.3, generator_lr: float = 1e-4,
             restart_lr: float = 5e-4, restart_steps: int = 1000, replay_size: int = 100,
             features: int = 20, rlat: Mapping[str, Any] | None = None) -> StatefulLoss:
  """ANT (ANT^1x1 / ANT^3x3), optionally combined with RLAT. See the module docstring.

  Args:
    model: the classifier (flax, NHWC in [0, 1]).
    generator: '1x1' (i.i.d. noise) or '3x3' (locally correlated noise).
    eps: l2 norm of every noise sample after clipping; None: 135 scaled to the image
      size (see the module docstring).
    clean_fraction: the last part of the batch, kept clean (0.5).
    current_fraction: the first part, noised by the current generator (0.3); the part
      between (0.2) gets replayed noise.
    generator_lr: Adam lr of the per-batch generator step (1e-4).
    restart_lr: Adam lr of the new generator's pretraining at each epoch start (5e-4).
    restart_steps: pretraining batches per epoch start (paper: up to 1000). 0: the new
      generator starts untrained.
    replay_size: slots of the replay buffer (a ring: the oldest is overwritten).
    features: width of the generator's hidden convs (20).
    rlat: None, or RLAT keywords (eps, norm, layers, fraction; see `make_rlat`) to
      train with RLAT on the ANT batch (ANT + RLAT, Kireev et al. 2022).

  Returns:
    A `StatefulLoss`. Metrics: 'accuracy' (trained-on batch), 'clean_accuracy' /
    'noisy_accuracy' (its clean / noisy part), 'generator_loss' (the generator's CE
    objective before its step), 'perturbation_norm' (mean l2 norm of the applied noise),
    'replay_filled' (saved generators available); with RLAT also 'ant_clean_loss'.
  """
  kw = dict(generator=generator, eps=eps, clean_fraction=clean_fraction,
            current_fraction=current_fraction, generator_lr=generator_lr,
            restart_lr=restart_lr, restart_steps=restart_steps, replay_size=replay_size,
            features=features, rlat=rlat)
  kernel = kw["generator"]
  if kernel not in KERNELS:
    raise ValueError(f"generator={kernel!r} is not one of {KERNELS}.")
  eps = None if kw["eps"] is None else float(kw["eps"])
  if eps is not None:
    check_nonnegative(eps, "eps")
  clean_fraction = float(kw["clean_fraction"])
  current_fraction = float(kw["current_fraction"])
  check_fraction(clean_fraction, "clean_fraction")
  if not 0.0 <= current_fraction <= 1.0 - clean_fraction + 1e-9:
    raise ValueError(f"current_fraction must be in [0, 1 - clean_fraction] = [0, "
                     f"{1.0 - clean_fraction:g}], got current_fraction={current_fraction}.")
  generator_lr, restart_lr = float(kw["generator_lr"]), float(kw["restart_lr"])
  check_nonnegative(generator_lr, "generator_lr")
  check_nonnegative(restart_lr, "restart_lr")
  restart_steps, replay_size, features = kw["restart_steps"], kw["replay_size"], kw["features"]
  for name, value, low in (("restart_steps", restart_steps, 0), ("replay_size", replay_size, 1),
                           ("features", features, 1)):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ValueError(f"{name} must be an int >= {low}, got {name}={value!r}.")
  rlat_kw = kw["rlat"]
  if rlat_kw is not None:
    rlat_kw = dict(rlat_kw.to_dict() if hasattr(rlat_kw, "to_dict") else rlat_kw)
    bad = sorted(set(rlat_kw) - set(RLAT_KEYS))
    if bad:
      raise ValueError(f"rlat has unknown keys {bad}; expected some of {RLAT_KEYS}.")
    rlat_kw = {"eps": 0.08, "norm": "l2", "layers": None, "fraction": 1.0, **rlat_kw}
    rlat_kw["eps"], rlat_kw["fraction"] = float(rlat_kw["eps"]), float(rlat_kw["fraction"])
    check_norm(rlat_kw["norm"], "rlat norm")
    check_nonnegative(rlat_kw["eps"], "rlat eps")
    check_fraction(rlat_kw["fraction"], "rlat fraction")
    rlat_kw["layers"] = rlat_lib.check_layers(model, rlat_kw["layers"])

  gen = NoiseGenerator(kernel=kernel, features=features)
  adam = optax.scale_by_adam()

  def eps_for(shape):
    return default_eps(shape[1:]) if eps is None else eps

  def generator_step(params, batch_stats, gen_params, opt_state, images, labels, key, lr):
    """One Adam ascent step of the generator's CE on `images`; returns (gp, opt, loss)."""
    frozen_eps = eps_for(images.shape)

    def objective(gp):
      delta = sample_noise(gen, gp, key, images.shape)
      noisy = clip_aware_rescale(images, delta, frozen_eps)
      return cross_entropy(_eval_logits(model, params, batch_stats, noisy), labels)

    loss, grads = jax.value_and_grad(objective)(gen_params)
    updates, opt_state = adam.update(jax.tree.map(jnp.negative, grads), opt_state, gen_params)
    gen_params = optax.apply_updates(gen_params, jax.tree.map(lambda u: -lr * u, updates))
    return gen_params, opt_state, loss

  def init(key, image_shape):
    gp = init_generator(gen, key, image_shape[-1])
    return {"generator": gp, "opt_state": adam.init(gp),
            "replay": jax.tree.map(lambda a: jnp.zeros((replay_size, *a.shape), a.dtype), gp),
            "num_saved": jnp.zeros((), jnp.int32)}

  def loss_fn(params, batch_stats, batch, key, state):
    x, y = batch["image"], batch["label"]
    b = x.shape[0]
    gen_key, noise_key, dropout_key = jax.random.split(key, 3)
    n_clean = split_sizes(b, clean_fraction, current_fraction)[2]
    n_noisy = b - n_clean
    gp, opt_state, gen_loss = state["generator"], state["opt_state"], jnp.zeros(())
    if n_noisy:
      gp, opt_state, gen_loss = generator_step(params, batch_stats, gp, opt_state,
                                               x[:n_noisy], y[:n_noisy], gen_key, generator_lr)
    new_state = dict(state, generator=gp, opt_state=opt_state)
    x_train = ant_images(gen, new_state, x, noise_key, eps=eps_for(x.shape),
                         clean_fraction=clean_fraction, current_fraction=current_fraction)
    x_train = jax.lax.stop_gradient(x_train)
    metrics = {}
    if rlat_kw is None:
      logits, new_stats = train_apply(model, params, batch_stats, x_train, dropout_key)
    else:
      deltas, clean = rlat_lib.rlat_deltas(model, params, batch_stats,
                                           {"image": x_train, "label": y}, dropout_key,
                                           **rlat_kw)
      logits, new_stats, _ = rlat_lib.perturbed_apply(model, params, batch_stats, x_train,
                                                      deltas, dropout_key)
      metrics["ant_clean_loss"] = clean["loss"]
    loss = cross_entropy(logits, y)
    noisy_mask = (jnp.arange(b) < n_noisy).astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
    metrics.update({
        "accuracy": accuracy(logits, y),
        "noisy_accuracy": jnp.sum(correct * noisy_mask) / max(n_noisy, 1),
        "clean_accuracy": jnp.sum(correct * (1 - noisy_mask)) / max(n_clean, 1),
        "generator_loss": gen_loss,
        "perturbation_norm": jnp.sum(per_example_l2(x_train - x) * noisy_mask) / max(n_noisy, 1),
        "replay_filled": jnp.minimum(state["num_saved"], replay_size).astype(jnp.float32),
    })
    return loss, {"batch_stats": new_stats, "metrics": metrics,
                  "method_state": jax.lax.stop_gradient(new_state)}

  def epoch_start(params, batch_stats, state, key):
    """Saves the current generator into the replay ring and starts a new one."""
    slot = state["num_saved"] % replay_size
    replay = jax.tree.map(lambda buf, g: buf.at[slot].set(g), state["replay"],
                          state["generator"])
    channels = state["generator"]["conv1"]["kernel"].shape[-2]
    gp = init_generator(gen, key, channels)
    return {"generator": gp, "opt_state": adam.init(gp), "replay": replay,
            "num_saved": state["num_saved"] + 1}

  def epoch_start_step(params, batch_stats, state, batch, key):
    """One pretraining step of the new generator on a whole extra batch."""
    gp, opt_state, loss = generator_step(params, batch_stats, state["generator"],
                                         state["opt_state"], batch["image"], batch["label"],
                                         key, restart_lr)
    return dict(state, generator=gp, opt_state=opt_state), {"generator_loss": loss}

  return StatefulLoss(loss_fn=loss_fn, init=init, epoch_start=epoch_start,
                      epoch_start_step=epoch_start_step if restart_steps else None,
                      epoch_start_steps=restart_steps)
