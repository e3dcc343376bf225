"""DeepAugment (Hendrycks et al. 2021): images passed through randomly distorted EDSR / CAE.

Reproduces the distortions of `DeepAugment/EDSR_distort_imagenet.py` and
`DeepAugment/CAE_distort_imagenet.py` (+ `CAE_Model/cae_32x32x32_zero_pad_bin.py`) in
hendrycks/imagenet-r for our `EDSR` / `CAE` parameter trees. Everything is pure and
jittable; all randomness comes from explicit keys. Images are NHWC float32 in [0, 1].

  distort_params(params, key, net=...)        the reference's random weight operations
  edsr_distorted_apply(net, params, x, key)   EDSR forward with its activation distortions
  cae_distorted_apply(net, params, x, key)    CAE forward with its latent distortions
                                              (both: the net's own `apply`, with a hook
                                              on the points edsr.py / cae.py expose)
  deepaugment_batch(net, params, x, key)      both: one weight draw for the batch, one
                                              activation draw per example
  jit_deepaugment_batch(net, params, x, key)  the same from two cached jitted functions
                                              (`jit_distort_params`, `jit_distorted_apply`)

Activation ops are drawn per example from the key; the forwards accept (B,) overrides
(`pre_ops` / `body_ops` / `latent_ops`) in the reference's numbering, and
`distort_params(ops=...)` forces weight ops, e.g. to look at one operation at a time.

Granularity. The reference runs one image at a time, redraws the weights with
probability 0.05 per image (so every ~20 images) and draws the activation distortion
(and the CAE's stochastic binarisation) per image. `deepaugment_batch` redraws the
weights once per call (per batch; batches of ~20 match the reference) and the activation
distortions per example (cheap: masks and selects on a batched forward pass).

Weight operations work on the PyTorch layout of each kernel (conv (out, in, kh, kw),
transposed conv (in, out, kh, kw); `_to_torch` / `_from_torch`), so "dim 0" means what
it means in the reference, including for the CAE's transposed convs. Where the reference
code does something other than its comments say, we reproduce what the code does:

EDSR (3 of 17 ops drawn with replacement, applied in order; block indices i of the
reference's 16-block net map to block `i * num_blocks // 16` of ours, identical for 16):
  0  flip the output channels of body_i conv1 and conv2 (kernels and biases), i in {0,3,6,9}
  1  negate conv1 (kernel, bias), i in {1,4,7}
  2  zero conv1 (kernel, bias), i in {0,3,6,9}
  3  conv1, conv2 kernels -> -gelu(kernel) (exact gelu)
  4  conv1 kernel * the 3x3 Laplacian [[0,1,0],[1,-4,1],[0,1,0]] (per tap)
  5  conv1 kernel * [[-1,-1,-1],[-1,8,-1],[-1,-1,-1]]
  6  conv2 kernel * (1 + 4 u r), u ~ U[0,1) a scalar, r ~ U[0,1) per entry (the code's
     `2 * rand_like(w - 1)` is 2r: the `- 1` is inside rand_like)
  7  conv1 kernel flipped along kw, conv2 kernel negated
  8  conv1 kernel (as a batch of `out` images of `in` channels) convolved (padding 1) with z,
     z[:, j] = +-1 at one random tap per j; i in {1,5,9}
  9  conv1 kernel convolved with z = (2 u r - 1) / 6
  10 conv2 kernel convolved with z ~ Dirichlet(0.1 * ones(9)) per (out, in); i in {1,5,9}
  11 conv2 kernel + U[-0.5, 0.5), i in range(15)
  12 5x: kernel of conv1 or conv2 of a block in range(15) rotated by k*90 deg, k in 1..3,
     in the (kh, kw) plane or, with probability 1/2, the (out, in) plane
  13 5x: conv1 kernel * a random +-1 mask (p = 1/2)
  14 5x: conv1 kernel * a random 0/1 mask (p = 1/2)
  15 5x: negate the filters of conv1 at `features // 2` random output channels (drawn with
     replacement; the reference's 32 of 64)
  16 5x: conv1 or conv2: keep only the largest of the 9 taps of every (out, in) filter
  Ops 8 and 12 (the (out, in) rotation) need square body convs, which EDSR's are.
EDSR activations (per example; the reference's `pre_distortions` / `body_distortions`):
  pre 1  on the head output: 5 times `h[c1], h[c2] = h[c2], h[c1]`, which with PyTorch views
         copies channel c2 onto c1 (c2 keeps its values): that copy is what we do
  pre 2  h * a 0/1 mask, keep-probability 0.95;   pre 3  h * a +-1 mask, P(-1) = 0.025
  pre 4  none
  body 1..3  after the first 5 of 16 residual blocks (`5 * num_blocks // 16` of ours): 1
         negate; 2 ReLU (p = 1/3) or exact GELU; 3 flip channels and H (p = 1/3) or
         channels and W
  body 4  the reference's "skip" loop assigns `res = body[i](x)` for every kept module, so
         only the last kept module, applied to the head output, survives: with
         S = {3 draws from 2..16}, module m = max({0..16} - S) in 13..16 (16: body_conv,
         else block m, mapped as above)
  body 5  none
  The pre-distorted head output also feeds the global skip, as in the reference.

CAE (1 of 8 ops; the reference's option 8 is unreachable: `random.sample(range(8), 1)`).
Layers are numbered in the reference's state-dict order (`CAE_LAYERS`: 0 e_conv_1 ..
8 e_conv_3, 9 d_up_conv_1/conv, 10 d_up_conv_1/deconv, 11-16 d_block_{1,2,3}/conv_{1,2},
...); ops act on a layer i (and j) drawn from range(8, 14), except op 0 (range(11, 16))
and op 3 (range(10, 14)):
  0  flip dim 0 of layer i's kernel and bias (the code also flips layer j's kernel twice
     through a `bias_j = weight name` typo: a no-op, so only layer i changes)
  1  12 times: negate kernel[k] and bias[k], k a random dim-0 index (repeats undo)
  2  25 times: zero kernel[k] and bias[k]
  3  25 times: kernel[k], bias[k] -> -gelu(.) (repeats compound)
  4  layers i then j: kernel * (1 + 8 u r) (the code's `4 * rand_like(w - 1)` is 4r)
  5  kernel * a 0/1 mask or (p = 1/2) a +-1 mask
  6  kernel rotated by k*90 deg in (kh, kw), k in 1..3
  7  negate kernel[k] for a set of `out // 5` random k (the comment says zero; it negates)
  For the transposed conv (layer 10) dim 0 is its input channel, as in the reference.
CAE latent (per example, on the tanh code ec3 before binarisation; option 0..8 uniform):
  0  after binarisation: encoded bits (0|1) * (3 + 4 u r) (code's `2 * rand_like(e - 1)` = 2r)
  1  ec3 * a (H, W) 0/1 mask, P(0) = 0.2;   2  ec3 * a (H, W) +-1 mask, P(-1) = 0.1
  3  permute the first 10 channels
  4  5 times: flip one random channel (repeats undo) along two of (batch, H, W); with the
     reference's batch of 1 that is H, W or both (1/3 each)
  5  flip every channel along the same pair: H, W or both
  6  3x3 conv (padding 1) with identity + U[-0.1, 0.1) per tap
  7  3x3 conv with identity plus, per output channel with p = 1/2, a 1 at a random
     (input channel, tap)
  8  per-channel shift by a random 3x3 tap, the tap redrawn with p = 0.2 per channel
     (sticky)
  Binarisation is then stochastic, as in the reference (even in eval mode).

Not exact analogues: (1) nets smaller than the reference's 16-block, 64-feature EDSR get
the block mapping above and `features` in place of the hard-coded 64 (channel draws,
option 10's Dirichlet shape, option 15's 32 filters -> features // 2); (2) the EDSR
forward is our `EDSR`'s, whose default `resample='sr_then_down'` super-resolves the image
and downsamples the result back to the input's size (a near-identity with trained
weights, for small images; the reference super-resolves 128 px ImageNet images to 512 px:
`resample='none'`, or 'down_then_sr' for that pipeline at the input's size); (3) the weights are
redrawn per batch, not with probability 0.05 per image; (4) the CAE latent flips assume
the reference's batch of one image.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adacorr.models.corruption import cae as cae_lib
from adacorr.models.corruption import edsr as edsr_lib

NETS = ("edsr", "cae")

# --- EDSR constants -------------------------------------------------------------------------
REF_BLOCKS = 16           # the reference's residual blocks (edsr_baseline_x4)
EDSR_WEIGHT_OPS = 17      # options 0..16 of get_weights()
EDSR_WEIGHT_DRAWS = 3     # np.random.randint(0, 17, size=3)
EDSR_PRE_OPS = 4          # pre_distortions 1..4 (4: none)
EDSR_BODY_OPS = 5         # body_distortions 1..5 (5: none)
EDSR_PRE_SPLIT = 5        # body[:5] before the body distortion
_LAPLACE = ((0., 1., 0.), (1., -4., 1.), (0., 1., 0.))
_EDGE = ((-1., -1., -1.), (-1., 8., -1.), (-1., -1., -1.))

# --- CAE constants --------------------------------------------------------------------------
CAE_LAYERS: tuple[tuple[str, ...], ...] = (
    ("e_conv_1",), ("e_conv_2",),
    ("e_block_1", "conv_1"), ("e_block_1", "conv_2"), ("e_block_2", "conv_1"),
    ("e_block_2", "conv_2"), ("e_block_3", "conv_1"), ("e_block_3", "conv_2"),
    ("e_conv_3",), ("d_up_conv_1", "conv"), ("d_up_conv_1", "deconv"),
    ("d_block_1", "conv_1"), ("d_block_1", "conv_2"), ("d_block_2", "conv_1"),
    ("d_block_2", "conv_2"), ("d_block_3", "conv_1"), ("d_block_3", "conv_2"),
    ("d_up_conv_2", "conv"), ("d_up_conv_2", "deconv"),
    ("d_up_conv_3", "conv_1"), ("d_up_conv_3", "conv_2"),
)  # the reference's layer numbering (its state-dict order), 21 layers
CAE_WEIGHT_OPS = 8        # random.sample(range(NUM_DISTORTIONS = 8), 1)
CAE_LATENT_OPS = 9        # np.random.choice(range(9))
_CAE_DEFAULT_LAYERS = tuple(range(8, 14))
CAE_OPTION_LAYERS = {0: tuple(range(11, 16)), 3: tuple(range(10, 14))}


def _gelu(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=False)  # torch.nn.functional.gelu's default


def _to_torch(kernel: jax.Array) -> jax.Array:
  """Flax kernel (kh, kw, in, out) [transposed: (kh, kw, out, in)] -> PyTorch layout."""
  return jnp.transpose(kernel, (3, 2, 0, 1))


def _from_torch(weight: jax.Array) -> jax.Array:
  return jnp.transpose(weight, (2, 3, 1, 0))


def _uniforms(key: jax.Array, **shapes: Sequence[int]) -> dict[str, jax.Array]:
  """U[0, 1) arrays of the given shapes from ONE `jax.random.uniform` call.

  Most draws here go through this: each threefry call adds to the compile time
  (XLA:CPU), and one call per operation keeps `distort_params` quick to compile.
  """
  sizes = [math.prod(s) for s in shapes.values()]
  u = jax.random.uniform(key, (max(sum(sizes), 1),))
  out, start = {}, 0
  for (name, shape), size in zip(shapes.items(), sizes):
    out[name] = u[start:start + size].reshape(tuple(shape))
    start += size
  return out


def _index(u: jax.Array, n: int) -> jax.Array:
  """U[0, 1) -> uniform int32 in 0 .. n-1 (`random.randint(0, n - 1)`)."""
  return jnp.minimum(jnp.floor(u * n).astype(jnp.int32), n - 1)


def _choice(u: jax.Array, values: Sequence[int]) -> jax.Array:
  """U[0, 1) -> a uniform draw from the static `values`."""
  return jnp.asarray(list(values), jnp.int32)[_index(u, len(values))]


def _torch_conv2d(x: jax.Array, w: jax.Array) -> jax.Array:
  """`torch.nn.functional.conv2d(x, w, padding=1)`: x (N, C, H, W), w (O, C, kh, kw)."""
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                     precision=jax.lax.Precision.HIGHEST)


def _check_net(net: str) -> None:
  if net not in NETS:
    raise ValueError(f"net={net!r} must be one of {NETS}.")


def _repeat(count: int, key: jax.Array, fn, state):
  """`state = fn(state, fold_in(key, t))` for t < count, as a loop (compiled once)."""
  return jax.lax.fori_loop(0, count, lambda t, s: fn(s, jax.random.fold_in(key, t)), state)


# --- EDSR weights ---------------------------------------------------------------------------

def edsr_num_blocks(params: Mapping[str, Any]) -> int:
  """Residual blocks of EDSR `params` (keys `body_0` .. `body_{n-1}`).

  Raises:
    ValueError: if `params` is not an EDSR parameter tree.
  """
  n = 0
  while f"body_{n}" in params:
    n += 1
  if n == 0 or "head" not in params or "body_conv" not in params:
    raise ValueError(f"params is not an EDSR parameter tree (keys {sorted(params)}).")
  return n


def _ref_block(i: jax.Array, n: int) -> jax.Array:
  """Block `i` of the reference's 16-block net -> ours (n blocks)."""
  return (i * n) // REF_BLOCKS


