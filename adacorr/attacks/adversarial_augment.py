"""AdversarialAugment (AdA; Calian et al. 2022): adversarial perturbations of the WEIGHTS
of an image-to-image corruption network, one perturbation per example.

For a corruption net `c_phi` with parameter blocks `phi_i`, AdA searches `delta` with
`||delta_i||_2 <= nu * ||phi_i||_2` for every block `i` that maximises the classifier's
cross-entropy on `c_{phi + delta}(x)` (Algorithm 1):

* init: each `delta_i` has a uniformly random direction and length `r ~ U(0, nu||phi_i||)`;
* `num_steps` signed-gradient (FGSM) ascent steps of size `step_size`, each followed by
  projecting every block back to length `<= nu * ||phi_i||` (rescaling);
* default step size: 1/4 of the median radius `nu * ||phi_i||` over the blocks, times
  `10 / num_steps` (App. E.4: 10 steps on CIFAR-10; 3 steps with x10/3 on ImageNet).

Blocks (`blocks=`): 'layer' (default, the paper: "phi_i corresponds to the vector of
parameters in the i-th layer", App. B's "layer-wise re-scaling") groups the leaves of one
module, e.g. a conv's kernel and bias, into one block; 'tensor' (our earlier reading)
makes every kernel and every bias its own block, which shrinks bias perturbations (a
64->64 conv's bias radius is ~24x smaller than its layer's) and moves the median radius
that sets the step size. A leaf at the top level of the params tree is its own block.

Per-example perturbations are `vmap`ped over the batch: every example gets its own copy
of the perturbed weights, and XLA turns the per-example convolutions into grouped
convolutions (no Python loop over examples). `chunk_size` splits the batch into
"nano-batches" (the paper's device for bounding memory) processed one after another;
`chunk_size='auto'` picks the largest nano-batch whose estimated memory
(`ada_bytes_per_example`) fits the device's budget (`adacorr.attacks.memory`).

`ssim_line_search` is the paper's approximate SSIM safeguard (App. F), applied after AdA.

Conventions: images NHWC float32 in [0, 1]; `logits_fn(x) -> (B, K)` is the classifier in
evaluation mode (frozen BatchNorm statistics), so that an example's logits do not depend
on the rest of the batch; `corruption_apply(params, x) -> x'` maps a batch (b, H, W, C)
to images of the same shape (e.g. `lambda p, x: net.apply({'params': p}, x)`).

The corrupted images are clipped to [0, 1]. The paper defines the corruption network as
a map of the image space to itself ("let c_phi : X -> X be a corruption network", Sec. 3)
but says nothing about what happens when a perturbed net leaves [0, 1]; there is no
public AdA code to decide it (`../shared/reference/methods.md`). We take the conservative
reading: `perturbed_corruption` clips `c_{phi + delta}(x)` to [0, 1], both where the
ascent evaluates the classifier's loss (so the attack maximises the loss of the images
the classifier is trained on) and in the result (so `ada` always returns valid images).
Our own nets (EDSR, CAE, VQ-VAE, U-Net in `adacorr.models.corruption`) end with a clip
to [0, 1] already, so for them the clip changes no value; it matters for a user's net
whose output is unbounded (e.g. a bare `nn.Conv`), which without it returned images in
about [-1, 1].

The relative radius `nu` must be a finite number in (0, 1) (`check_nu`): nu >= 1 admits
`delta_i = -phi_i`, which zeroes a whole layer (the paper's own example of a perturbation
that leaves "fully zero, uninformative outputs", Sec. 3), and an infinite nu makes the
random start infinite (all-NaN images). The paper uses nu = 0.0075 .. 0.0375 (Fig. 2;
0.015 by default, Table 7 sweeps 0.0075 .. 0.0225); above `NU_WARN` = 0.1 (more than 2.5x
the largest) `check_nu` warns.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import optax

from adacorr.attacks import ascent
from adacorr.attacks import memory
from adacorr.core.checks import (
    check_choice, check_images, check_key, check_labels, check_logits_fn,
    check_same_shape, check_steps, nonfinite_summary)
from adacorr.core import checks
from adacorr.core.keys import per_example_keys
from adacorr.core.tree import TINY, is_concrete

Array = jax.Array
PyTree = Any
CorruptionApply = Callable[[PyTree, Array], Array]
LogitsFn = Callable[[Array], Array]

CHUNK_LOOPS = ("map", "unroll")
LINE_SEARCH_GAMMAS = 9
# The relative radii of the paper (Fig. 2: 0.0075 .. 0.0375; 0.015 by default).
NU_PAPER = (0.0075, 0.0375)
NU_WARN = 0.1   # above: a UserWarning (more than 2.5x the paper's largest radius)
NU_MAX = 1.0    # from here on: an error (the ball holds delta_i = -phi_i)
ARGUMENTS = "ada(corruption_apply, corruption_params, logits_fn, x, y, key, *, nu, num_steps)"


# --------------------------------------------------------------------------- validation


def real_scalar(value, name: str, what: str, *, allow_none: bool = False):
  """`value` as a Python float, or None when it is traced (or None with `allow_none`).

  ValueError unless `value` is one real number: a Python / numpy number or a 0-d array
  of an integer or floating dtype (concrete or traced). Strings, bools, None, complex
  numbers and arrays with more than one entry are rejected, naming `name` and `what`
  it should be (numpy's own errors for them name neither).
  """
  if value is None:
    if allow_none:
      return None
    raise ValueError(f"{name} is required: {what}.")
  if isinstance(value, (str, bytes)):
    raise ValueError(f"{name}={value!r} is a string; it must be {what} (a number, e.g. "
                     f"float({value!r}) if the string came from a config or flag).")
  if isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name}={value!r} is a bool; it must be {what}.")
  try:
    dtype, shape = jnp.result_type(value), jnp.shape(value)
  except Exception as e:  # pylint: disable=broad-except  (lists of lists, objects, ...)
    raise ValueError(f"{name}={value!r} must be {what}, got {type(value).__name__}.") from e
  if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)) or (
      dtype == jnp.bool_):
    raise ValueError(f"{name}={value!r} must be {what}, got dtype {dtype}.")
  if shape != ():
    raise ValueError(f"{name} must be one number ({what}), got an array of shape {shape}.")
  return float(np.asarray(value)) if is_concrete(value) else None


def check_nu(nu, name: str = "nu", *, warn: bool = True) -> None:
  """ValueError unless `nu` (the relative radius ||delta_i|| / ||phi_i||) is one real
  number, finite, in (0, 1) (values when concrete; a traced nu passes); with `warn`, a
  UserWarning above `NU_WARN` = 0.1.

  The bounds. nu <= 0 or NaN is no radius. An infinite nu puts no bound on the weights
  (the random start is inf * direction: all-NaN images). nu >= 1 lets every layer be
  perturbed by at least its own norm, so the ball holds `delta_i = -phi_i`: the zeroed
  layer the paper gives as the example of an "exceedingly corrupted" image that the
  radius is there to exclude (Sec. 3). The paper's radii are 0.0075 .. 0.0375 (0.015 by
  default); above 0.1, a relative weight change of more than 10%, we warn.
  """
  what = (f"the relative radius ||delta_i|| / ||phi_i|| in (0, 1), e.g. 0.015 (the "
          f"paper's default)")
  value = real_scalar(nu, name, what)
  if value is None:
    return
  if np.isnan(value) or value <= 0:
    raise ValueError(f"{name}={nu!r} must be > 0 (and not NaN): {what}.")
  if not np.isfinite(value):
    raise ValueError(f"{name}={nu!r} must be finite: an infinite radius puts no bound on "
                     f"the weight perturbation (its random start is infinite, the images "
                     f"NaN); use {what}.")
  if value >= NU_MAX:
    raise ValueError(
        f"{name}={value:g} allows a relative weight perturbation of {100 * value:g}%: with "
        f"nu >= 1 the ball holds delta_i = -phi_i, which zeroes a whole layer (the paper's "
        f"example of a perturbation that destroys the image, Sec. 3). The paper uses nu = "
        f"{NU_PAPER[0]:g} .. {NU_PAPER[1]:g} (0.015 by default); nu is a fraction in (0, 1), "
        f"not a percent.")
  if warn and value > NU_WARN:
    warnings.warn(
        f"{name}={value:g} is a relative weight perturbation of {100 * value:g}%, more than "
        f"2.5x the largest radius of the paper ({NU_PAPER[1]:g}; 0.015 by default, "
        f"Fig. 2): expect heavily corrupted images (the SSIM line search may pull most of "
        f"them back).", UserWarning, stacklevel=checks.caller_stacklevel())


def check_step_size(step_size, name: str = "step_size") -> None:
  """ValueError unless `step_size` is None (the default step) or one real number,
  finite and >= 0 (values when concrete). An infinite step makes the projection compute
  inf * 0: NaN weights and images."""
  value = real_scalar(step_size, name, "the ascent step, a finite number >= 0 (None: "
                      "1/4 of the median block radius times 10/num_steps)", allow_none=True)
  if value is not None and not (np.isfinite(value) and value >= 0):
    raise ValueError(f"{name}={step_size!r} must be a finite number >= 0 (an infinite or "
                     f"NaN step makes the perturbed weights NaN).")


def check_memory_budget(memory_budget, name: str = "memory_budget") -> None:
  """ValueError unless `memory_budget` is None or a finite number of bytes > 0."""
  value = real_scalar(memory_budget, name, "a number of bytes per device > 0 (None: half "
                      "the accelerator's memory)", allow_none=True)
  if memory_budget is not None and value is not None and not (
      np.isfinite(value) and value > 0):
    raise ValueError(f"{name}={memory_budget!r} must be a finite number of bytes > 0.")


def check_chunk_size(chunk_size) -> None:
  """ValueError unless `chunk_size` is None, 'auto' or a positive Python int."""
  if chunk_size is not None and chunk_size != "auto" and (
      isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
      or chunk_size < 1):
    raise ValueError(f"chunk_size={chunk_size!r} must be None, 'auto' or a positive int.")


def check_flag(value, name: str) -> None:
  """ValueError unless `value` is a bool (a flag given as 'no' would be truthy)."""
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name}={value!r} must be a bool (True or False).")


def _accepts_positional(fn, count: int) -> bool:
  """Whether `fn` can be called with `count` positional arguments (True when its
  signature cannot be read, e.g. some builtins)."""
  try:
    signature = inspect.signature(fn)
  except (TypeError, ValueError):
    return True
  try:
    signature.bind(*([None] * count))
  except TypeError:
    return False
  return True


def check_functions(corruption_apply, corruption_params, logits_fn) -> None:
  """ValueError unless `corruption_apply` is a function of (params, images) and
  `logits_fn` one of (images): the messages name the arguments and their order, since
  passing them swapped (both are functions) otherwise ends in a lambda's TypeError."""
  swapped = (" (did you swap corruption_apply and logits_fn? The order is "
             f"{ARGUMENTS})")
  if callable(corruption_params) and not callable(corruption_apply):
    raise ValueError(
        f"corruption_params is a function and corruption_apply is a "
        f"{type(corruption_apply).__name__}: the order is {ARGUMENTS}, i.e. the function "
        f"(params, images) -> images first, then its params.")
  for fn, name, count, signature in (
      (corruption_apply, "corruption_apply", 2, "(params, images (b, H, W, C)) -> images"),
      (logits_fn, "logits_fn", 1, "(images (B, H, W, C)) -> logits (B, K)")):
    if not callable(fn):
      raise ValueError(f"{name} must be a function {signature}, got "
                       f"{type(fn).__name__}; the order is {ARGUMENTS}.")
    if not _accepts_positional(fn, count):
      try:
        shown = f"{getattr(fn, '__name__', type(fn).__name__)}{inspect.signature(fn)}"
      except (TypeError, ValueError):
        shown = repr(fn)
      raise ValueError(f"{name} must take {count} positional argument"
                       f"{'s' if count > 1 else ''}, {signature}, but it is {shown}"
                       f"{swapped}.")


