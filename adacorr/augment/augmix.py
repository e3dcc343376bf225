"""AugMix (Hendrycks et al. 2020) on device, and its Jensen-Shannon consistency loss.

`augmix(images, key)` mixes, per image, `width` chains of 1..3 random PIL-style ops
(`adacorr.augment.image_ops`) with the image itself:

  out = (1 - m) x + m sum_i w_i chain_i(x),   w ~ Dirichlet(alpha), m ~ Beta(alpha, alpha)

as the reference `augment_and_mix` / `cifar.py` (google-research/augmix). The chains run on
the 256 levels `round(255 x)` like the reference's uint8 PIL images, the mixing in float.
Each op draws its level ~ U(0.1, severity) and, for rotate / shear / translate, a random
sign; parameters scale as the reference's `int_parameter` / `float_parameter` (level / 10
of: rotate 30 degrees, shear 0.3, translate size / 3 pixels, posterize 4 bits, solarize 256
levels, enhance factors 1.8 (+ 0.1)).

Keys: one key is split into one per example (`jax.random.split(key, B)[i]`), or pass one
key per example; example `i` depends only on `images[i]` and its key, so it gives the same
result alone or in any batch. No Python loop over examples: the draws are vmapped, and the
B * width chains of a batch advance together one chain step at a time. In each step the
chains are grouped by the op they drew: the affine warp (rotate, shear, translate: one
bilinear warp with a per-chain matrix) runs only on the chains that drew one of those, the
histogram tables (autocontrast, equalize) only on the chains that drew them, the table
lookup only on the chains that drew a lookup-table op, each ImageEnhance blend only on its
own chains, and nothing on chains whose random depth has ended. Each group is gathered in
chunks of a fixed `_CHUNK` chains (a `while_loop` over as many chunks as the group needs,
the last padded and its padding dropped), so the work follows the draws, and every chain is
computed by the same compiled per-chain code whatever its neighbours drew. The results are
those of the earlier formulation (`_masked_batched`: under `vmap`, every chain step computed
the warp and all four tables for every chain and kept one), bit for bit on XLA:CPU at every
batch size tested (tests/test_augmix.py compares them).
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

from adacorr.augment import image_ops as ops
from adacorr.core.checks import check_images, is_number
from adacorr.core.keys import per_example_keys

Array = jax.Array

CIFAR_OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x",
             "shear_y", "translate_x", "translate_y")
# `all_ops=True` adds the ops that overlap with the -C corruptions.
ALL_OPS = CIFAR_OPS + ("color", "contrast", "brightness", "sharpness")

_AFFINE_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_LUT_OPS = ("autocontrast", "equalize", "posterize", "solarize")
_ENHANCE_OPS = ("color", "contrast", "brightness", "sharpness")
_MAX_RANDOM_DEPTH = 3  # depth = -1: uniform in {1, 2, 3}
# Chains per chunk of a group (see `_update_where`); a group of n chains costs
# ceil(n / _CHUNK) chunks. Fixed, so a chain's compiled code never depends on the batch.
_CHUNK = 32


# --------------------------------------------------------------------------- validation


def _check_images(images, name: str = "images") -> None:
  check_images(images, name, channels=(1, 3))


def _check_options(severity, width, depth, alpha, all_ops) -> None:
  if not is_number(severity) or not 0 < severity <= 10:
    raise ValueError(f"severity={severity!r} must be a number in (0, 10].")
  if not isinstance(width, numbers.Integral) or isinstance(width, bool) or width < 1:
    raise ValueError(f"width={width!r} must be an int >= 1.")
  if (not isinstance(depth, numbers.Integral) or isinstance(depth, bool)
      or not (depth == -1 or depth >= 1)):
    raise ValueError(f"depth={depth!r} must be -1 (random in 1..3) or an int >= 1.")
  if not is_number(alpha) or not alpha > 0:
    raise ValueError(f"alpha={alpha!r} must be a number > 0.")
  if not isinstance(all_ops, bool):
    raise ValueError(f"all_ops={all_ops!r} must be a bool.")


# --------------------------------------------------------------------------- one chain step


def _sample_op(uniforms: Array, num_ops: int, severity: float) -> tuple[Array, Array, Array]:
  """(op index uniform in 0..num_ops-1, level ~ U(0.1, severity), sign +-1) from three
  U(0, 1) numbers (one random draw for the whole example compiles much faster)."""
  op = jnp.minimum(jnp.floor(uniforms[0] * num_ops).astype(jnp.int32), num_ops - 1)
  level = 0.1 + uniforms[1] * (severity - 0.1)
  sign = jnp.where(uniforms[2] > 0.5, -1.0, 1.0)
  return op, level, sign


def _op_params(op: Array, level: Array, sign: Array, names: tuple[str, ...],
               shape: tuple[int, int, int]) -> tuple[Array, Array, Array]:
  """One chain's (matrix (6,), table (C, 256), enhance factor) for op `names[op]`: the
  affine matrix (identity unless an affine op), the posterize / solarize table (identity
  otherwise; autocontrast's and equalize's depend on the image, see `_step`), and the
  ImageEnhance factor; computed exactly as in `_apply_op`."""
  h, w, c = shape
  int_param = lambda maxval: jnp.floor(level * maxval / 10.0)
  matrices = {
      "rotate": lambda: ops.rotate_matrix(sign * int_param(30), h, w),
      "shear_x": lambda: ops.shear_x_matrix(sign * level * 0.3 / 10.0),
      "shear_y": lambda: ops.shear_y_matrix(sign * level * 0.3 / 10.0),
      "translate_x": lambda: ops.translate_x_matrix(sign * int_param(w / 3.0)),
      "translate_y": lambda: ops.translate_y_matrix(sign * int_param(h / 3.0)),
  }
  matrix = jnp.stack([matrices.get(n, ops.identity_matrix)() for n in names])[op]
  identity = jnp.arange(ops.LEVELS, dtype=jnp.int32)
  tables = {
      "posterize": lambda: ops.posterize_lut(4 - int_param(4).astype(jnp.int32)),
      "solarize": lambda: ops.solarize_lut(256 - int_param(256).astype(jnp.int32)),
  }
  table = jnp.stack([tables.get(n, lambda: identity)() for n in names])[op]
  return matrix, jnp.broadcast_to(table, (c, ops.LEVELS)), level * 1.8 / 10.0 + 0.1


def _affine_levels(u: Array, matrix: Array) -> Array:
  """`ops.affine_levels(u, matrix)`, the same operations and values, with the four
  bilinear taps read as scalar gathers from the flattened (H * W * C,) image instead of
  (C,) rows of the (H * W, C) image: about 2x faster for C = 3 on XLA:CPU."""
  h, w, c = u.shape
  a0, a1, a2, a3, a4, a5 = (matrix[i] for i in range(6))
  ys = jnp.arange(h, dtype=jnp.float32)[:, None] + 0.5
  xs = jnp.arange(w, dtype=jnp.float32)[None, :] + 0.5
  xin = a0 * xs + a1 * ys + a2
  yin = a3 * xs + a4 * ys + a5
  inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
  xf, yf = jnp.floor(xin - 0.5), jnp.floor(yin - 0.5)
  dx, dy = (xin - 0.5 - xf)[..., None], (yin - 0.5 - yf)[..., None]
  x0 = jnp.clip(xf, 0, w - 1).astype(jnp.int32)
  x1 = jnp.clip(xf + 1, 0, w - 1).astype(jnp.int32)
  y0 = jnp.clip(yf, 0, h - 1).astype(jnp.int32)
  y1 = jnp.clip(yf + 1, 0, h - 1).astype(jnp.int32)
  flat = u.reshape(-1)
  channels = jnp.arange(c, dtype=jnp.int32)
  at = lambda yy, xx: jnp.take(flat, ((yy * w + xx)[..., None] * c + channels).reshape(-1)
                               ).reshape(h, w, c)
  p00, p01, p10, p11 = at(y0, x0), at(y0, x1), at(y1, x0), at(y1, x1)
  v1 = p00 + (p01 - p00) * dx
  v2 = jnp.where(((yf + 1 >= 0) & (yf + 1 < h))[..., None], p10 + (p11 - p10) * dx, v1)
  v = v1 + (v2 - v1) * dy
  return jnp.where(inside[..., None], jnp.floor(jnp.clip(v, 0.0, 255.0)), 0.0)


def _blend_op(degenerate):
  return lambda u, factor: ops.blend_levels(degenerate(u), u, factor)


_DEGENERATES = {"color": ops.color_degenerate, "contrast": ops.contrast_degenerate,
                "brightness": ops.brightness_degenerate,
                "sharpness": ops.sharpness_degenerate}

_IMAGE_TABLES = {"autocontrast": ops.autocontrast_lut, "equalize": ops.equalize_lut}


def _update_where(target: Array, mask: Array, fn, *inputs: Array) -> Array:
  """`target` (M, ...) with row i replaced by `fn(*(a[i] for a in inputs))` where `mask`
  (M,), computed only for the selected rows.

  The selected rows are gathered `_CHUNK` at a time (the last chunk padded with copies of
  the last row, whose results are dropped), `fn` is vmapped over the chunk and its rows
  scattered back, in a `while_loop` that runs ceil(#selected / _CHUNK) times. The index
  array always holds >= 2 chunks: with one, the chunk's rows would be loop-invariant, XLA
  would hoist part of `fn` out of the loop, and the split fusion can round differently (its
  CPU backend contracts `a * b + c` to an FMA only within a fusion), so a small batch could
  differ from a large one in the last bit of a bilinear weight.
  """
  m = target.shape[0]
  k = _CHUNK
  size = max(-(-m // k), 2) * k
  idx = jnp.nonzero(mask, size=size, fill_value=m)[0].astype(jnp.int32)
  count = jnp.sum(mask.astype(jnp.int32))
  batched_fn = jax.vmap(fn)

  def body(carry):
    i, target = carry
    rows = jax.lax.dynamic_slice(idx, (i * k,), (k,))
    safe = jnp.minimum(rows, m - 1)
    out = batched_fn(*(a[safe] for a in inputs))
    return i + 1, target.at[rows].set(out.astype(target.dtype), mode="drop")

  return jax.lax.while_loop(lambda c: c[0] * k < count, body, (jnp.int32(0), target))[1]


def _step(v: Array, op: Array, level: Array, sign: Array, active: Array,
          names: tuple[str, ...]) -> Array:
  """One chain step of M chains: levels `v` (M, H, W, C), each chain's draws `op`, `level`,
  `sign` (M,) and `active` (M,) bool (False: the chain's depth has ended, it is left as
  is). Each op group runs only on its chains (`_update_where`); chain i's result is
  `_apply_op(v[i], op[i], level[i], sign[i], names)` exactly."""
  ids = lambda group: jnp.array([i for i, n in enumerate(names) if n in group])
  in_group = lambda group: active & jnp.isin(op, ids(group))
  matrix, table, factor = jax.vmap(
      lambda o, lv, s: _op_params(o, lv, s, names, v.shape[1:]))(op, level, sign)
  v = _update_where(v, in_group(_AFFINE_OPS), _affine_levels, v, matrix)
  for name, make_table in _IMAGE_TABLES.items():
    if name in names:
      table = _update_where(table, active & (op == names.index(name)), make_table, v)
  v = _update_where(v, in_group(_LUT_OPS), ops.apply_lut, v, table)
  for name, degenerate in _DEGENERATES.items():
    if name in names:
      v = _update_where(v, active & (op == names.index(name)), _blend_op(degenerate), v,
                        factor)
  return v


# --------------------------------------------------------------------------- a batch


def _mixing_weights(key: Array, width: int, alpha: float,
                    uniforms: Array) -> tuple[Array, Array]:
  """w ~ Dirichlet(alpha, .., alpha) (width,) and m ~ Beta(alpha, alpha), from width + 2
  independent log-Gamma(alpha) variables: for alpha = 1, log Exp(1) = log(-log1p(-U)) of
  `uniforms` (width + 2,); else drawn from `key`."""
  if alpha == 1:
    log_g = jnp.log(-jnp.log1p(-uniforms))
  else:
    log_g = jax.random.loggamma(key, jnp.float32(alpha), (width + 2,), jnp.float32)
  ws = jax.nn.softmax(log_g[:width])
  m = jax.nn.sigmoid(log_g[width] - log_g[width + 1])
  return ws, m


def _draw(key: Array, *, width, steps, alpha) -> tuple[Array, Array, Array]:
  """One example's draws: the chains' U(0, 1) numbers (width, 1 + 3 steps) and the
  mixing weights ws (width,) and m."""
  k_uniform, k_gamma = jax.random.split(key)
  per_chain = 1 + 3 * steps
  uniforms = jax.random.uniform(k_uniform, (width * per_chain + width + 2,), jnp.float32)
  ws, m = _mixing_weights(k_gamma, width, alpha, uniforms[width * per_chain:])
  return uniforms[:width * per_chain].reshape(width, per_chain), ws, m


def _mix(image: Array, chains: Array, ws: Array, m: Array) -> Array:
  """(1 - m) x + m sum_i w_i chain_i for one example; `chains` (width, H, W, C) levels."""
  x = image.astype(jnp.float32)
  mix = jnp.tensordot(ws, ops.from_levels(chains), axes=1)
  return jnp.clip((1.0 - m) * x + m * mix, 0.0, 1.0).astype(image.dtype)


def _grouped_augmix(images: Array, keys: Array, *, severity, width, depth, alpha,
                    all_ops) -> Array:
  """AugMix of a batch (B, H, W, C) with per-example keys (B,), the chains of all
  examples stepped together (`_step`)."""
  names = ALL_OPS if all_ops else CIFAR_OPS
  steps = depth if depth > 0 else _MAX_RANDOM_DEPTH
  draw = functools.partial(_draw, width=width, steps=steps, alpha=alpha)
  draws, ws, m = jax.vmap(draw)(keys)
  b, item_shape = images.shape[0], images.shape[1:]
  draws = draws.reshape(b * width, 1 + 3 * steps)  # chain (i, j) is row i * width + j
  u = ops.to_levels(images.astype(jnp.float32))
  v = jnp.broadcast_to(u[:, None], (b, width) + item_shape).reshape((b * width,) + item_shape)
  n = depth if depth > 0 else 1 + jnp.floor(draws[:, 0] * _MAX_RANDOM_DEPTH)

  def body(v, xs):
    s, step_draws = xs
    op, level, sign = jax.vmap(lambda r: _sample_op(r, len(names), severity))(step_draws)
    return _step(v, op, level, sign, jnp.broadcast_to(s < n, (b * width,)), names), None

  step_draws = jnp.swapaxes(draws[:, 1:].reshape(b * width, steps, 3), 0, 1)
  v, _ = jax.lax.scan(body, v, (jnp.arange(steps), step_draws))
  return jax.vmap(_mix)(images, v.reshape((b, width) + item_shape), ws, m)


@functools.cache
def _batched(severity, width, depth, alpha, all_ops):
  return jax.jit(functools.partial(_grouped_augmix, severity=severity, width=width,
                                   depth=depth, alpha=alpha, all_ops=all_ops))


# --------------------------------------------------------------------------- reference
# The earlier, masked formulation, kept to test and benchmark the grouped one against.


def _apply_op(u: Array, op: Array, level: Array, sign: Array,
              names: tuple[str, ...]) -> Array:
  """Op `names[op]` at `level` (and `sign` for rotate / shear / translate) on levels
  (H, W, C), parameters scaled as the reference's `augmentations.py`.

  The earlier, masked formulation of one chain step (it computes the warp and every table
  and keeps the drawn op's); `_step` is what `augmix` runs. Kept as its reference.
  """
  h, w, _ = u.shape
  int_param = lambda maxval: jnp.floor(level * maxval / 10.0)
  is_op = lambda group: jnp.isin(op, jnp.array([i for i, n in enumerate(names) if n in group]))

  # Geometric ops: one bilinear warp with the drawn op's matrix.
  matrices = {
      "rotate": lambda: ops.rotate_matrix(sign * int_param(30), h, w),
      "shear_x": lambda: ops.shear_x_matrix(sign * level * 0.3 / 10.0),
      "shear_y": lambda: ops.shear_y_matrix(sign * level * 0.3 / 10.0),
      "translate_x": lambda: ops.translate_x_matrix(sign * int_param(w / 3.0)),
      "translate_y": lambda: ops.translate_y_matrix(sign * int_param(h / 3.0)),
  }
  matrix = jnp.stack([matrices.get(n, ops.identity_matrix)() for n in names])[op]
  u = jnp.where(is_op(_AFFINE_OPS), ops.affine_levels(u, matrix), u)

  # Lookup-table ops: one table lookup.
  identity = jnp.arange(ops.LEVELS, dtype=jnp.int32)
  tables = {
      "autocontrast": lambda: ops.autocontrast_lut(u),
      "equalize": lambda: ops.equalize_lut(u),
      "posterize": lambda: ops.posterize_lut(4 - int_param(4).astype(jnp.int32)),
      "solarize": lambda: ops.solarize_lut(256 - int_param(256).astype(jnp.int32)),
  }
  lut = jnp.stack([jnp.broadcast_to(tables.get(n, lambda: identity)(), (u.shape[-1], 256))
                   for n in names])[op]
  u = jnp.where(is_op(_LUT_OPS), ops.apply_lut(u, lut), u)

  # ImageEnhance ops: one blend with the drawn op's degenerate image.
  enhance = [n for n in names if n in _ENHANCE_OPS]
  if enhance:
    degenerates = {"color": ops.color_degenerate, "contrast": ops.contrast_degenerate,
                   "brightness": ops.brightness_degenerate,
                   "sharpness": ops.sharpness_degenerate}
    conds = [op == names.index(n) for n in enhance]
    degenerate = jnp.select(conds, [degenerates[n](u) for n in enhance], u)
    factor = level * 1.8 / 10.0 + 0.1
    u = jnp.where(is_op(_ENHANCE_OPS), ops.blend_levels(degenerate, u, factor), u)
  return u


def _chain(u: Array, uniforms: Array, names, severity, depth) -> Array:
  """`depth` (-1: uniform in 1..3) random ops in sequence on levels (H, W, C);
  `uniforms` (1 + 3 steps,) U(0, 1) numbers drive the draws."""
  steps = depth if depth > 0 else _MAX_RANDOM_DEPTH
  n = depth if depth > 0 else 1 + jnp.floor(uniforms[0] * _MAX_RANDOM_DEPTH)

  def body(v, xs):
    i, draws = xs
    v_new = _apply_op(v, *_sample_op(draws, len(names), severity), names)
    return jnp.where(i < n, v_new, v), None

  u, _ = jax.lax.scan(body, u, (jnp.arange(steps), uniforms[1:].reshape(steps, 3)))
  return u


def _augment_and_mix(image: Array, key: Array, *, severity, width, depth, alpha,
                     all_ops) -> Array:
  names = ALL_OPS if all_ops else CIFAR_OPS
  steps = depth if depth > 0 else _MAX_RANDOM_DEPTH
  k_uniform, k_gamma = jax.random.split(key)
  per_chain = 1 + 3 * steps
  uniforms = jax.random.uniform(k_uniform, (width * per_chain + width + 2,), jnp.float32)
  ws, m = _mixing_weights(k_gamma, width, alpha, uniforms[width * per_chain:])
  x = image.astype(jnp.float32)
  u = ops.to_levels(x)
  chains = jax.vmap(lambda r: _chain(u, r, names, severity, depth))(
      uniforms[:width * per_chain].reshape(width, per_chain))
  mix = jnp.tensordot(ws, ops.from_levels(chains), axes=1)
  return jnp.clip((1.0 - m) * x + m * mix, 0.0, 1.0).astype(image.dtype)


@functools.cache
def _masked_batched(severity, width, depth, alpha, all_ops):
  """The earlier formulation, `_augment_and_mix` vmapped over the batch: every chain step
  of every chain computes the warp and all the tables (`_apply_op`), and all
  `_MAX_RANDOM_DEPTH` steps run, masked. Same results as `_batched`; kept as the reference
  that tests and `benchmarks/augmix_throughput.py` compare with."""
  one = functools.partial(_augment_and_mix, severity=severity, width=width, depth=depth,
                          alpha=alpha, all_ops=all_ops)
  return jax.jit(jax.vmap(one))


# --------------------------------------------------------------------------- public


def augment_and_mix(image: Array, key: Array, *, severity: float = 3, width: int = 3,
                    depth: int = -1, alpha: float = 1.0, all_ops: bool = False) -> Array:
  """AugMix of ONE image (H, W, C) in [0, 1] with one key; see `augmix`."""
  _check_options(severity, width, depth, alpha, all_ops)
  _check_images(jnp.asarray(image)[None], "image")
  return _batched(severity, int(width), int(depth), alpha, all_ops)(
      jnp.asarray(image)[None], jnp.asarray(key)[None])[0]


def augmix(images: Array, key: Array, *, severity: float = 3, width: int = 3,
           depth: int = -1, alpha: float = 1.0, all_ops: bool = False) -> Array:
  """AugMix of every image of a batch.

  Args:
    images: (B, H, W, C) floating point in [0, 1], C = 1 or 3.
    key: one PRNG key (example i uses `jax.random.split(key, B)[i]`) or one key per
      example, shape (B,) typed or (B, 2) raw.
    severity: op strength in (0, 10]; each op's level ~ U(0.1, severity) (CIFAR: 3).
    width: number of chains mixed (>= 1).
    depth: ops per chain (>= 1), or -1 for uniform in {1, 2, 3} per chain.
    alpha: Dirichlet / Beta concentration (> 0).
    all_ops: also use color, contrast, brightness and sharpness.

  Returns:
    (B, H, W, C) images in [0, 1], the dtype of `images`. The options are static (one
    compilation each); jittable, deterministic per key.

  Raises:
    ValueError: naming `images` (rank, channels, dtype, values outside [0, 1] when
      concrete), `key`, `severity`, `width`, `depth`, `alpha` or `all_ops`.
  """
  _check_options(severity, width, depth, alpha, all_ops)
  _check_images(images)
  keys = per_example_keys(key, images.shape[0])
  return _batched(severity, int(width), int(depth), alpha, all_ops)(images, keys)


def augmix_views(images: Array, key: Array, *, num_views: int = 2,
                 **kwargs) -> tuple[Array, ...]:
  """`num_views` independent AugMix views of `images` (the JSD loss uses 2).

  Example i's views use `jax.random.split(k_i, num_views)`, k_i its key as in `augmix`;
  all views run as one batch. `kwargs` are `augmix`'s options.

  Returns:
    A tuple of `num_views` arrays (B, H, W, C) in [0, 1].
  """
  if (not isinstance(num_views, numbers.Integral) or isinstance(num_views, bool)
      or num_views < 1):
    raise ValueError(f"num_views={num_views!r} must be an int >= 1.")
  _check_images(images)
  b = images.shape[0]
  keys = jax.vmap(lambda k: jax.random.split(k, num_views))(per_example_keys(key, b))
  keys = jnp.swapaxes(keys, 0, 1).reshape((num_views * b,) + keys.shape[2:])
  tiled = jnp.tile(images, (num_views, 1, 1, 1))
  out = augmix(tiled, keys, **kwargs)
  return tuple(out[v * b:(v + 1) * b] for v in range(num_views))


def _check_logits(logits_clean, logits_aug1, logits_aug2) -> None:
  shape = jnp.shape(logits_clean)
  if len(shape) != 2:
    raise ValueError(f"logits_clean must have shape (B, K), got {shape}.")
  for name, lg in (("logits_aug1", logits_aug1), ("logits_aug2", logits_aug2)):
    if jnp.shape(lg) != shape:
      raise ValueError(f"{name} must have the shape of logits_clean {shape}, got "
                       f"{jnp.shape(lg)}.")


def jsd_consistency_per_example(logits_clean: Array, logits_aug1: Array,
                                logits_aug2: Array) -> Array:
  """(B,) Jensen-Shannon consistency of three (B, K) logits, as the reference:

  `M = clip((p_c + p_1 + p_2) / 3, 1e-7, 1)`, `(KL(p_c||M) + KL(p_1||M) + KL(p_2||M)) / 3`
  with `KL(p||M) = sum_k p_k (log p_k - log M_k)`, in float32, clamped at 0 (the clip can
  make it ~-1e-8 negative). Symmetric in its arguments, 0 for identical predictions.
  """
  _check_logits(logits_clean, logits_aug1, logits_aug2)
  log_ps = [jax.nn.log_softmax(jnp.asarray(lg, jnp.float32), axis=-1)
            for lg in (logits_clean, logits_aug1, logits_aug2)]
  ps = [jnp.exp(lp) for lp in log_ps]
  log_m = jnp.log(jnp.clip((ps[0] + ps[1] + ps[2]) / 3.0, 1e-7, 1.0))
  kl = sum(jnp.sum(p * (lp - log_m), axis=-1) for p, lp in zip(ps, log_ps))
  return jnp.maximum(kl / 3.0, 0.0)


def jsd_consistency(logits_clean: Array, logits_aug1: Array, logits_aug2: Array) -> Array:
  """Scalar batch mean of `jsd_consistency_per_example` (the reference's 'batchmean'
  KL); the AugMix loss is `CE(logits_clean, y) + 12 * jsd_consistency(...)`."""
  return jnp.mean(jsd_consistency_per_example(logits_clean, logits_aug1, logits_aug2))