def _edsr_op(op: int, n: int, f: int):
  """The reference option `op` as `fn(state, key) -> state` on stacked body weights.

  `state`: 'w1', 'w2' (n, f, f, 3, 3) PyTorch layout, 'b1', 'b2' (n, f).
  """
  wshape = (f, f, 3, 3)

  def block(u, values):
    return _ref_block(_choice(u, values), n)

  def upd(s, name, i, value):
    return {**s, name: s[name].at[i].set(value)}

  def op0(s, key):
    i = block(_uniforms(key, i=())["i"], range(0, 10, 3))
    for name in ("w1", "b1", "w2", "b2"):
      s = upd(s, name, i, jnp.flip(s[name][i], 0))
    return s

  def op1(s, key):
    i = block(_uniforms(key, i=())["i"], range(1, 10, 3))
    return upd(upd(s, "w1", i, -s["w1"][i]), "b1", i, -s["b1"][i])

  def op2(s, key):
    i = block(_uniforms(key, i=())["i"], range(0, 10, 3))
    return upd(upd(s, "w1", i, 0 * s["w1"][i]), "b1", i, 0 * s["b1"][i])

  def op3(s, key):
    i = block(_uniforms(key, i=())["i"], range(0, 10, 3))
    return upd(upd(s, "w1", i, -_gelu(s["w1"][i])), "w2", i, -_gelu(s["w2"][i]))

  def mul_taps(taps):
    def op(s, key):
      i = block(_uniforms(key, i=())["i"], range(0, 10, 3))
      return upd(s, "w1", i, s["w1"][i] * jnp.asarray(taps, jnp.float32))
    return op

  def op6(s, key):
    u = _uniforms(key, i=(), u=(), r=wshape)
    i = block(u["i"], range(0, 10, 3))
    return upd(s, "w2", i, s["w2"][i] * (1 + 2 * u["u"] * (2 * u["r"])))

  def op7(s, key):
    i = block(_uniforms(key, i=())["i"], range(0, 10, 3))
    return upd(upd(s, "w1", i, jnp.flip(s["w1"][i], -1)), "w2", i, -s["w2"][i])

  def op8(s, key):
    u = _uniforms(key, i=(), tap=(f,), sign=(f,))
    i = block(u["i"], range(1, 13, 4))
    # z[:, j, shift_x, shift_y] = +-1: the same for every output channel.
    zj = jax.nn.one_hot(_index(u["tap"], 9), 9) * jnp.where(u["sign"] < 0.5, 1.0, -1.0)[:, None]
    z = jnp.broadcast_to(zj.reshape(1, f, 3, 3), wshape)
    return upd(s, "w1", i, _torch_conv2d(s["w1"][i], z))

  def op9(s, key):
    u = _uniforms(key, i=(), u=(), r=wshape)
    i = block(u["i"], range(0, 10, 3))
    z = (2 * u["r"] * u["u"] - 1) / 6.0
    return upd(s, "w1", i, _torch_conv2d(s["w1"][i], z))

  def op10(s, key):
    k1, k2 = jax.random.split(key)
    i = block(_uniforms(k1, i=())["i"], range(1, 12, 4))
    z = jax.random.dirichlet(k2, jnp.full((9,), 0.1), (f, f)).reshape(wshape)
    return upd(s, "w2", i, _torch_conv2d(s["w2"][i], z))

  def op11(s, key):
    u = _uniforms(key, i=(), r=wshape)
    i = block(u["i"], range(15))
    return upd(s, "w2", i, s["w2"][i] + (u["r"] - 0.5) * 1.0)

  rotations = [functools.partial(jnp.rot90, k=k, axes=axes)
               for axes in ((2, 3), (0, 1)) for k in (1, 2, 3)]

  def pick_conv(s, i, which, fn):
    """fn on conv1 (which == 0) or conv2 (which == 1) of block i."""
    for c, name in enumerate(("w1", "w2")):
      w = s[name][i]
      s = upd(s, name, i, jnp.where(which == c, fn(w), w))
    return s

  def op12_once(s, key):
    u = _uniforms(key, i=(), which=(), rot=())
    return pick_conv(s, block(u["i"], range(15)), _index(u["which"], 2),
                     lambda w: jax.lax.switch(_index(u["rot"], 6), rotations, w))

  def mask_once(kind):
    def op(s, key):
      u = _uniforms(key, i=(), m=wshape)
      i = block(u["i"], range(15))
      mask = jnp.where(u["m"] > 0.5, 1.0, -1.0 if kind == "sign" else 0.0)  # round(rand)
      return upd(s, "w1", i, s["w1"][i] * mask)
    return op

  def op15_once(s, key):
    u = _uniforms(key, i=(), picks=(f // 2,))
    i = block(u["i"], range(15))
    hit = jnp.any(_index(u["picks"], f)[:, None] == jnp.arange(f)[None, :], axis=0)
    return upd(s, "w1", i, s["w1"][i] * jnp.where(hit, -1.0, 1.0)[:, None, None, None])

  def top1(w):
    flat = w.reshape(w.shape[0], w.shape[1], -1)
    keep = jax.nn.one_hot(jnp.argmax(flat, axis=-1), flat.shape[-1], dtype=bool)
    return jnp.where(keep, flat, 0.0).reshape(w.shape)

  def op16_once(s, key):
    u = _uniforms(key, i=(), which=())
    return pick_conv(s, block(u["i"], range(15)), _index(u["which"], 2), top1)

  def five(fn):
    return lambda s, key: _repeat(5, key, fn, s)

  ops = [op0, op1, op2, op3, mul_taps(_LAPLACE), mul_taps(_EDGE), op6, op7, op8, op9, op10,
         op11, five(op12_once), five(mask_once("sign")), five(mask_once("zero")),
         five(op15_once), five(op16_once)]
  assert len(ops) == EDSR_WEIGHT_OPS
  return ops[op]


def _distort_edsr(params: Mapping[str, Any], key: jax.Array, ops: jax.Array
                  ) -> dict[str, Any]:
  n = edsr_num_blocks(params)
  f = int(params["head"]["kernel"].shape[-1])
  blocks = [params[f"body_{i}"] for i in range(n)]
  for b in blocks:
    for conv in ("conv1", "conv2"):
      if tuple(b[conv]["kernel"].shape) != (3, 3, f, f):
        raise ValueError(f"EDSR body convs must be 3x3 {f}->{f}, got kernel shape "
                         f"{b[conv]['kernel'].shape}.")
  state = {
      "w1": jnp.stack([_to_torch(b["conv1"]["kernel"]) for b in blocks]),
      "b1": jnp.stack([b["conv1"]["bias"] for b in blocks]),
      "w2": jnp.stack([_to_torch(b["conv2"]["kernel"]) for b in blocks]),
      "b2": jnp.stack([b["conv2"]["bias"] for b in blocks]),
  }
  dtypes = {k: v.dtype for k, v in state.items()}
  state = {k: v.astype(jnp.float32) for k, v in state.items()}
  branches = [_edsr_op(o, n, f) for o in range(EDSR_WEIGHT_OPS)]
  state = _apply_ops(ops, branches, jax.random.split(key)[1], state)
  out = dict(params)
  for i in range(n):
    out[f"body_{i}"] = {
        "conv1": {"kernel": _from_torch(state["w1"][i]).astype(dtypes["w1"]),
                  "bias": state["b1"][i].astype(dtypes["b1"])},
        "conv2": {"kernel": _from_torch(state["w2"][i]).astype(dtypes["w2"]),
                  "bias": state["b2"][i].astype(dtypes["b2"])},
    }
  return out


def _apply_ops(ops: jax.Array, branches, key: jax.Array, state):
  """Applies `branches[ops[t]]` for t = 0, 1, ... in order (one compiled loop body); ids
  >= len(branches) do nothing."""
  branches = list(branches) + [lambda s, k: s]  # lax.switch clamps larger ids onto this

  def body(t, s):
    return jax.lax.switch(ops[t], branches, s, jax.random.fold_in(key, t))
  return jax.lax.fori_loop(0, ops.shape[0], body, state)


# --- CAE weights ----------------------------------------------------------------------------

def _torch_shape(params, path) -> tuple[int, ...]:
  return tuple(_get(params, path)["kernel"].shape[i] for i in (3, 2, 0, 1))


def _cae_layer_op(op: int):
  """Reference CAE option `op` on one layer: `fn(w, b, u) -> (w, b)`, PyTorch layout.

  `u`: uniforms from `_uniforms` with 'r' (and 's', 'picks') at least as large as w.
  """
  def sized(r, shape):
    return r[tuple(slice(0, d) for d in shape)]

  def sequential(count, fn):
    def run(w, b, u):
      picks = _index(u["picks"][:count], w.shape[0])

      def body(t, wb):
        w, b = wb
        k = picks[t]
        w = w.at[k].set(fn(w[k]))
        if w.shape[0] <= b.shape[0]:  # always, for the layers the reference picks
          b = b.at[k].set(fn(b[k]))
        return w, b

      return jax.lax.fori_loop(0, count, body, (w, b))
    return run

  def op0(w, b, u):
    del u
    return jnp.flip(w, 0), jnp.flip(b, 0)

  def op4(w, b, u):
    return w * (1 + 2 * u["s"] * (4 * sized(u["r"], w.shape))), b

  def op5(w, b, u):
    keep = sized(u["r"], w.shape) > 0.5
    return w * jnp.where(keep, 1.0, jnp.where(u["s"] < 0.5, 0.0, -1.0)), b

  def op6(w, b, u):
    rots = [functools.partial(jnp.rot90, k=r, axes=(2, 3)) for r in (1, 2, 3)]
    return jax.lax.switch(_index(u["s"], 3), rots, w), b

  def op7(w, b, u):
    out = w.shape[0]
    picks = _index(u["picks"][:out // 5], out)
    hit = jnp.any(picks[:, None] == jnp.arange(out)[None, :], axis=0)
    return w * jnp.where(hit, -1.0, 1.0).reshape((out,) + (1,) * (w.ndim - 1)), b

  table = {0: op0, 1: sequential(12, lambda v: -v), 2: sequential(25, lambda v: 0 * v),
           3: sequential(25, lambda v: -_gelu(v)), 4: op4, 5: op5, 6: op6, 7: op7}
  return table[op]


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree, path, value):
  if len(path) == 1:
    return {**tree, path[0]: value}
  return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}


def _at_layer(params, layers: Sequence[int], idx: jax.Array, fn, u):
  """`fn(w, b, u)` on the (PyTorch-layout) kernel and bias of `CAE_LAYERS[layers[idx]]`."""
  def branch(path, params):
    node = _get(params, path)
    w, b = fn(_to_torch(node["kernel"]).astype(jnp.float32),
              node["bias"].astype(jnp.float32), u)
    return _set(params, path, {"kernel": _from_torch(w).astype(node["kernel"].dtype),
                               "bias": b.astype(node["bias"].dtype)})
  return jax.lax.switch(idx, [functools.partial(branch, CAE_LAYERS[l]) for l in layers],
                        params)


def _check_cae_params(params: Mapping[str, Any]) -> None:
  for path in CAE_LAYERS:
    try:
      _get(params, path)["kernel"]
    except (KeyError, TypeError):
      raise ValueError(f"params is not a CAE parameter tree: no {'/'.join(path)} "
                       f"(keys {sorted(params)}).") from None


def _distort_cae(params: Mapping[str, Any], key: jax.Array, ops: jax.Array
                 ) -> dict[str, Any]:
  params = dict(params)

  def option(o):
    layers = CAE_OPTION_LAYERS.get(o, _CAE_DEFAULT_LAYERS)
    # The largest PyTorch-layout kernel among the candidates: one draw serves them all.
    shapes = [_torch_shape(params, CAE_LAYERS[l]) for l in layers]
    rshape = tuple(max(s[d] for s in shapes) for d in range(4))
    fn = _cae_layer_op(o)
    need_r = o in (4, 5)

    def run(params, key):
      sizes = dict(i=(), j=(), s=(), s2=(), picks=(25,))
      if need_r:
        sizes.update(r=rshape, r2=rshape if o == 4 else (0,))
      u = _uniforms(key, **sizes)
      params = _at_layer(params, layers, _index(u["i"], len(layers)), fn, u)
      if o == 4:  # the only option that also uses layer j (drawn independently of i)
        params = _at_layer(params, layers, _index(u["j"], len(layers)), fn,
                           {"s": u["s2"], "r": u["r2"]})
      return params
    return run

  return _apply_ops(ops, [option(o) for o in range(CAE_WEIGHT_OPS)], jax.random.split(key)[1],
                    params)


def weight_ops(key: jax.Array, net: str) -> jax.Array:
  """The reference's random choice of weight options: int32 (3,) in 0..16 for 'edsr'
  (with replacement), (1,) in 0..7 for 'cae'; what `distort_params(params, key)` uses."""
  _check_net(net)
  k_ops = jax.random.split(key)[0]
  if net == "edsr":
    return jax.random.randint(k_ops, (EDSR_WEIGHT_DRAWS,), 0, EDSR_WEIGHT_OPS)
  return jax.random.randint(k_ops, (1,), 0, CAE_WEIGHT_OPS)


def distort_params(params: Mapping[str, Any], key: jax.Array, *, net: str = "edsr",
                   ops: Sequence[int] | jax.Array | None = None) -> dict[str, Any]:
  """DeepAugment's random weight distortion of EDSR / CAE `params` (see module doc).

  Args:
    params: the net's 'params' collection (our `EDSR` with any num_blocks / features,
      or our `CAE`).
    key: PRNG key; the same key gives the same distortion.
    net: 'edsr' or 'cae'.
    ops: optional 1-D reference option ids, applied in order (EDSR 0..16, CAE 0..7; a
      larger id is a no-op, for padding); default `weight_ops(key, net)`: 3 uniform
      draws (EDSR) or 1 (CAE), as the reference. Ids may be traced; the length is static.

  Returns:
    params with the same tree structure, shapes and dtypes.

  Raises:
    ValueError: for an unknown `net` or params of another net.
  """
  _check_net(net)
  params = dict(params)
  if net == "edsr":
    edsr_num_blocks(params)
  else:
    _check_cae_params(params)
  if ops is None:
    ops = weight_ops(key, net)
  ops = jnp.atleast_1d(jnp.asarray(ops, jnp.int32))
  if ops.ndim != 1:
    raise ValueError(f"ops must be 1-D, got shape {ops.shape}.")
  if net == "edsr":
    return _distort_edsr(params, key, ops)
  return _distort_cae(params, key, ops)


# --- EDSR forward with activation distortions -----------------------------------------------

def _edsr_draws(key: jax.Array, feature_shape: Sequence[int]) -> dict[str, jax.Array]:
  """One example's random choices for the EDSR activation distortions.

  `feature_shape`: (H, W, f) of the head output.
  """
  f = feature_shape[-1]
  u = _uniforms(key, pre=(), body=(), copy=(5, 2), act=(), flip=(), skip=(3,),
                mask=tuple(feature_shape))
  skip = 2 + _index(u["skip"], REF_BLOCKS - 1)  # random.randint(2, 16), 3 times
  in_skip = jnp.any(skip[None, :] == jnp.arange(REF_BLOCKS, REF_BLOCKS - 4, -1)[:, None],
                    axis=1)
  return {
      "pre_op": 1 + _index(u["pre"], EDSR_PRE_OPS),
      "body_op": 1 + _index(u["body"], EDSR_BODY_OPS),
      "copy": _index(u["copy"], f),
      "relu": _index(u["act"], 3) == 1,      # random.randint(0, 2) == 1
      "flip_h": _index(u["flip"], 3) == 1,
      "skip_to": jnp.argmin(in_skip),  # 0: module 16 (body_conv), k: block 16 - k
      "mask": u["mask"],
  }


def _edsr_pre(h: jax.Array, d: Mapping[str, jax.Array]) -> jax.Array:
  """The pre-distortion of one example's head output h (H, W, f)."""
  f = h.shape[-1]
  src = jnp.arange(f)
  for t in range(5):  # x[c1] = x[c2] (the view aliasing of the reference's tuple swap)
    c1, c2 = d["copy"][t, 0], d["copy"][t, 1]
    src = src.at[c1].set(src[c2])
  copied = h[..., src]
  u = d["mask"]
  dropped = h * (u > 0.05)              # round(rand + 0.45)
  signed = h * jnp.where(u > 0.025, 1.0, -1.0)  # round(rand + 0.475) * 2 - 1
  op = d["pre_op"]
  return jnp.select([op == 1, op == 2, op == 3], [copied, dropped, signed], h)


def _edsr_mid(r: jax.Array, d: Mapping[str, jax.Array]) -> jax.Array:
  """Body distortions 1-3 of one example's features r (H, W, f) after body[:5]."""
  act = jnp.where(d["relu"], jax.nn.relu(r), _gelu(r))
  flipped = jnp.where(d["flip_h"], jnp.flip(r, (0, 2)), jnp.flip(r, (1, 2)))
  op = d["body_op"]
  return jnp.select([op == 1, op == 2, op == 3], [-r, act, flipped], r)


def _edsr_hook(key: jax.Array, num_blocks: int, pre_ops: jax.Array | None,
               body_ops: jax.Array | None) -> edsr_lib.Hook:
  """The activation distortions as an `EDSR` hook (see edsr.py's hook points); for ONE
  forward pass (it keeps the draws and the distorted head output between points)."""
  split = EDSR_PRE_SPLIT * num_blocks // REF_BLOCKS
  seen = {}

  def hook(point, x, layers):
    if point == "head":
      b = x.shape[0]
      d = jax.vmap(lambda k: _edsr_draws(k, x.shape[1:]))(jax.random.split(key, b))
      if pre_ops is not None:
        d["pre_op"] = jnp.broadcast_to(jnp.asarray(pre_ops, jnp.int32), (b,))
      if body_ops is not None:
        d["body_op"] = jnp.broadcast_to(jnp.asarray(body_ops, jnp.int32), (b,))
      seen["d"], seen["head"] = d, jax.vmap(_edsr_pre)(x, d)
      return seen["head"]
    if point == f"trunk_{split}":  # after body[:5] of the reference's 16 blocks
      return jax.vmap(_edsr_mid)(x, seen["d"])
    if point == "body":
      # Body distortion 4: the last kept module of the reference's loop, on the head output.
      h, d = seen["head"], seen["d"]
      cands = [layers["body_conv"](h)]
      blocks = {}
      for k in (1, 2, 3):
        m = (REF_BLOCKS - k) * num_blocks // REF_BLOCKS
        if m not in blocks:
          blocks[m] = layers[f"body_{m}"](h)
        cands.append(blocks[m])
      skipped = jnp.select([d["skip_to"][:, None, None, None] == k for k in range(4)], cands)
      return jnp.where((d["body_op"] == 4)[:, None, None, None], skipped, x)
    return x

  return hook


def edsr_distorted_apply(net: nn.Module, params: Mapping[str, Any], images: jax.Array,
                         key: jax.Array | None, *, pre_ops: jax.Array | None = None,
                         body_ops: jax.Array | None = None) -> jax.Array:
  """`EDSR` forward with DeepAugment's activation distortions, one draw per example.

  Runs `net.apply` with a hook on its 'head', 'trunk_{5 * num_blocks // 16}' and 'body'
  points. The pre-distorted head output also feeds the global skip, as in the reference.

  Args:
    net: the `EDSR` module.
    params: its 'params' (possibly from `distort_params`).
    images: (B, H, W, C) in [0, 1].
    key: PRNG key; None: no activation distortion (`net.apply(..., train=False)`).
    pre_ops, body_ops: optional (B,) overrides of the per-example choices (pre 1..4,
      body 1..5, the reference's numbering; 4 / 5 mean none).

  Returns:
    (B, H, W, C) in [0, 1] (for `resample='none'`, the super-resolved size).
  """
  if not isinstance(net, edsr_lib.EDSR):
    raise ValueError(f"net must be an EDSR, got {type(net).__name__}.")
  n = net.num_blocks
  if n != edsr_num_blocks(params):
    raise ValueError(f"params have {edsr_num_blocks(params)} blocks, net.num_blocks={n}.")
  hook = None if key is None else _edsr_hook(key, n, pre_ops, body_ops)
  return net.apply({"params": params}, images, hook=hook)


# --- CAE forward with latent distortions ----------------------------------------------------

def _shift_taps(x: jax.Array) -> jax.Array:
  """(H, W, C) -> (3, 3, H, W, C): the zero-padded 3x3 neighbourhood of every pixel."""
  h, w, _ = x.shape
  xp = jnp.pad(x, ((1, 1), (1, 1), (0, 0)))
  return jnp.stack([jnp.stack([xp[a:a + h, bb:bb + w] for bb in range(3)]) for a in range(3)])


def _cae_latent(ec3: jax.Array, key: jax.Array, op: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
  """One example's latent distortion: (ec3', factor on the encoded bits), ec3 (h, w, C)."""
  h, w, c = ec3.shape
  m = min(10, c)
  u = _uniforms(key, zero=(h, w, 1), sign=(h, w, 1), perm=(m,), mode=(), picks=(5,),
                z6=(c, c, 3, 3), extra=(c,), r_in=(c,), r_tap=(c, 2), first=(2,),
                redraw=(c,), new=(c, 2), fu=(), fr=(h, w, c))
  # 1, 2: (H, W) masks shared by the channels.
  zeroed = ec3 * (u["zero"] > 0.2)
  signed = ec3 * jnp.where(u["sign"] > 0.1, 1.0, -1.0)
  # 3: permute the first 10 channels.
  perm = jnp.concatenate([jnp.argsort(u["perm"]), jnp.arange(m, c)])
  permuted = ec3[..., perm]
  # 4, 5: flips along H, W or both (the pair of (batch, H, W) with a batch of 1).
  mode = _index(u["mode"], 3)  # 0: H, 1: W, 2: both

  def flip(v):
    return jnp.select([mode == 0, mode == 1], [jnp.flip(v, 0), jnp.flip(v, 1)],
                      jnp.flip(v, (0, 1)))

  picks = _index(u["picks"], c)
  odd = jnp.sum(picks[:, None] == jnp.arange(c)[None, :], axis=0) % 2 == 1
  flipped_some = jnp.where(odd, flip(ec3), ec3)
  flipped_all = flip(ec3)
  # 6, 7, 8: 3x3 convs with (out, in, 3, 3) kernels z near the identity.
  ch = jnp.arange(c)
  eye = jnp.zeros((c, c, 3, 3)).at[ch, ch, 1, 1].set(1.0)
  z6 = eye + (u["z6"] - 0.5) * 0.2
  r_in, r_tap = _index(u["r_in"], c), _index(u["r_tap"], 3)
  z7 = eye.at[ch, r_in, r_tap[:, 0], r_tap[:, 1]].max(jnp.where(u["extra"] < 0.5, 1.0, 0.0))
  first, new = _index(u["first"], 3), _index(u["new"], 3)
  last = jax.lax.cummax(jnp.where(u["redraw"] < 0.2, ch, -1))  # last redraw at or before j
  tap = jnp.where((last >= 0)[:, None], new[jnp.maximum(last, 0)], first[None, :])
  z8 = jnp.zeros((c, c, 3, 3)).at[ch, ch, tap[:, 0], tap[:, 1]].set(1.0)
  z = jnp.select([op == 6, op == 7], [z6, z7], z8)
  convolved = jnp.einsum("abhwi,oiab->hwo", _shift_taps(ec3), z,
                         precision=jax.lax.Precision.HIGHEST)
  out = jnp.select([op == 1, op == 2, op == 3, op == 4, op == 5, (op >= 6) & (op <= 8)],
                   [zeroed, signed, permuted, flipped_some, flipped_all, convolved], ec3)
  # 0: after binarisation, the encoded bits (0|1) times 3 + 2 u (2 r).
  factor = jnp.where(op == 0, 3 + 2 * u["fu"] * (2 * u["fr"]), 1.0)
  return out, factor


def _cae_hook(key: jax.Array, latent_ops: jax.Array | None) -> edsr_lib.Hook:
  """The latent distortions and stochastic binarisation as a `CAE` hook ('ec3', 'code');
  for ONE forward pass (it keeps the distorted ec3 for the 'code' point)."""
  k_op, k_lat, k_bin = jax.random.split(key, 3)
  seen = {}

  def hook(point, x, layers):
    del layers
    if point == "ec3":
      b = x.shape[0]
      ops = jax.random.randint(k_op, (b,), 0, CAE_LATENT_OPS)
      if latent_ops is not None:
        ops = jnp.broadcast_to(jnp.asarray(latent_ops, jnp.int32), (b,))
      seen["ec3"], seen["factor"] = jax.vmap(_cae_latent)(x, jax.random.split(k_lat, b), ops)
      return seen["ec3"]
    if point == "code":  # replaces the net's deterministic code
      bits = (cae_lib.binarize(seen["ec3"], k_bin) + 1) / 2  # encoded, 0 | 1
      return 2 * bits * seen["factor"] - 1
    return x

  return hook


def cae_distorted_apply(net: nn.Module, params: Mapping[str, Any], images: jax.Array,
                        key: jax.Array | None, *, latent_ops: jax.Array | None = None
                        ) -> jax.Array:
  """`CAE` forward with DeepAugment's latent distortions and stochastic binarisation.

  Runs `net.apply` with a hook on its 'ec3' and 'code' points.

  Args:
    net: the `CAE` module.
    params: its 'params' (possibly from `distort_params`).
    images: (B, H, W, C) in [0, 1], H and W divisible by 4.
    key: PRNG key (one latent option 0..8 per example, then stochastic binarisation);
      None: the undistorted, deterministic forward (`net.apply(..., train=False)`).
    latent_ops: optional (B,) override of the per-example option (0..8).

  Returns:
    (B, H, W, C) in [0, 1].
  """
  if not isinstance(net, cae_lib.CAE):
    raise ValueError(f"net must be a CAE, got {type(net).__name__}.")
  hook = None if key is None else _cae_hook(key, latent_ops)
  return net.apply({"params": params}, images, hook=hook)


# --- DeepAugment ----------------------------------------------------------------------------

def net_name(net: nn.Module) -> str:
  """'edsr' or 'cae' for an `EDSR` / `CAE` module.

  Raises:
    ValueError: for any other module.
  """
  if isinstance(net, edsr_lib.EDSR):
    return "edsr"
  if isinstance(net, cae_lib.CAE):
    return "cae"
  raise ValueError(f"net must be an EDSR or a CAE (DeepAugment's nets), got "
                   f"{type(net).__name__}.")


def distorted_apply(net: nn.Module, params: Mapping[str, Any], images: jax.Array,
                    key: jax.Array | None) -> jax.Array:
  """`edsr_distorted_apply` or `cae_distorted_apply`, by the type of `net`."""
  if net_name(net) == "edsr":
    return edsr_distorted_apply(net, params, images, key)
  return cae_distorted_apply(net, params, images, key)


def deepaugment_batch(net: nn.Module, params: Mapping[str, Any], images: jax.Array,
                      key: jax.Array, *, distort_weights: bool = True,
                      distort_activations: bool = True) -> jax.Array:
  """DeepAugment images: `net` with randomly distorted weights and activations.

  One weight distortion (`distort_params`) for the whole batch, one activation
  distortion per example (see module doc). Pure; jit it with `net` static, or use
  `jit_deepaugment_batch` (the same values, from two cached compiled functions).

  Args:
    net: an `EDSR` or `CAE` module.
    params: its (pretrained) 'params'.
    images: (B, H, W, C) float in [0, 1].
    key: PRNG key; the result is a deterministic function of it.
    distort_weights, distort_activations: switch either part off.

  Returns:
    (B, H, W, C) float32 in [0, 1].
  """
  name = net_name(net)
  k_w, k_a = jax.random.split(key)
  if distort_weights:
    params = distort_params(params, k_w, net=name)
  return distorted_apply(net, params, images, k_a if distort_activations else None)


# Compiled once per net / shapes (modules with equal fields share them).
jit_distort_params = jax.jit(distort_params, static_argnames=("net",))
jit_distorted_apply = jax.jit(distorted_apply, static_argnums=(0,))


def jit_deepaugment_batch(net: nn.Module, params: Mapping[str, Any], images: jax.Array,
                          key: jax.Array) -> jax.Array:
  """`deepaugment_batch` as two cached jitted calls (`jit_distort_params` with the ops
  drawn outside, then `jit_distorted_apply`), what `experiments/make_deepaugment.py` runs.

  Tests and callers that force weight ops reuse the same compiled `jit_distort_params`.
  """
  name = net_name(net)
  k_w, k_a = jax.random.split(key)
  params = jit_distort_params(params, k_w, net=name, ops=weight_ops(k_w, name))
  return jit_distorted_apply(net, params, images, k_a)