def check_nhwc(x, name: str = "x") -> None:
  """ValueError for a batch that looks NCHW: (B, 1 or 3, H, W) with W not 1 or 3."""
  shape = jnp.shape(x)
  if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3, 4):
    raise ValueError(
        f"{name} has shape {shape}, which looks like NCHW (channels second); adacorr takes "
        f"NHWC images (B, H, W, C): pass {name}.transpose(0, 2, 3, 1).")


def check_num_steps(num_steps) -> None:
  """`adacorr.core.checks.check_steps` (kept for `adacorr.methods.ada`)."""
  check_steps(num_steps)


def check_corruption_params(params: PyTree, name: str = "corruption_params") -> None:
  """ValueError unless `params` is a non-empty pytree of floating point arrays, finite
  (values when concrete: a NaN weight makes every image NaN, and its block's radius)."""
  if callable(params) and not hasattr(params, "shape"):
    raise ValueError(f"{name} is a function ({getattr(params, '__name__', params)!r}); it "
                     f"must be the corruption net's params pytree (the order is "
                     f"{ARGUMENTS}).")
  leaves = jax.tree.leaves(params)
  if not leaves:
    raise ValueError(f"{name} has no arrays; pass the corruption net's params pytree.")
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    where = f"{name}{jax.tree_util.keystr(path)}"
    try:
      dtype = jnp.result_type(leaf)
    except Exception as e:  # pylint: disable=broad-except  (strings, objects)
      raise ValueError(f"{where} is a {type(leaf).__name__}, not an array; every leaf of "
                       f"{name} must be a floating point array.") from e
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(f"{where} has dtype {dtype}; every block must be floating point.")
    # On the host (jnp ops on constants would be staged under jit); arrays spread over
    # several processes are not read.
    if is_concrete(leaf) and getattr(leaf, "is_fully_addressable", True):
      v = np.asarray(leaf)
      if not np.isfinite(v).all():
        raise ValueError(f"{where} contains NaN or inf values ({int(np.isnan(v).sum())} NaN "
                         f"and {int(np.isinf(v).sum())} inf of {v.size} entries); the "
                         f"corruption net's weights must be finite.")


