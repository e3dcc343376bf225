"""Adversarial Noise Training (ANT; Rusak et al. 2020) as a `StatefulLoss` factory.

A noise generator (`adacorr.augment.noise_generator.NoiseGenerator`, 1x1 or 3x3) is
trained jointly with the classifier to produce the noise distribution that fools it
most, and the classifier trains on that noise. Images are NHWC float32 in [0, 1].

Per batch (B examples):

1. One Adam step (lr `generator_lr`, 1e-4) on the generator, maximising the
   cross-entropy of the classifier on the WHOLE batch (clean images, every noised with
   a fresh sample); the classifier is frozen (`stop_gradient`) and in EVAL mode. Paper
   Eq. 3 maximises over the data distribution; the reference's `train_noise_generator`
   takes the whole batch.
2. The training batch: the first `current_fraction` (30%) get noise from the current
   generator (after its step), the next `1 - clean_fraction - current_fraction` (20%)
   noise from generators saved at epoch starts (experience replay), the last
   `clean_fraction` (50%) stay clean. Replay (`replay_generators=2`, the reference's
   `p_history` 0.1 = 20% / 2): `replay_generators` saved generators are drawn at random
   without replacement among the filled slots of the replay buffer (every generator
   saved so far, the current epoch's own as pretrained included, as in the reference),
   each noising an equal contiguous share of the replay part (10% each). In epoch 0 (no generator of an
   earlier epoch saved yet) the replay part uses the current generator, as the
   reference does (`p_current = 1 - p_clean` in epoch 0). `replay_generators=None`:
   a saved generator drawn per example instead (this module's earlier reading of the
   paper's "samples chosen randomly from previous distributions"). Every noise sample is
   rescaled with `clip_aware_rescale` so that `||clip(x + eta * delta, 0, 1) - x||_2 = eps`.
3. Cross-entropy of the classifier in TRAIN mode on the whole batch. With `rlat`, the
   classifier trains instead with RLAT (Kireev et al. 2022) on that ANT batch.

Restarts (paper: "to prevent the noise generator from being stuck in a local minimum,
we halt ANT at regular intervals and train a new noise generator from scratch"): at the
start of EVERY epoch, the first included, a new generator is initialised and pretrained
for `restart_steps` Adam steps (lr `restart_lr`, 5e-4; a fresh Adam) against the current
classifier (eval mode) on whole batches. That freshly pretrained generator is what the
replay buffer (a ring of `replay_size` slots) saves, before any per-batch step; the
per-batch steps then start a NEW Adam (lr `generator_lr`): no moments carry over from
the pretraining.

How this maps onto the loop (`adacorr.train.loop`), which runs `epoch_start` and
`epoch_start_step` (on `restart_steps` extra batches) before every epoch, epoch 0
included: `epoch_start` draws the new generator and marks it 'pending_save', and
`epoch_start_step` pretrains it on `restart_steps` DISTINCT batches (the reference's
retraining loop over its training loader, up to 1001 batches); the first training step
after it saves it into the replay buffer and resets Adam. Used without the loop (a
loss function sees no other batch), the first training step of a never-pretrained
generator does the pretraining itself (a `lax.cond`, taken once): `restart_steps` Adam
steps on ITS batch, each with fresh noise: our earlier epoch 0 under the loop too.

The reference training code (bethgelab/game-of-noise `main.py` + `utils.py`; defaults eps
135, generator lr 1e-4, retrain lr 5e-4, p_clean 0.5, p_current 0.3, p_history 0.1;
`retrain_ng_and_evaluate` runs up to 1001 batches) does the above, with one bug NOT copied
here: its batch noise comes from `noise_models[args.mode]`, a dict filled once with the
ORIGINAL generator object, while `noise_gen` is rebound to every retrained generator; so
its "current" 30% comes from the never-trained initial generator (Gaussian noise at the
custom init), and the trained current generator noises nothing. Here (as the paper
says: "the current state of the noise generator is used to perturb 30%") it is the
current generator. The reference also keeps every saved generator (files); here a ring
of `replay_size` (100) slots.

eps (no value for CIFAR-10 or Fashion-MNIST is published). The rule of the configs: eps
is the l2 norm, after clipping, of the dataset's best Gaussian noise training
perturbation, `E_x ||clip(x + sigma z, 0, 1) - x||_2` (`gaussian_noise_eps`). It
reproduces the paper's ImageNet value: Rusak et al.'s best sigma 0.5 gives 135-136 on
ImageNet-like pixel values (an rms change of 0.348 per pixel), their eps 135. CIFAR-10:
sigma 0.1 (Kireev et al.) gives ~5.36 (unclipped 0.1 * sqrt(3072) = 5.54); Fashion-MNIST
with sigma 0.1: 2.32 (unclipped 2.8). `eps=None` (no data at hand) uses the unclipped
`default_eps` = 0.1 * sqrt(H * W * C), an upper bound of the rule.

Checked against the reference code (bethgelab/game-of-noise `main.py`, `utils.py`
(`train_noise_generator`, `train_classifier`, `retrain_ng_and_evaluate`,
`generate_noisy_data`), `evaluation_utils.py` (`fix_perturbation_size`),
`Networks/generators.py`, `datasets.py`) for choices the paper does not state:
  - BatchNorm: the classifier is in EVAL mode for every generator step (per batch and
    pretraining, `model.eval()`) and in train mode for its own step. Same.
  - Generator step: on the whole clean batch with a fresh z, Adam (torch defaults, no
    weight decay), loss = -CE (mean); the generator has no BatchNorm/dropout, so its
    train/eval switch is a no-op. Same.
  - Training noise: a new z after the generator step, `.detach()`-ed; clipping-aware
    rescaling to exactly eps, eps unreachable -> the fully clipped point; gradient
    through eta in the generator step. Same.
  - Batch layout: current | replay | clean (first 30% | next 20% | last 50%), rounded
    with `np.round` (ours: halves up; the same for the usual batch sizes); epoch 0
    noises the whole 50% with the current generator. Same (and see the bug above).
  - Replay: every saved generator (the current epoch's included) shuffled, the first
    `(1 - p_clean - p_current) / p_history` = 2 taken, 10% of the batch each; saved
    generators are the freshly pretrained ones, before any per-batch step. Same (ours:
    a ring of `replay_size`).
  - Restart: every epoch, the first included, a fresh generator and a fresh Adam (lr
    5e-4) on up to 1001 batches of a separately shuffled loader (`batch_idx > 1000`
    stops); ours `restart_steps=1000`, the paper's number; then a fresh Adam (1e-4)
    for the per-batch steps. Same.
  - Generator init: weights N(0, 0.01), biases 0 (`custom_init_ng`). Same.
  Nothing changed here. Classifier optimisation of the reference (ImageNet, reported; the
  configs are CIFAR-10 / Fashion-MNIST, trained from scratch with the RLAT settings):
  fine-tuning a torchvision-pretrained ResNet-50 with SGD lr 1e-3, momentum 0.9, no
  weight decay, no Nesterov, StepLR /10 every 60 epochs, 120 (+1) epochs, batch 70,
  RandomResizedCrop(224) + flip.

Method state (`TrainState.method_state`): 'generator' (params), 'opt_state' (Adam
moments of the pretraining, then of the per-batch steps), 'replay' (the saved
generators' params stacked along a leading axis of `replay_size`), 'num_saved' (int32,
generators saved so far), 'pending_save' (int32 1: the current generator is a new one
not saved yet) and 'pretrain_steps' (int32, pretraining steps of the current generator).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from adacorr.core.radius import as_radius
from adacorr.augment.noise_generator import (
    KERNELS, NoiseGenerator, clip_aware_rescale, init_generator, sample_noise)
from adacorr.core.checks import check_images
from adacorr.methods.common import (
    accuracy, check_fraction, check_nonnegative, check_norm, cross_entropy, num_perturbed,
    per_example_l2, train_apply)
from adacorr.methods import rlat as rlat_lib
from adacorr.core.types import StatefulLoss

PAPER_EPS = 135.0                 # on 224x224x3 ImageNet images in [0, 1]
PAPER_DIM = 224 * 224 * 3
GAUSSIAN_SIGMA = 0.1              # the best CIFAR-10 Gaussian noise (Kireev et al. 2022)
RLAT_KEYS = ("eps", "norm", "layers", "fraction", "linf_bound", "attack_bn_stats")
ADAM = optax.scale_by_adam()      # torch.optim.Adam's defaults (b1 0.9, b2 0.999, eps 1e-8)


def default_eps(image_shape, sigma: float = GAUSSIAN_SIGMA) -> float:
  """`sigma * sqrt(H * W * C)`: the unclipped l2 norm of N(0, sigma^2) noise on an image
  of `image_shape` (H, W, C); an upper bound of `gaussian_noise_eps` (clipping only
  shrinks the perturbation). CIFAR-10 at sigma 0.1: 5.54; Fashion-MNIST: 2.8."""
  check_nonnegative(sigma, "sigma")
  return float(sigma) * math.sqrt(math.prod(image_shape))


def gaussian_noise_eps(images: jax.Array, sigma: float, key: jax.Array) -> jax.Array:
  """The configs' eps rule: mean over `images` of `||clip(x + sigma z, 0, 1) - x||_2`.

  Args:
    images: (N, H, W, C) in [0, 1], e.g. (a sample of) the training set.
    sigma: the standard deviation of the Gaussian noise (>= 0).
    key: PRNG key of z ~ N(0, 1).

  Returns:
    float32 scalar: the mean l2 norm of the clipped Gaussian perturbation. Jittable.
  """
  check_images(images, "images")
  check_nonnegative(sigma, "sigma")
  z = jax.random.normal(key, images.shape, jnp.float32)
  return jnp.mean(per_example_l2(jnp.clip(images + sigma * z, 0.0, 1.0) - images))


def split_sizes(batch_size: int, clean_fraction: float, current_fraction: float
                ) -> tuple[int, int, int]:
  """(current, replay, clean) example counts: the batch's first, middle, last part."""
  n_clean = num_perturbed(clean_fraction, batch_size)
  n_noisy = batch_size - n_clean
  n_current = min(num_perturbed(current_fraction, batch_size), n_noisy)
  return n_current, n_noisy - n_current, n_clean


