"""VQ-VAE corruption net (van den Oord et al. 2017) with an EMA codebook, in flax.linen.

A port of the standard DeepMind Sonnet 2 example (`sonnet/examples/vqvae_example.ipynb`
with `vq_use_ema=True`) and of `snt.nets.VectorQuantizerEMA`
(`sonnet/src/nets/vqvae.py`, `sonnet/src/moving_averages.py`):

  encoder  conv4x4 s2 -> num_hiddens//2, ReLU, conv4x4 s2 -> num_hiddens, ReLU,
           conv3x3 -> num_hiddens, ReLU, residual stack (which ends with a ReLU)
  pre-VQ   conv1x1 -> embedding_dim ("to_vq")
  VQ       `VectorQuantizerEMA` (512 codes of dim 64, commitment 0.25, decay 0.99)
  decoder  conv3x3 -> num_hiddens, residual stack, transposed conv4x4 s2 ->
           num_hiddens//2, ReLU, transposed conv4x4 s2 -> C
  residual stack: num_residual_layers x [ReLU, conv3x3 -> num_residual_hiddens, ReLU,
           conv1x1 -> num_hiddens, add], then ReLU.

All convolutions use "SAME" padding (Sonnet's default) and biases, so the latent grid is
(H/4, W/4): 7x7 for 28x28 inputs, 8x8 for 32x32. The example feeds images in
[-0.5, 0.5]; our interface is [0, 1], so `VQVAE` subtracts 0.5 on the way in, adds it
back on the way out and clips to [0, 1].

Variables: 'params' holds every kernel and bias (662,723 at C=3); the collection
'vq_ema' holds the codebook and its EMA statistics (99,330 numbers: `embeddings`
(64, 512), `ema_cluster_size` {hidden, average (512,), counter ()}, `ema_dw` {hidden,
average (64, 512), counter ()}), together 762,053, the count the AdA paper reports.
Initialisers follow Sonnet: conv kernels truncated normal with stddev 1/sqrt(fan_in)
(for Sonnet's transposed conv, fan_in = kh*kw*output_channels), biases zero, codebook
variance-scaling uniform on (embedding_dim, num_embeddings) with fan_in = embedding_dim.

Pretraining (the paper's loss: MSE / data variance + VQ loss):
  out, state = net.apply(variables, x, train=True, mutable=['vq_ema', 'losses'])
  vq_loss = state['losses']['vq']['vq_loss'][0]  # commitment term (differentiable)
  perplexity = state['losses']['vq']['perplexity'][0]
  variables = {'params': new_params, 'vq_ema': state['vq_ema']}  # codebook EMA step
Initialising with `train=True` neither updates 'vq_ema' nor sows into 'losses'.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

VQ_COLLECTION = "vq_ema"

# scipy.stats.truncnorm.std(a=-2, b=2): flax's "truncated_normal" variance scaling divides
# by it, Sonnet's TruncatedNormal(stddev) does not; scaling by its square undoes that.
_TRUNCNORM_STD = 0.87962566103423978
# Sonnet Conv2D: truncated normal, stddev 1 / sqrt(kh * kw * in_channels).
_conv_init = nn.initializers.variance_scaling(_TRUNCNORM_STD**2, "fan_in", "truncated_normal")
# Sonnet Conv2DTranspose: stddev 1 / sqrt(kh * kw * out_channels); flax's ConvTranspose
# kernel is (kh, kw, in, out), so that is flax's "fan_out".
_conv_transpose_init = nn.initializers.variance_scaling(
    _TRUNCNORM_STD**2, "fan_out", "truncated_normal")
# Sonnet's codebook: VarianceScaling(scale=1, mode="fan_in", distribution="uniform") on
# shape (embedding_dim, num_embeddings), i.e. U(-sqrt(3/embedding_dim), +sqrt(3/...)).
_embedding_init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def check_image_batch(x: jnp.ndarray) -> None:
  """Raises ValueError unless `x` is (B, H, W, C) with H and W divisible by 4."""
  if x.ndim != 4:
    raise ValueError(f"x must be a rank-4 NHWC batch (B, H, W, C), got shape {x.shape}.")
  if x.shape[1] % 4 or x.shape[2] % 4:
    raise ValueError(
        f"x must have height and width divisible by 4, got shape {x.shape}.")


def _conv(features: int, kernel_size: int, strides: int = 1, name: str | None = None):
  return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                 padding="SAME", kernel_init=_conv_init, name=name)


def _conv_transpose(features: int, kernel_size: int, strides: int, name: str | None = None):
  return nn.ConvTranspose(features, (kernel_size, kernel_size), strides=(strides, strides),
                          padding="SAME", kernel_init=_conv_transpose_init, name=name)


class ExponentialMovingAverage(nn.Module):
  """Sonnet 2's debiased EMA (`snt.ExponentialMovingAverage`), state in 'vq_ema'.

  Variables: `hidden` and `average` (both `shape`, start at 0) and `counter` (int32
  scalar, starts at 0). One update with value v:
    counter += 1;  hidden -= (hidden - v) * (1 - decay);
    average = hidden / (1 - decay**counter).
  """
  shape: tuple[int, ...]
  decay: float

  def setup(self):
    self.hidden = self.variable(VQ_COLLECTION, "hidden", jnp.zeros, self.shape, jnp.float32)
    self.average = self.variable(VQ_COLLECTION, "average", jnp.zeros, self.shape, jnp.float32)
    self.counter = self.variable(VQ_COLLECTION, "counter", jnp.zeros, (), jnp.int32)

  def __call__(self, value: jnp.ndarray) -> jnp.ndarray:
    """Applies one update with `value` and returns the new (debiased) average."""
    counter = self.counter.value + 1
    hidden = self.hidden.value - (self.hidden.value - value) * (1.0 - self.decay)
    average = hidden / (1.0 - jnp.power(jnp.float32(self.decay), counter.astype(jnp.float32)))
    self.counter.value = counter
    self.hidden.value = hidden
    self.average.value = average
    return average


class VectorQuantizerEMA(nn.Module):
  """Vector quantiser with an EMA-updated codebook (Sonnet 2 `snt.nets.VectorQuantizerEMA`).

  The last axis of the input (size `embedding_dim`) is quantised to the nearest of
  `num_embeddings` codes (squared Euclidean distance, ties to the lowest index).
  The codebook `embeddings` (embedding_dim, num_embeddings) and the EMA statistics
  `ema_cluster_size` and `ema_dw` (each an `ExponentialMovingAverage`) live in the
  'vq_ema' collection, never in 'params'.

  With `train=True`, when 'vq_ema' is mutable and the module is not being initialised,
  it applies Sonnet's update, computed from the current batch (the returned `quantize`
  uses the codebook from *before* the update, as in Sonnet):
    cs  = ema_cluster_size(one-hot counts);  dw = ema_dw(flat_inputs^T @ one_hot)
    n = sum(cs);  cs = (cs + epsilon) / (n + num_embeddings * epsilon) * n   (Laplace)
    embeddings = dw / cs
  Loss (EMA version, no codebook term): commitment_cost * mean((sg(quantized) - x)^2).
  With `train=True` it also sows 'vq_loss' and 'perplexity' into 'losses' (a no-op
  unless that collection is mutable).
  """
  num_embeddings: int = 512
  embedding_dim: int = 64
  commitment_cost: float = 0.25
  decay: float = 0.99
  epsilon: float = 1e-5

  def setup(self):
    if not 0.0 <= self.decay <= 1.0:
      raise ValueError(f"decay must be in [0, 1], got {self.decay}.")
    self.embeddings = self.variable(
        VQ_COLLECTION, "embeddings",
        lambda: _embedding_init(self.make_rng("params"),
                                (self.embedding_dim, self.num_embeddings), jnp.float32))
    self.ema_cluster_size = ExponentialMovingAverage(
        (self.num_embeddings,), self.decay, name="ema_cluster_size")
    # Sonnet initialises `ema_dw` from the embeddings' shape: hidden/average start at 0.
    self.ema_dw = ExponentialMovingAverage(
        (self.embedding_dim, self.num_embeddings), self.decay, name="ema_dw")

  def __call__(self, inputs: jnp.ndarray, train: bool = False) -> dict[str, Any]:
    """Quantises `inputs` (..., embedding_dim).

    Returns:
      dict with `quantize` (inputs' shape, straight-through: forward value is the code,
      gradient is the identity), `loss` (scalar), `perplexity` (scalar), `encodings`
      (N, num_embeddings one-hot, N = prod(inputs.shape[:-1])), `encoding_indices`
      (inputs.shape[:-1], int32) and `distances` (N, num_embeddings).
    """
    if inputs.shape[-1] != self.embedding_dim:
      raise ValueError(
          f"inputs must have last dimension embedding_dim={self.embedding_dim}, got "
          f"shape {inputs.shape}.")
    inputs = inputs.astype(jnp.float32)
    # Touch the EMA statistics so they are created at init whatever `train` is.
    _ = self.ema_cluster_size.average.value, self.ema_dw.average.value
    embeddings = self.embeddings.value
    flat_inputs = inputs.reshape(-1, self.embedding_dim)
    distances = (jnp.sum(flat_inputs**2, axis=1, keepdims=True)
                 - 2.0 * flat_inputs @ embeddings
                 + jnp.sum(embeddings**2, axis=0, keepdims=True))
    flat_indices = jnp.argmin(distances, axis=1)
    encodings = jax.nn.one_hot(flat_indices, self.num_embeddings, dtype=distances.dtype)
    encoding_indices = flat_indices.reshape(inputs.shape[:-1])
    quantized = self.quantize(encoding_indices)
    e_latent_loss = jnp.mean((jax.lax.stop_gradient(quantized) - inputs)**2)
    loss = self.commitment_cost * e_latent_loss

    if (train and self.is_mutable_collection(VQ_COLLECTION)
        and not self.is_initializing()):
      sg_encodings = jax.lax.stop_gradient(encodings)
      cluster_size = self.ema_cluster_size(jnp.sum(sg_encodings, axis=0))
      dw = jax.lax.stop_gradient(flat_inputs).T @ sg_encodings
      ema_dw = self.ema_dw(dw)
      n = jnp.sum(cluster_size)
      cluster_size = ((cluster_size + self.epsilon)
                      / (n + self.num_embeddings * self.epsilon) * n)
      self.embeddings.value = ema_dw / cluster_size[None, :]

    # Straight-through estimator.
    quantized = inputs + jax.lax.stop_gradient(quantized - inputs)
    avg_probs = jnp.mean(encodings, axis=0)
    perplexity = jnp.exp(-jnp.sum(avg_probs * jnp.log(avg_probs + 1e-10)))
    if train and not self.is_initializing():
      self.sow("losses", "vq_loss", loss)
      self.sow("losses", "perplexity", perplexity)
    return {
        "quantize": quantized,
        "loss": loss,
        "perplexity": perplexity,
        "encodings": encodings,
        "encoding_indices": encoding_indices,
        "distances": distances,
    }

  def quantize(self, encoding_indices: jnp.ndarray) -> jnp.ndarray:
    """Codes for integer indices: shape encoding_indices.shape + (embedding_dim,)."""
    return jnp.take(self.embeddings.value.T, encoding_indices, axis=0)


class ResidualStack(nn.Module):
  """`num_residual_layers` x [ReLU, conv3x3 -> num_residual_hiddens, ReLU, conv1x1 ->
  num_hiddens, add], then ReLU. (B, h, w, num_hiddens) -> same shape."""
  num_hiddens: int
  num_residual_layers: int
  num_residual_hiddens: int

  @nn.compact
  def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
    for i in range(self.num_residual_layers):
      out = _conv(self.num_residual_hiddens, 3, name=f"res3x3_{i}")(nn.relu(h))
      out = _conv(self.num_hiddens, 1, name=f"res1x1_{i}")(nn.relu(out))
      h = h + out
    return nn.relu(h)  # ResNet v1 style, as in the Sonnet example.


class Encoder(nn.Module):
  """(B, H, W, C) in [-0.5, 0.5] -> (B, H/4, W/4, num_hiddens)."""
  num_hiddens: int
  num_residual_layers: int
  num_residual_hiddens: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    h = nn.relu(_conv(self.num_hiddens // 2, 4, 2, name="enc_1")(x))
    h = nn.relu(_conv(self.num_hiddens, 4, 2, name="enc_2")(h))
    h = nn.relu(_conv(self.num_hiddens, 3, name="enc_3")(h))
    return ResidualStack(self.num_hiddens, self.num_residual_layers,
                         self.num_residual_hiddens, name="residual_stack")(h)


class Decoder(nn.Module):
  """(B, h, w, embedding_dim) -> (B, 4h, 4w, out_channels), unbounded (centred at 0)."""
  num_hiddens: int
  num_residual_layers: int
  num_residual_hiddens: int

  @nn.compact
  def __call__(self, z: jnp.ndarray, out_channels: int) -> jnp.ndarray:
    h = _conv(self.num_hiddens, 3, name="dec_1")(z)
    h = ResidualStack(self.num_hiddens, self.num_residual_layers,
                      self.num_residual_hiddens, name="residual_stack")(h)
    h = nn.relu(_conv_transpose(self.num_hiddens // 2, 4, 2, name="dec_2")(h))
    return _conv_transpose(out_channels, 4, 2, name="dec_3")(h)


class VQVAE(nn.Module):
  """VQ-VAE (Sonnet example configuration) as a [0, 1] -> [0, 1] image map.

  `__call__(x, train=False)`: x (B, H, W, C) float32 in [0, 1], H and W divisible by 4
  -> reconstruction of the same shape in [0, 1]. Submodules: `encoder`, `pre_vq_conv`,
  `vq` (`VectorQuantizerEMA`; its state is 'vq_ema'/'vq'/...), `decoder`.
  Also `encode(x)` -> pre-VQ latents z (B, H/4, W/4, embedding_dim);
  `quantize(z, train)` -> the quantiser's output dict; `decode(q, channels)` -> image.
  """
  num_hiddens: int = 128
  num_residual_layers: int = 2
  num_residual_hiddens: int = 32
  embedding_dim: int = 64
  num_embeddings: int = 512
  commitment_cost: float = 0.25
  decay: float = 0.99

  def setup(self):
    self.encoder = Encoder(self.num_hiddens, self.num_residual_layers,
                           self.num_residual_hiddens)
    self.pre_vq_conv = _conv(self.embedding_dim, 1)
    self.vq = VectorQuantizerEMA(
        num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim,
        commitment_cost=self.commitment_cost, decay=self.decay)
    self.decoder = Decoder(self.num_hiddens, self.num_residual_layers,
                           self.num_residual_hiddens)

  def encode(self, x: jnp.ndarray) -> jnp.ndarray:
    """Pre-VQ latents (B, H/4, W/4, embedding_dim) for images x (B, H, W, C) in [0, 1]."""
    check_image_batch(x)
    return self.pre_vq_conv(self.encoder(x.astype(jnp.float32) - 0.5))

  def quantize(self, z: jnp.ndarray, train: bool = False) -> dict[str, Any]:
    """The quantiser's output dict for latents z (see `VectorQuantizerEMA`)."""
    return self.vq(z, train=train)

  def decode(self, quantized: jnp.ndarray, channels: int) -> jnp.ndarray:
    """Images (B, 4h, 4w, channels) in [0, 1] from (quantised) latents (B, h, w, D)."""
    return jnp.clip(self.decoder(quantized, channels) + 0.5, 0.0, 1.0)

  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Reconstruction of x (B, H, W, C) in [0, 1]; same shape, values in [0, 1]."""
    z = self.encode(x)
    vq_output = self.quantize(z, train=train)
    return self.decode(vq_output["quantize"], x.shape[-1])