def check_same_structure(deltas: PyTree, params: PyTree, *, batched: bool,
                         name: str = "deltas") -> None:
  """ValueError unless `deltas` has the tree structure of `params` and matching shapes
  (with one leading batch axis on every leaf when `batched`)."""
  d_struct, p_struct = jax.tree.structure(deltas), jax.tree.structure(params)
  if d_struct != p_struct:
    raise ValueError(f"{name} does not have the structure of the corruption params: "
                     f"{d_struct} vs {p_struct}.")
  for (path, d), p in zip(jax.tree_util.tree_flatten_with_path(deltas)[0],
                          jax.tree.leaves(params)):
    d_shape = jnp.shape(d)[1:] if batched else jnp.shape(d)
    if d_shape != jnp.shape(p):
      raise ValueError(f"{name}{jax.tree_util.keystr(path)} has shape {jnp.shape(d)}; "
                       f"expected {(('B',) if batched else ()) + jnp.shape(p)}.")


# --------------------------------------------------------------------------- blocks


BLOCKS = ("layer", "tensor")


def check_blocks(blocks) -> None:
  check_choice(blocks, BLOCKS, "blocks")


def block_ids(params: PyTree, blocks: str = "layer") -> tuple[int, ...]:
  """The block index of every leaf of `params` (in `jax.tree.leaves` order).

  'tensor': every leaf its own block. 'layer': leaves with the same parent in the tree
  (the params of one module, e.g. a conv's 'kernel' and 'bias') share a block; a leaf at
  the top level is its own block.
  """
  check_blocks(blocks)
  paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  if blocks == "tensor":
    return tuple(range(len(paths)))
  ids: dict[str, int] = {}
  return tuple(ids.setdefault(jax.tree_util.keystr(p[:-1] if len(p) > 1 else p), len(ids))
               for p in paths)