def replay_parts(num_replay: int, replay_generators: int) -> jax.Array:
  """(num_replay,) int32: the share (0 .. replay_generators - 1) of each replay example;
  contiguous shares whose sizes differ by at most one (26 examples, 2 shares: 13 + 13)."""
  return (jnp.arange(num_replay, dtype=jnp.int32) * replay_generators) // max(num_replay, 1)


def replay_sources(state: Mapping[str, Any], key: jax.Array, num_replay: int,
                   replay_generators: int | None) -> tuple[jax.Array, jax.Array]:
  """Which generator noises each of the `num_replay` replay examples.

  Returns `(slots, replayed)`, both (num_replay,): the replay slot, and whether that
  saved generator is used (False: the current generator; in epoch 0, i.e. while at most
  one generator is saved, the current epoch's own, and for shares beyond the filled
  slots). `replay_generators` slots are drawn without replacement among the filled ones
  and share the examples as `replay_parts`; None: one slot drawn per example.
  """
  replay_size = jax.tree.leaves(state["replay"])[0].shape[0]
  filled = jnp.minimum(state["num_saved"], replay_size)
  history = state["num_saved"] > 1
  if replay_generators is None:
    slots = jax.random.randint(key, (num_replay,), 0, jnp.maximum(filled, 1))
    return slots, jnp.broadcast_to(history & (filled > 0), (num_replay,))
  scores = jnp.where(jnp.arange(replay_size) < filled,
                     jax.random.uniform(key, (replay_size,)), 2.0)
  order = jnp.argsort(scores)                    # filled slots first, in random order
  parts = replay_parts(num_replay, replay_generators)
  slots = order[jnp.minimum(parts, replay_size - 1)]
  return slots, history & (parts < filled)


