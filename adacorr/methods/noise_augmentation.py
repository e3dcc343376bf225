"""Noise data augmentation as `LossFn` factories.

* Gaussian augmentation (Kireev et al. 2022 baselines; reference `--attack random_gs`):
  `clip(x + sigma * N(0, 1), 0, 1)` on a fraction of the batch: 50% with sigma 0.1 or
  100% with sigma 0.05 on CIFAR-10.
* GNT_mult (Rusak et al. 2020): Gaussian noise with sigma drawn per image uniformly from
  {0.08, 0.12, 0.18, 0.26, 0.38}.
* Speckle (Rusak et al. 2020): `clip(x + x * N(0, 1) * sigma, 0, 1)`, sigma drawn per image
  from {0.15, 0.2, 0.35, 0.45, 0.6}.

The noisy examples are the FIRST `round(fraction * B)` of the batch (the reference
perturbs the last ones of a shuffled batch; equivalent). Each example's noise (and its
sigma) comes from its own key, `jax.random.split(key, B)[i]`, so example i's noise does
not depend on the batch size or on the other examples. GNT_mult and Speckle default to
50% of the batch, as Rusak et al. train GNT on half clean / half noisy batches.
Loss: mean cross-entropy over the whole (partly noisy) batch, train-mode BatchNorm.

Checked against the reference code: bethgelab/game-of-noise `utils.generate_noisy_data`
(`Gauss_single`: sigma 0.5 on the last `1 - p_clean` = 50% of the batch;
`gaussian_noise_torch`: sigma per image from {.08, .12, .18, .26, .38};
`speckle_noise_torch`: `x + x * N * sigma`, sigma per image from {.15, .2, .35, .45, .6};
every one clipped to [0, 1], on the last 50%) and tml-epfl/adv-training-corruptions
`train.py` (`--attack random_gs`: `clamp(x + eps * N, 0, 1)`, `--batch-part` f keeps the
first `int((1 - f) B)` clean; train-mode forward). Same noise, same clipping, same
fractions (our perturbed part is the first one: equivalent on shuffled batches), train
mode; nothing changed. Optimisation is the configs' (see `ant` for Rusak et al.'s
fine-tuning settings, `adversarial_training` for Kireev et al.'s).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adacorr.methods.common import (
    accuracy, check_fraction, check_nonnegative, cross_entropy, perturbed_mask, train_apply)

KINDS = ("gaussian", "speckle")
GNT_MULT_SIGMAS = (0.08, 0.12, 0.18, 0.26, 0.38)
SPECKLE_SIGMAS = (0.15, 0.2, 0.35, 0.45, 0.6)


def example_sigmas(key: jax.Array, batch_size: int, sigmas: Sequence[float]) -> jax.Array:
  """(B,) sigma per example, uniform over `sigmas`, from the per-example keys of `key`."""
  keys = jax.random.split(key, batch_size)
  table = jnp.asarray(sigmas, jnp.float32)
  return jax.vmap(lambda k: table[jax.random.randint(jax.random.fold_in(k, 1), (), 0,
                                                      len(sigmas))])(keys)


def add_noise(images: jax.Array, key: jax.Array, *, kind: str = "gaussian",
              sigmas: Sequence[float] = (0.1,), fraction: float = 1.0
              ) -> tuple[jax.Array, jax.Array]:
  """Noisy images and the (B,) sigma used per example (0 for the clean ones).

  Args:
    images: (B, H, W, C) in [0, 1].
    key: PRNG key, split into one key per example.
    kind: 'gaussian' (`x + sigma * n`) or 'speckle' (`x + x * n * sigma`); then clip.
    sigmas: one sigma (fixed) or several (uniformly drawn per example).
    fraction: the first `round(fraction * B)` examples get noise.
  """
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r} is not one of {KINDS}.")
  if len(sigmas) == 0:
    raise ValueError("sigmas must not be empty.")
  for s in sigmas:
    check_nonnegative(s, "sigma")
  check_fraction(fraction)
  b = images.shape[0]
  keys = jax.random.split(key, b)
  noise = jax.vmap(
      lambda k: jax.random.normal(jax.random.fold_in(k, 0), images.shape[1:], images.dtype)
  )(keys)
  sigma = example_sigmas(key, b, sigmas) if len(sigmas) > 1 else jnp.full(
      (b,), sigmas[0], jnp.float32)
  sigma = jnp.where(perturbed_mask(fraction, b), sigma, 0.0).astype(images.dtype)
  s = sigma.reshape((b,) + (1,) * (images.ndim - 1))
  delta = s * noise if kind == "gaussian" else images * noise * s
  return jnp.clip(images + delta, 0.0, 1.0), sigma


def make_noise_augmentation(model: nn.Module, *, kind: str = "gaussian",
                            sigma: float | Sequence[float] = 0.1, fraction: float = 0.5):
  """Noise augmentation LossFn; `sigma` a float or a sequence to draw from per image.

  Metrics: 'accuracy' (whole trained-on
  batch), 'clean_accuracy' / 'noisy_accuracy' (on the clean / noisy part; 0 when that
  part is empty) and 'perturbation_norm' (mean l2 norm of the noise actually added, over
  the noisy examples).
  """
  kw = dict(kind=kind, sigma=sigma, fraction=fraction)
  kind, fraction = kw["kind"], float(kw["fraction"])
  sigmas = tuple(float(s) for s in (kw["sigma"] if isinstance(kw["sigma"], (list, tuple))
                                    else (kw["sigma"],)))
  # Validate now, not at trace time.
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r} is not one of {KINDS}.")
  for s in sigmas:
    check_nonnegative(s, "sigma")
  check_fraction(fraction)

  def loss_fn(params, batch_stats, batch, key):
    noise_key, dropout_key = jax.random.split(key)
    x, y = batch["image"], batch["label"]
    x_noisy, _ = add_noise(x, noise_key, kind=kind, sigmas=sigmas, fraction=fraction)
    logits, new_stats = train_apply(model, params, batch_stats, x_noisy, dropout_key)
    loss = cross_entropy(logits, y)
    mask = perturbed_mask(fraction, x.shape[0]).astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
    n_noisy = jnp.sum(mask)
    n_clean = mask.shape[0] - n_noisy
    delta_norm = jnp.sqrt(jnp.sum(jnp.square(x_noisy - x), axis=(1, 2, 3)))
    metrics = {
        "accuracy": accuracy(logits, y),
        "noisy_accuracy": jnp.sum(correct * mask) / jnp.maximum(n_noisy, 1),
        "clean_accuracy": jnp.sum(correct * (1 - mask)) / jnp.maximum(n_clean, 1),
        "perturbation_norm": jnp.sum(delta_norm * mask) / jnp.maximum(n_noisy, 1),
    }
    return loss, {"batch_stats": new_stats, "metrics": metrics}

  return loss_fn


def make_gaussian_augmentation(model: nn.Module, *, sigma: float = 0.1,
                               fraction: float = 0.5):
  """Gaussian augmentation; defaults: sigma 0.1 on 50% (the other CIFAR setting: 0.05, 1.0)."""
  return make_noise_augmentation(model, kind="gaussian", sigma=sigma,
                                 fraction=fraction)


def make_gnt_mult(model: nn.Module, *,
                  sigmas: Sequence[float] = GNT_MULT_SIGMAS, fraction: float = 0.5):
  """GNT_mult: Gaussian noise, sigma per image uniform over `sigmas`."""
  return make_noise_augmentation(model, kind="gaussian", sigma=tuple(sigmas),
                                 fraction=fraction)


def make_speckle(model: nn.Module, *,
                 sigmas: Sequence[float] = SPECKLE_SIGMAS, fraction: float = 0.5):
  """Speckle noise `x + x * n * sigma`, sigma per image uniform over `sigmas`."""
  return make_noise_augmentation(model, kind="speckle", sigma=tuple(sigmas),
                                 fraction=fraction)