def _block_sums(values, ids):
  """Sum of `values` (one array per leaf) within each block, in block order."""
  sums: dict[int, Array] = {}
  for v, i in zip(values, ids):
    sums[i] = v if i not in sums else sums[i] + v
  return [sums[i] for i in range(len(sums))]


def _block_norms(params: PyTree, ids) -> list:
  """`||phi_i||_2` per block (scalars)."""
  squares = [jnp.sum(jnp.square(p.astype(jnp.float32))) for p in jax.tree.leaves(params)]
  return [jnp.sqrt(s) for s in _block_sums(squares, ids)]


def block_radii(params: PyTree, nu, blocks: str = "layer") -> PyTree:
  """Per-leaf radius `nu * ||phi_i||_2` of the leaf's block (a scalar per leaf of
  `params`; the leaves of one block share it)."""
  ids = block_ids(params, blocks)
  norms = _block_norms(params, ids)
  return jax.tree.unflatten(jax.tree.structure(params), [nu * norms[i] for i in ids])


def default_step_size(params: PyTree, nu, num_steps: int, blocks: str = "layer") -> Array:
  """1/4 of the median block radius, times 10/num_steps (App. E.4, Table 6)."""
  radii = nu * jnp.stack(_block_norms(params, block_ids(params, blocks)))
  return 0.25 * jnp.median(radii) * 10.0 / max(int(num_steps), 1)


def random_delta(key: Array, params: PyTree, nu, blocks: str = "layer") -> PyTree:
  """One example's initial perturbation: per block a uniformly random direction with
  length `r ~ U(0, nu * ||phi_i||)`."""
  leaves, treedef = jax.tree.flatten(params)
  ids = block_ids(params, blocks)
  norms = _block_norms(params, ids)
  sizes = [int(np.prod(p.shape)) for p in leaves]
  k_dir, k_len = jax.random.split(key)
  # Two draws for all blocks (one per block would compile one RNG kernel per shape).
  normal = jax.random.normal(k_dir, (sum(sizes),), jnp.float32)
  lengths = jax.random.uniform(k_len, (len(norms),), jnp.float32)
  directions, start = [], 0
  for p, size in zip(leaves, sizes):
    directions.append(normal[start:start + size].reshape(p.shape))
    start += size
  dir_norms = [jnp.sqrt(s) for s in _block_sums(
      [jnp.sum(jnp.square(d)) for d in directions], ids)]
  out = [(d / jnp.maximum(dir_norms[i], TINY) * lengths[i] * (nu * norms[i])).astype(p.dtype)
         for d, i, p in zip(directions, ids, leaves)]
  return jax.tree.unflatten(treedef, out)


def project_deltas(deltas: PyTree, params: PyTree, nu, blocks: str = "layer") -> PyTree:
  """Rescales every block of every example to length `<= nu * ||phi_i||`.

  Args:
    deltas: per-example perturbations, the structure of `params` with a leading batch
      axis (B, *phi_i.shape) on every leaf.
    params: the corruption net's parameters phi.
    nu: relative radius in (0, 1) (`check_nu`).
    blocks: 'layer' or 'tensor' (see the module docstring).

  Raises:
    ValueError: if the structures or shapes do not match, nu is not in (0, 1) or blocks
      is unknown.
  """
  check_nu(nu, warn=False)
  check_same_structure(deltas, params, batched=True)
  ids = block_ids(params, blocks)
  return _project(deltas, [nu * n for n in _block_norms(params, ids)], ids)


def _per_example_sq(d: Array) -> Array:
  return jnp.sum(jnp.square(d.reshape(d.shape[0], -1).astype(jnp.float32)), axis=1)


def _project(deltas: PyTree, radii: list, ids) -> PyTree:
  """Rescales each example's block `i` to length `<= radii[i]` (radii: one per block)."""
  leaves, treedef = jax.tree.flatten(deltas)
  norms = [jnp.sqrt(s) for s in _block_sums([_per_example_sq(d) for d in leaves], ids)]
  scales = [jnp.minimum(1.0, r / jnp.maximum(n, TINY)) for r, n in zip(radii, norms)]
  return jax.tree.unflatten(treedef, [
      (d * scales[i].reshape((-1,) + (1,) * (d.ndim - 1))).astype(d.dtype)
      for d, i in zip(leaves, ids)])


def relative_norms(deltas: PyTree, params: PyTree, blocks: str = "layer") -> PyTree:
  """`||delta_i|| / ||phi_i||` per example (B,) of each leaf's block (the leaves of one
  block share the value); the AdA constraint is `max over blocks <= nu`. Blocks with
  `phi_i = 0` give 0 for delta = 0."""
  ids = block_ids(params, blocks)
  pn = _block_norms(params, ids)
  leaves, treedef = jax.tree.flatten(deltas)
  dn = [jnp.sqrt(s) for s in _block_sums([_per_example_sq(d) for d in leaves], ids)]
  rel = [jnp.where(d > 0, d / jnp.maximum(p, TINY), 0.0) for d, p in zip(dn, pn)]
  return jax.tree.unflatten(treedef, [rel[i] for i in ids])