def ant_images(generator: NoiseGenerator, state: Mapping[str, Any], images: jax.Array,
               key: jax.Array, *, eps: float, clean_fraction: float = 0.5,
               current_fraction: float = 0.3, replay_generators: int | None = 2
               ) -> jax.Array:
  """The images ANT trains on: (B, H, W, C) in [0, 1], parts as `split_sizes`.

  The first part gets noise from `state['generator']`, the middle part from the replay
  buffer `state['replay']` as `replay_sources` says, the last part is `images`
  unchanged; every noise sample rescaled to l2 norm `eps` after clipping
  (`clip_aware_rescale`). Example i's z comes from `split(key', n_noisy)[i]`. Not
  stop-gradient-ed.
  """
  b, shape = images.shape[0], images.shape[1:]
  n_cur, n_rep, _ = split_sizes(b, clean_fraction, current_fraction)
  n_noisy = n_cur + n_rep
  if n_noisy == 0:
    return images
  noise_key, slot_key = jax.random.split(key)
  slots, replayed = replay_sources(state, slot_key, n_rep, replay_generators)
  # Example i's generator: the current one for i < n_cur, else replay slot slots[i - n_cur]
  # (or the current one). One per-example pass for both parts.
  slots = jnp.concatenate([jnp.zeros((n_cur,), jnp.int32), slots.astype(jnp.int32)])
  replayed = jnp.concatenate([jnp.zeros((n_cur,), bool), replayed])
  per_example = jax.tree.map(
      lambda buf, cur: jnp.where(replayed.reshape((-1,) + (1,) * cur.ndim), buf[slots],
                                 cur[None]),
      state["replay"], state["generator"])
  delta = sample_noise(generator, per_example, noise_key, (n_noisy, *shape),
                       per_example=True)
  noisy = clip_aware_rescale(images[:n_noisy], delta, eps)
  return jnp.concatenate([noisy, images[n_noisy:]], 0)