def perturbed_corruption(corruption_apply: CorruptionApply, params: PyTree,
                         deltas: PyTree, x: Array) -> Array:
  """`clip(c_{phi + delta_b}(x_b), 0, 1)` for every example b: vmapped per-example
  weights.

  The clip keeps the images valid whatever the perturbed net outputs (the paper's
  c_phi : X -> X; see the module docstring); for a net that clips itself it changes no
  value. Its gradient is 0 where the net's output is outside [0, 1], as for the
  classifier that sees the clipped image.

  Args:
    deltas: per-example perturbations (leading batch axis B on every leaf).
    x: (B, H, W, C) images.
  Returns:
    (B, H, W, C) corrupted images in [0, 1] (NaN stays NaN).
  """
  def one(delta, xb):
    return corruption_apply(jax.tree.map(jnp.add, params, delta), xb[None])[0]
  return jnp.clip(jax.vmap(one)(deltas, x), 0.0, 1.0)


# --------------------------------------------------------------------------- attack


def _attack_nano_batch(corruption_apply, params, radii, logits_fn, x, y, keys, *, nu,
                       num_steps, step_size, blocks):
  """The whole AdA search for one (nano-)batch; returns (x_adv, deltas)."""
  frozen = jax.lax.stop_gradient(params)
  deltas = jax.vmap(lambda k: random_delta(k, frozen, nu, blocks))(keys)
  ids = block_ids(frozen, blocks)

  def total_ce(d):
    logits = logits_fn(perturbed_corruption(corruption_apply, frozen, d, x))
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y)), None

  # Signed-gradient ascent on the weight perturbations, projected block by block.
  deltas = ascent.ascend(total_ce, deltas, num_steps=num_steps,
                         update=ascent.signed_step(step_size),
                         project=lambda d: _project(d, radii, ids))
  x_adv = perturbed_corruption(corruption_apply, frozen, deltas, x)
  return x_adv, deltas


def ada(corruption_apply: CorruptionApply, corruption_params: PyTree, logits_fn: LogitsFn,
        x: Array, y: Array, key, *, nu, num_steps: int, step_size=None,
        chunk_size: int | str | None = None, chunk_loop: str = "map",
        return_deltas: bool = False, blocks: str = "layer",
        memory_budget: int | None = None):
  """AdA: per-example adversarial weight perturbations of a corruption network.

  Args:
    corruption_apply: `(params, images (b, H, W, C)) -> images (b, H, W, C)`, ideally
      in [0, 1] (the result is clipped to [0, 1] either way).
    corruption_params: the pretrained parameters phi (a pytree of finite float arrays;
      the leaves of one module form a block, see `blocks`).
    logits_fn: `(images (b, H, W, C)) -> logits (b, K)`, the classifier in eval mode.
    x: (B, H, W, C) clean images in [0, 1].
    y: (B,) int labels.
    key: one key, or one key per example (shape (B,) typed / (B, 2) raw). With
      per-example keys, example b's result depends only on x[b], y[b] and key[b].
    nu: relative radius, a finite number in (0, 1): `||delta_i|| <= nu * ||phi_i||`
      for every block i (the paper: 0.015; a warning above 0.1, see `check_nu`). May be
      traced (then unchecked).
    blocks: 'layer' (default, the paper's: a module's kernel and bias together) or
      'tensor' (every leaf its own block); see the module docstring.
    num_steps: signed-gradient ascent steps (>= 0; 0 = random perturbation only).
    step_size: ascent step; default 1/4 of the median block radius times 10/num_steps.
    chunk_size: examples per nano-batch (None: the whole batch at once). Nano-batches
      are processed one after another, bounding the memory of per-example weights. Under
      data parallelism this is the GLOBAL nano-batch: each device holds
      chunk_size / num_devices of it (the paper's 8 per device: 8 * num_devices).
      'auto': the largest nano-batch whose estimated memory fits `memory_budget` per
      device (`ada_bytes_per_example`, `adacorr.attacks.memory.auto_chunk_size`); on
      XLA:CPU without an explicit budget, one example per device (the fastest there).
    memory_budget: bytes per device for chunk_size='auto' (None:
      `adacorr.attacks.memory.memory_budget()`, half the accelerator's memory).
    chunk_loop: 'map' (`lax.map`, a sequential loop: bounded memory, small program) or
      'unroll' (a Python loop inside jit: a larger program). On XLA:CPU the grouped
      convolutions of vmapped per-example weights are very slow: `chunk_size=1` with
      'map' was ~20x faster than the whole-batch vmap there (benchmarks/RESULTS.md).
    return_deltas: also return the per-example perturbations.

  Returns:
    x_adv (B, H, W, C) in [0, 1] (the perturbed net's output clipped to [0, 1], see the
    module docstring); with `return_deltas`, `(x_adv, deltas)` where `deltas` has the
    structure of `corruption_params` with a leading batch axis.

  Raises:
    ValueError: for nu not a finite number in (0, 1) (a string, NaN, inf, <= 0, >= 1),
      num_steps not an int >= 0, a step_size that is not a finite number >= 0, a bad
      chunk_size / chunk_loop / memory_budget / blocks, a return_deltas that is not a
      bool, corruption_apply / logits_fn that are not functions of (params, images) /
      (images) (e.g. swapped), images that are not a non-empty rank-4 NHWC float batch in
      [0, 1] (NCHW is named), labels of the wrong shape or (when concrete) outside
      [0, K), a `logits_fn` not returning (B, K), a missing key or one of the wrong
      shape, params that are not a pytree of finite float arrays, a `corruption_apply`
      that fails on the params or whose output shape differs from its input, or (when
      concrete) a result with NaN or inf (the corruption net's output was not finite).
  Warns:
    UserWarning: for nu > 0.1 (more than 2.5x the largest radius of the paper).

  All checks are on static shapes and dtypes or (when concrete) on values, before
  anything is traced; under `jax.jit` they run once, at tracing.
  """
  check_functions(corruption_apply, corruption_params, logits_fn)
  check_images(x, allow_empty=False)
  check_nhwc(x)
  try:
    num_classes = check_logits_fn(logits_fn, x)
  except ValueError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (the user's model failing)
    raise ValueError(f"logits_fn failed on x of shape {jnp.shape(x)} "
                     f"({jnp.result_type(x)}): {type(e).__name__}: {e}") from e
  check_labels(y, jnp.shape(x)[0], num_classes)
  check_nu(nu)
  check_steps(num_steps)
  check_step_size(step_size)
  check_corruption_params(corruption_params)
  check_key(key, reason="AdA draws a random initial perturbation")
  check_chunk_size(chunk_size)
  check_memory_budget(memory_budget)
  check_choice(chunk_loop, CHUNK_LOOPS, "chunk_loop")
  check_blocks(blocks)
  check_flag(return_deltas, "return_deltas")
  try:
    out = jax.eval_shape(corruption_apply, corruption_params,
                         jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype))
  except Exception as e:  # e.g. flax's ScopeParamShapeError for params of another net
    raise ValueError(
        f"corruption_apply failed on corruption_params and images of shape "
        f"{(1,) + x.shape[1:]} (do the params belong to this corruption net, with this "
        f"many input channels?): {type(e).__name__}: {e}") from e
  if getattr(out, "shape", None) != (1,) + x.shape[1:]:
    raise ValueError(
        f"corruption_apply must map images of shape {(1,) + x.shape[1:]} to the same "
        f"shape; it returned {getattr(out, 'shape', type(out))}.")

  batch = x.shape[0]
  keys = per_example_keys(key, batch)
  frozen = jax.lax.stop_gradient(corruption_params)
  radii = [nu * n for n in _block_norms(frozen, block_ids(frozen, blocks))]
  if step_size is None:
    step_size = default_step_size(frozen, nu, num_steps, blocks)
  if chunk_size == "auto":
    chunk_size = memory.auto_chunk_size(
        batch, ada_bytes_per_example(corruption_apply, frozen, logits_fn, x, y),
        memory.memory_budget() if memory_budget is None else int(memory_budget),
        num_devices=jax.device_count(),
        max_per_device=1 if memory_budget is None and jax.default_backend() == "cpu"
        else None)

  def run(xc, yc, kc):
    return _attack_nano_batch(corruption_apply, corruption_params, radii, logits_fn, xc,
                              yc, kc, nu=nu, num_steps=num_steps, step_size=step_size,
                              blocks=blocks)

  if chunk_size is None or chunk_size >= batch:
    x_adv, deltas = run(x, y, keys)
  else:
    x_adv, deltas = _chunked(run, x, y, keys, chunk_size, chunk_loop)
  # Eager calls only (traced: None, no cost); not for arrays spread over processes.
  bad = (nonfinite_summary(x_adv)
         if is_concrete(x_adv) and getattr(x_adv, "is_fully_addressable", True) else None)
  if bad is not None:
    raise ValueError(
        f"AdA produced NaN or inf images ({bad}) from finite images and weights: the "
        f"corruption net's output is not finite for the perturbed weights (nu={nu!r}); "
        f"check that corruption_apply is numerically stable (e.g. no division by a "
        f"perturbed quantity) or use a smaller nu.")
  return (x_adv, deltas) if return_deltas else x_adv


def ada_bytes_per_example(corruption_apply: CorruptionApply, corruption_params: PyTree,
                          logits_fn: LogitsFn, x: Array, y: Array) -> int:
  """An upper bound on one example's memory in an AdA ascent step, in bytes.

  `adacorr.attacks.memory.traced_bytes` of one example's loss-and-gradient with respect
  to its weight perturbation (the perturbed weight copy, the corruption net's and the
  classifier's activations and their gradients, the weight gradient), plus two more
  weight-sized arrays the ascent carries (the perturbation and its update). The
  classifier's own weights are shared by all examples and not counted. Traces only.
  """
  params = jax.lax.stop_gradient(corruption_params)
  one = jax.tree.map(lambda p: jax.ShapeDtypeStruct((1,) + p.shape, p.dtype), params)

  def loss_and_grad(delta):
    def ce(d):
      logits = logits_fn(perturbed_corruption(corruption_apply, params, d, x[:1]))
      return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y[:1]))
    return jax.value_and_grad(ce)(delta)

  weights = sum(int(np.prod(p.shape)) * np.dtype(p.dtype).itemsize
                for p in jax.tree.leaves(params))
  return memory.traced_bytes(loss_and_grad, one) + 2 * weights