def generator_step(generator: NoiseGenerator, logits_fn: Callable[[jax.Array], jax.Array],
                   gen_params: Any, opt_state: Any, images: jax.Array, labels: jax.Array,
                   key: jax.Array, *, eps: float, lr: float) -> tuple[Any, Any, jax.Array]:
  """One Adam ASCENT step of the classifier's cross-entropy on noised `images`.

  Every image of `images` (B, H, W, C) in [0, 1] gets a sample of the generator (z from
  `key`), rescaled to l2 norm `eps` after clipping. `logits_fn(images) -> (B, K)` is the
  frozen classifier (eval mode; stop the gradient to its weights). `opt_state`: `ADAM`'s
  state. Returns `(gen_params, opt_state, loss)`, loss the CE before the step.
  """

  def objective(gp):
    delta = sample_noise(generator, gp, key, images.shape)
    return cross_entropy(logits_fn(clip_aware_rescale(images, delta, eps)), labels)

  loss, grads = jax.value_and_grad(objective)(gen_params)
  updates, opt_state = ADAM.update(jax.tree.map(jnp.negative, grads), opt_state, gen_params)
  gen_params = optax.apply_updates(gen_params, jax.tree.map(lambda u: -lr * u, updates))
  return gen_params, opt_state, loss


def _eval_logits(model, params, batch_stats, images):
  return model.apply({"params": jax.lax.stop_gradient(params),
                      "batch_stats": jax.lax.stop_gradient(batch_stats)}, images, train=False)


def make_ant(model: nn.Module, *, generator: str = "1x1",
             eps: float | None = None, clean_fraction: float = 0.5,
             current_fraction: float = 0.3, replay_generators: int | None = 2,
             generator_lr: float = 1e-4, restart_lr: float = 5e-4, restart_steps: int = 1000,
             replay_size: int = 100, features: int = 20,
             rlat: Mapping[str, Any] | None = None) -> StatefulLoss:
  """ANT (ANT^1x1 / ANT^3x3), optionally combined with RLAT. See the module docstring.

  Args:
    model: the classifier (flax, NHWC in [0, 1]).
    generator: '1x1' (i.i.d. noise) or '3x3' (locally correlated noise).
    eps: l2 norm of every noise sample after clipping; None: `default_eps` of the image
      size (0.1 * sqrt(H * W * C)). The configs give `gaussian_noise_eps`'s value.
    clean_fraction: the last part of the batch, kept clean (0.5).
    current_fraction: the first part, noised by the current generator (0.3); the part
      between (0.2) gets replayed noise.
    replay_generators: saved generators drawn per batch for the replay part, each
      noising an equal share (2: the reference's p_history 0.1 each); None: one drawn
      per example.
    generator_lr: Adam lr of the per-batch generator step (1e-4).
    restart_lr: Adam lr of the new generator's pretraining at each epoch start (5e-4).
    restart_steps: pretraining batches per epoch start (paper: up to 1000). 0: the new
      generator starts untrained.
    replay_size: slots of the replay buffer (a ring: the oldest is overwritten).
    features: width of the generator's hidden convs (20).
    rlat: None, or RLAT keywords (eps, norm, layers, fraction, linf_bound,
      attack_bn_stats; see `make_rlat`, whose defaults apply) to train with RLAT on the
      ANT batch (ANT + RLAT, Kireev et al. 2022).

  Returns:
    A `StatefulLoss`. Metrics: 'accuracy' (trained-on batch), 'clean_accuracy' /
    'noisy_accuracy' (its clean / noisy part), 'generator_loss' (the generator's CE
    objective before its step), 'perturbation_norm' (mean l2 norm of the applied noise),
    'replay_filled' (saved generators available), 'generator_pretrain_steps' (the
    current generator's pretraining steps); with RLAT also 'ant_clean_loss'.

  Raises:
    ValueError: naming the argument, for a bad value.
  """
  kw = dict(generator=generator, eps=eps, clean_fraction=clean_fraction,
            current_fraction=current_fraction, replay_generators=replay_generators,
            generator_lr=generator_lr, restart_lr=restart_lr, restart_steps=restart_steps,
            replay_size=replay_size, features=features, rlat=rlat)
  kernel = kw["generator"]
  if kernel not in KERNELS:
    raise ValueError(f"generator={kernel!r} is not one of {KERNELS}.")
  eps = None if kw["eps"] is None else float(as_radius(kw["eps"]))
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
  replay_generators = kw["replay_generators"]
  checked = [("restart_steps", restart_steps, 0), ("replay_size", replay_size, 1),
             ("features", features, 1)]
  if replay_generators is not None:
    checked.append(("replay_generators", replay_generators, 1))
  for name, value, low in checked:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ValueError(f"{name} must be an int >= {low}, got {name}={value!r}.")
  rlat_kw = kw["rlat"]
  if rlat_kw is not None:
    rlat_kw = dict(rlat_kw.to_dict() if hasattr(rlat_kw, "to_dict") else rlat_kw)
    bad = sorted(set(rlat_kw) - set(RLAT_KEYS))
    if bad:
      raise ValueError(f"rlat has unknown keys {bad}; expected some of {RLAT_KEYS}.")
    rlat_kw = {"eps": 0.08, "norm": "l2", "layers": None, "fraction": 1.0,
               "linf_bound": "global", "attack_bn_stats": "update", **rlat_kw}
    rlat_kw["eps"], rlat_kw["fraction"] = float(rlat_kw["eps"]), float(rlat_kw["fraction"])
    check_norm(rlat_kw["norm"], "rlat norm")
    check_nonnegative(rlat_kw["eps"], "rlat eps")
    check_fraction(rlat_kw["fraction"], "rlat fraction")
    rlat_kw["layers"] = rlat_lib.check_layers(model, rlat_kw["layers"])
    if rlat_kw["linf_bound"] not in rlat_lib.LINF_BOUNDS:
      raise ValueError(f"rlat linf_bound must be one of {rlat_lib.LINF_BOUNDS}, got "
                       f"{rlat_kw['linf_bound']!r}.")
    rlat_lib.check_attack_bn_stats(rlat_kw["attack_bn_stats"])

  gen = NoiseGenerator(kernel=kernel, features=features)

  def eps_for(shape):
    return default_eps(shape[1:]) if eps is None else eps

  def new_generator(key, channels):
    gp = init_generator(gen, key, channels)
    return {"generator": gp, "opt_state": ADAM.init(gp),
            "pending_save": jnp.ones((), jnp.int32), "pretrain_steps": jnp.zeros((), jnp.int32)}

  def init(key, image_shape):
    state = new_generator(key, image_shape[-1])
    state["replay"] = jax.tree.map(lambda a: jnp.zeros((replay_size, *a.shape), a.dtype),
                                   state["generator"])
    state["num_saved"] = jnp.zeros((), jnp.int32)
    return state

  def pretrain(logits_fn, gp, opt_state, images, labels, key):
    """`restart_steps` pretraining steps on `images` (epoch 0), fresh noise each."""
    def body(i, carry):
      return generator_step(gen, logits_fn, *carry, images, labels,
                            jax.random.fold_in(key, i), eps=eps_for(images.shape),
                            lr=restart_lr)[:2]
    return jax.lax.fori_loop(0, restart_steps, body, (gp, opt_state))

  def start_training(state, logits_fn, images, labels, key):
    """Epoch 0's pretraining (if the loop ran no epoch start), then the pending save of
    the new generator into the replay buffer and a fresh Adam for the per-batch steps."""
    gp, opt_state = state["generator"], state["opt_state"]
    pending = state["pending_save"] > 0
    pretrain_steps = state["pretrain_steps"]
    if restart_steps:
      first = pending & (state["num_saved"] == 0) & (pretrain_steps == 0)
      gp, opt_state = jax.lax.cond(
          first, lambda: pretrain(logits_fn, gp, opt_state, images, labels, key),
          lambda: (gp, opt_state))
      pretrain_steps = jnp.where(first, restart_steps, pretrain_steps)
    slot = state["num_saved"] % replay_size
    replay = jax.tree.map(lambda buf, g: jnp.where(pending, buf.at[slot].set(g), buf),
                          state["replay"], gp)
    opt_state = jax.tree.map(lambda fresh, old: jnp.where(pending, fresh, old),
                             ADAM.init(gp), opt_state)
    return dict(state, generator=gp, opt_state=opt_state, replay=replay,
                num_saved=state["num_saved"] + pending.astype(jnp.int32),
                pending_save=jnp.zeros((), jnp.int32), pretrain_steps=pretrain_steps)

  def loss_fn(params, batch_stats, batch, key, state):
    x, y = batch["image"], batch["label"]
    b = x.shape[0]
    gen_key, noise_key, dropout_key, pretrain_key = jax.random.split(key, 4)
    n_clean = split_sizes(b, clean_fraction, current_fraction)[2]
    n_noisy = b - n_clean
    logits_fn = lambda images: _eval_logits(model, params, batch_stats, images)
    new_state = start_training(state, logits_fn, x, y, pretrain_key)
    gp, opt_state, gen_loss = generator_step(gen, logits_fn, new_state["generator"],
                                             new_state["opt_state"], x, y, gen_key,
                                             eps=eps_for(x.shape), lr=generator_lr)
    new_state = dict(new_state, generator=gp, opt_state=opt_state)
    x_train = ant_images(gen, new_state, x, noise_key, eps=eps_for(x.shape),
                         clean_fraction=clean_fraction, current_fraction=current_fraction,
                         replay_generators=replay_generators)
    x_train = jax.lax.stop_gradient(x_train)
    metrics = {}
    if rlat_kw is None:
      logits, new_stats = train_apply(model, params, batch_stats, x_train, dropout_key)
    else:
      logits, new_stats, _, clean = rlat_lib.rlat_apply(
          model, params, batch_stats, {"image": x_train, "label": y}, dropout_key,
          **rlat_kw)
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
        "replay_filled": jnp.minimum(new_state["num_saved"], replay_size).astype(jnp.float32),
        "generator_pretrain_steps": new_state["pretrain_steps"].astype(jnp.float32),
    })
    return loss, {"batch_stats": new_stats, "metrics": metrics,
                  "method_state": jax.lax.stop_gradient(new_state)}

  def epoch_start(params, batch_stats, state, key):
    """Starts a new generator (a fresh Adam for its pretraining); the first training step
    after the pretraining saves it into the replay buffer."""
    channels = state["generator"]["conv1"]["kernel"].shape[-2]
    return dict(state, **new_generator(key, channels))

  def epoch_start_step(params, batch_stats, state, batch, key):
    """One pretraining step of the new generator on a whole extra batch."""
    logits_fn = lambda images: _eval_logits(model, params, batch_stats, images)
    gp, opt_state, loss = generator_step(gen, logits_fn, state["generator"],
                                         state["opt_state"], batch["image"], batch["label"],
                                         key, eps=eps_for(batch["image"].shape), lr=restart_lr)
    return (dict(state, generator=gp, opt_state=opt_state,
                 pretrain_steps=state["pretrain_steps"] + 1), {"generator_loss": loss})

  return StatefulLoss(loss_fn=loss_fn, init=init, epoch_start=epoch_start,
                      epoch_start_step=epoch_start_step if restart_steps else None,
                      epoch_start_steps=restart_steps)