def _chunked(run, x, y, keys, chunk_size: int, chunk_loop: str):
  """Runs `run` over nano-batches of `chunk_size` one after another.

  Example b goes to nano-batch `b % num_chunks` (strided, not contiguous): when the
  batch is sharded over devices, every nano-batch then spans all devices, each holding
  `chunk_size / num_devices` of it. The batch is padded (with copies of its first rows,
  whose results are dropped) to a multiple of `chunk_size`.
  """
  batch = x.shape[0]
  num_chunks = -(-batch // chunk_size)
  pad = num_chunks * chunk_size - batch

  def split(a):  # (B, ...) -> (num_chunks, chunk_size, ...), strided assignment
    a = jnp.concatenate([a, a[:pad]], axis=0) if pad else a
    return jnp.moveaxis(a.reshape((chunk_size, num_chunks) + a.shape[1:]), 1, 0)

  def merge(a):  # inverse of split, padding dropped
    a = jnp.moveaxis(a, 0, 1)
    return a.reshape((-1,) + a.shape[2:])[:batch]

  xs, ys, ks = split(x), split(y), split(keys)
  if chunk_loop == "unroll":
    outs = [run(xs[i], ys[i], ks[i]) for i in range(num_chunks)]
    x_adv = jnp.stack([o[0] for o in outs])
    deltas = jax.tree.map(lambda *ds: jnp.stack(ds), *[o[1] for o in outs])
  else:
    x_adv, deltas = jax.lax.map(lambda args: run(*args), (xs, ys, ks))
  return merge(x_adv), jax.tree.map(merge, deltas)


# --------------------------------------------------------------------------- SSIM


def ssim(x: Array, x_other: Array) -> Array:
  """Per-image SSIM (B,) with the paper's settings (App. F.1; `pix.ssim` defaults:
  11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, data range 1)."""
  return pix.ssim(x, x_other, max_val=1.0)


def _line_search_gamma(s: Array, gammas: np.ndarray, pinv: np.ndarray) -> Array:
  """gamma* for one example from `s[k] = SSIM(x, x_gamma_k) - t` at the 9 gammas."""
  a, b, c = pinv @ s
  lin = jnp.abs(a) < 1e-8
  disc = b * b - 4.0 * a * c
  sq = jnp.sqrt(jnp.maximum(disc, 0.0))
  safe_a = jnp.where(lin, 1.0, a)
  roots = jnp.stack([(-b - sq) / (2.0 * safe_a), (-b + sq) / (2.0 * safe_a)])
  lin_root = jnp.where(jnp.abs(b) > 1e-12, -c / jnp.where(jnp.abs(b) > 1e-12, b, 1.0),
                       jnp.nan)
  roots = jnp.where(lin, jnp.stack([lin_root, lin_root]), roots)
  slope = jnp.where(lin, b, 2.0 * a * roots + b)
  real = jnp.where(lin, jnp.isfinite(lin_root), disc >= 0.0)
  # Roots of the fit inside [0, 1] where the fitted SSIM - t crosses zero downwards.
  ok = real & (roots >= 0.0) & (roots <= 1.0) & (slope <= 0.0)
  best_root = jnp.max(jnp.where(ok, roots, -1.0))
  # No such root (the quadratic underfits): the largest grid gamma that is measured safe.
  grid_safe = jnp.max(jnp.where(s >= 0.0, gammas, 0.0))
  return jnp.where(best_root >= 0.0, best_root, grid_safe)


def _line_search_pinv() -> np.ndarray:
  gammas = np.linspace(0.0, 1.0, LINE_SEARCH_GAMMAS)
  vander = np.stack([gammas ** 2, gammas, np.ones_like(gammas)], axis=1)
  return np.linalg.pinv(vander).astype(np.float32)


def line_search_gamma(s: Array) -> Array:
  """App. F's gamma* for one example from `s[k] = SSIM(x, x_gamma_k) - s_min` (9,) at the
  9 equally spaced gammas in [0, 1] (see `ssim_line_search`)."""
  return _line_search_gamma(s, np.linspace(0.0, 1.0, LINE_SEARCH_GAMMAS), _line_search_pinv())


def _refine_safe(x, x_adv, gamma, s, gammas, threshold, num: int = 8):
  """The largest measured-safe gamma among `num` points from gamma* down to the largest
  measured-safe grid gamma <= gamma* (itself safe, so the result always is)."""
  lo = jnp.max(jnp.where((s >= 0.0) & (gammas[None] <= gamma[:, None] + 1e-6),
                         gammas[None], 0.0), axis=1)
  cands = gamma[:, None] + (lo - gamma)[:, None] * jnp.linspace(0.0, 1.0, num)[None]
  cb = cands.T.reshape(num, -1, 1, 1, 1)                          # (num, B, 1, 1, 1)
  xc = (1.0 - cb) * x[None] + cb * x_adv[None]
  flat = (-1,) + x.shape[1:]
  sc = ssim(jnp.broadcast_to(x[None], xc.shape).reshape(flat), xc.reshape(flat))
  ok = sc.reshape(num, -1).T >= threshold                          # (B, num)
  return jnp.max(jnp.where(ok, cands, lo[:, None]), axis=1)


SSIM_READINGS = ("similarity", "distance")


def min_ssim(threshold, reading: str = "similarity"):
  """The smallest SSIM(x, x_adv) the line search allows for `threshold` t read as
  `reading`: 'similarity' -> t (SSIM >= t), 'distance' -> 1 - t (1 - SSIM <= t)."""
  check_choice(reading, SSIM_READINGS, "reading")
  return threshold if reading == "similarity" else 1.0 - threshold


def check_ssim_threshold(threshold, reading: str = "similarity",
                         name: str = "threshold") -> None:
  """ValueError unless `threshold` is one real number (values when concrete) in
  [-1, 1] ('similarity', an SSIM) or [0, 2] ('distance', 1 - SSIM), and `reading` one of
  `SSIM_READINGS`."""
  check_choice(reading, SSIM_READINGS, "reading")
  lo, hi = (-1.0, 1.0) if reading == "similarity" else (0.0, 2.0)
  kind = "value" if reading == "similarity" else "distance"
  value = real_scalar(threshold, name, f"an SSIM {kind} in [{lo:g}, {hi:g}] (the paper: 0.3 "
                      f"on CIFAR-10, 0.7 on ImageNet)")
  if value is not None and not lo <= value <= hi:
    raise ValueError(f"{name}={threshold!r} must be an SSIM {kind} in [{lo:g}, {hi:g}] "
                     f"(reading={reading!r}); SSIM is not a percent.")


def ssim_line_search(x: Array, x_adv: Array, *, threshold, strict: bool = False,
                     reading: str = "similarity", return_gamma: bool = False):
  """Approximate SSIM line search (App. F): pulls too-corrupted images towards `x`.

  Where `SSIM(x, x_adv) >= s_min` the image is returned unchanged. Elsewhere, with
  `x_gamma = (1 - gamma) x + gamma x_adv` at 9 equally spaced gamma in [0, 1], a
  quadratic in gamma is fitted (least squares) to `SSIM(x, x_gamma) - s_min`, and
  the root closest to 1 is taken: the most corrupted image on the segment that the fit
  says obeys the threshold. No iteration; approximate where the quadratic underfits.

  The threshold's direction. App. F calls t "a maximum threshold on the SSIM distance"
  yet targets SSIM(x, x_gamma) = t, with t = 0.3 (CIFAR-10) and 0.7 (ImageNet).
  `reading='similarity'` (default) takes the target literally: s_min = t, SSIM >= t,
  which guards only the left tail of the paper's Figure 2 ("unlikely events").
  `reading='distance'` takes the name: 1 - SSIM <= t, i.e. s_min = 1 - t.

  Reading of "roots clipped to [0, 1], the gamma closest to 1": we take the roots that
  lie in [0, 1] where the fit crosses the threshold downwards (a root beyond 1, which
  clipping would turn into gamma = 1, i.e. no correction, is not taken); when the fit
  has no such root we use the largest of the 9 gammas whose measured SSIM is >= s_min.

  `strict=False` (default) is exactly App. F. The quadratic underfits: on our
  measurements it lands up to ~0.02 below t = 0.3 (noise, contrast and pattern
  corruptions). `strict=True` (not in the paper; our earlier default) therefore
  measures SSIM at 8 points from gamma* down to the largest grid gamma below it that is
  measured safe, and keeps the largest safe one: every output obeys the threshold,
  within 1/64 in gamma of the fit's answer.

  Args:
    x: (B, H, W, C) clean images in [0, 1].
    x_adv: (B, H, W, C) corrupted images in [0, 1].
    threshold: t (0.3 on CIFAR-10, 0.7 on ImageNet in the paper); an SSIM in [-1, 1]
      ('similarity') or an SSIM distance in [0, 2] ('distance').
    strict: refine gamma* so that SSIM >= s_min holds exactly (not in the paper).
    reading: 'similarity' (SSIM >= t) or 'distance' (1 - SSIM <= t).
    return_gamma: also return gamma* (B,) (1 where the image was already safe).

  Returns:
    (B, H, W, C) images (and gamma (B,) with `return_gamma`).
  """
  check_images(x)
  check_images(x_adv, "x_adv")
  check_same_shape(x, x_adv, ("x", "x_adv"))
  check_ssim_threshold(threshold, reading)
  threshold = min_ssim(threshold, reading)

  gammas = np.linspace(0.0, 1.0, LINE_SEARCH_GAMMAS)
  pinv = _line_search_pinv()
  g = jnp.asarray(gammas, jnp.float32).reshape(-1, 1, 1, 1, 1)
  x_gamma = (1.0 - g) * x[None] + g * x_adv[None]               # (9, B, H, W, C)
  flat = (-1,) + x.shape[1:]
  s = ssim(jnp.broadcast_to(x[None], x_gamma.shape).reshape(flat), x_gamma.reshape(flat))
  s = s.reshape(LINE_SEARCH_GAMMAS, -1).T - threshold           # (B, 9)
  gamma = jax.vmap(lambda si: _line_search_gamma(si, gammas, pinv))(s)
  safe = s[:, -1] >= 0.0
  gamma = jnp.clip(gamma, 0.0, 1.0)
  if strict:
    gamma = _refine_safe(x, x_adv, gamma, s, gammas, threshold)
  gamma = jnp.where(safe, 1.0, gamma)
  gb = gamma.reshape(-1, 1, 1, 1)
  out = jnp.where(safe.reshape(-1, 1, 1, 1), x_adv, (1.0 - gb) * x + gb * x_adv)
  return (out, gamma) if return_gamma else out
