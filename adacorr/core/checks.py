"""Input checks shared by every layer: one clear `ValueError` naming the argument.

Every check works under `jax.jit`: checks on SHAPES and DTYPES always run (they are
static), checks on VALUES (ranges, NaN, labels < K) run only when the value is concrete
(`adacorr.core.tree.is_concrete`); traced values pass unchecked. Checks return None
unless said otherwise.

Conventions checked: images NHWC floating point in [0, 1]; labels int (B,) in [0, K);
keys one PRNG key or one per example; step counts Python ints; norms 'linf' / 'l2';
radii numbers or text such as '8/255' (parsed by `adacorr.core.radius`).
"""

from __future__ import annotations

import inspect
import numbers
import os
import warnings
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.core.radius import as_radius, parse_radius
from adacorr.core.tree import is_concrete

NORMS = ("linf", "l2")

# Warnings point at the first caller outside adacorr (the user's line).
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

__all__ = [
    "NORMS", "as_radius", "check_bool", "check_callable_or_none", "check_choice",
    "check_finite", "check_fraction", "check_images", "check_key", "check_labels",
    "check_logits_fn", "check_nonnegative", "check_norm", "check_positive",
    "check_radius_for_evaluation", "check_same_shape", "check_steps", "check_unit_interval",
    "is_number", "logits_fn_failure", "nonfinite_summary", "parse_radius", "warn_if_255_scale",
    "warn_if_l2_allows_every_image", "warn_if_probabilities",
]


def caller_stacklevel() -> int:
  """The `stacklevel` of the first frame outside adacorr and jax, for a `warnings.warn`
  made by the function that calls this one (the warning then points at the user's line,
  also when the check runs while `jax.jit` traces the user's function)."""
  skip = (os.path.dirname(os.path.abspath(jax.__file__)) + os.sep, _PACKAGE_DIR)
  frame, level = inspect.currentframe().f_back, 1
  while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(skip):
    frame, level = frame.f_back, level + 1
  return level


def _user_stacklevel() -> int:
  """The `stacklevel` of the first frame outside adacorr, for a `warnings.warn` made by
  the function that calls this one."""
  frame, level = inspect.currentframe().f_back, 1
  while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
      _PACKAGE_DIR):
    frame, level = frame.f_back, level + 1
  return level


def _values(value) -> np.ndarray | None:
  """`value` as a numpy array, or None when it is traced (no values to check)."""
  return np.asarray(value) if is_concrete(value) else None


def _number_values(value, name: str, what: str) -> np.ndarray | None:
  """`value` as a real numpy array, None when traced; ValueError for text, bools and
  other non-numbers (numpy's own error for them names neither the argument nor the fix)."""
  if isinstance(value, (str, bytes)):
    raise ValueError(f"{name}={value!r} must be {what}, not a string.")
  if isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name}={value!r} is a bool; it must be {what}.")
  if not is_concrete(value):
    dtype = jnp.result_type(value)
    if not jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.complexfloating):
      raise ValueError(f"{name} must be {what}, got a traced value of dtype {dtype}.")
    return None
  try:
    v = np.asarray(value)
  except Exception as e:  # pylint: disable=broad-except  (ragged lists and the like)
    raise ValueError(f"{name}={value!r} must be {what}.") from e
  if v.dtype == bool or not (np.issubdtype(v.dtype, np.integer)
                             or np.issubdtype(v.dtype, np.floating)):
    raise ValueError(f"{name}={value!r} must be {what}, got dtype {v.dtype}.")
  return v


# --------------------------------------------------------------------------- choices


def check_bool(value, name: str) -> None:
  """ValueError unless `value` is a Python (or numpy) bool: a flag given as 'no' or 0
  would otherwise be read by its truth value."""
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name}={value!r} must be a bool (True or False).")


def check_callable_or_none(value, name: str, what: str = "a function") -> None:
  """ValueError unless `value` is None or callable (checked up front, not after the work
  that would call it)."""
  if value is not None and not callable(value):
    raise ValueError(f"{name}={value!r} must be None or {what}, not {type(value).__name__}.")


def check_choice(value, choices: Sequence, name: str) -> None:
  """ValueError unless `value` is one of `choices`."""
  if isinstance(value, (list, dict, set)) or value not in tuple(choices):
    raise ValueError(f"{name}={value!r} is not one of {tuple(choices)}.")


def check_norm(norm, name: str = "norm", norms: Sequence[str] = NORMS) -> None:
  """ValueError unless `norm` is one of `norms` ('linf', 'l2')."""
  if isinstance(norm, (list, dict, set)) or norm not in tuple(norms):
    raise ValueError(f"{name}={norm!r} is not a supported norm; use one of {tuple(norms)}.")


# --------------------------------------------------------------------------- numbers


def check_nonnegative(value, name: str, *, finite: bool = False) -> None:
  """ValueError for None, or (when concrete) a negative or NaN entry of `value` (with
  `finite=True`, an infinite entry too)."""
  if value is None:
    raise ValueError(f"{name} is required (a non-negative number).")
  v = _number_values(value, name, "a non-negative number")
  if v is not None and not np.all(v >= 0):  # NaN fails `>= 0`
    raise ValueError(f"{name}={value!r} must be non-negative (and not NaN).")
  if finite and v is not None and not np.all(np.isfinite(v)):
    raise ValueError(f"{name}={value!r} must be finite (not inf).")


def check_positive(value, name: str) -> None:
  """ValueError for None, or (when concrete) an entry of `value` <= 0 or NaN."""
  if value is None:
    raise ValueError(f"{name} is required (a positive number).")
  v = _number_values(value, name, "a positive number")
  if v is not None and not np.all(v > 0):
    raise ValueError(f"{name}={value!r} must be > 0 (and not NaN).")


def check_fraction(value, name: str = "fraction") -> None:
  """ValueError unless (when concrete) every entry of `value` is in [0, 1] (NaN fails)."""
  if value is None:
    raise ValueError(f"{name} is required (a number in [0, 1]).")
  v = _number_values(value, name, "a number in [0, 1]")
  if v is not None and not np.all((v >= 0) & (v <= 1)):
    raise ValueError(f"{name} must be in [0, 1] (a fraction, not a percent), got "
                     f"{name}={value!r}.")


def check_steps(num_steps, name: str = "num_steps", minimum: int = 0) -> None:
  """ValueError unless `num_steps` is a Python (or numpy) int >= `minimum` (not a bool)."""
  if (isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer))
      or num_steps < minimum):
    kind = "non-negative" if minimum == 0 else f">= {minimum}"
    raise ValueError(f"{name}={num_steps!r} must be a {kind} Python int.")


def warn_if_255_scale(eps, name: str = "eps", *, norm: str = "linf") -> None:
  """`warnings.warn` when a concrete l_inf radius looks like a 0-255 value (> 1).

  Images live in [0, 1], so an l_inf radius above 1 allows every image: eps=8 was
  almost certainly meant as 8/255. (l2 radii above 1 are common, so l2 is not checked.)
  """
  if norm != "linf" or eps is None:
    return
  v = _values(eps)
  if v is not None and v.size and np.nanmax(v) > 1.0:
    warnings.warn(
        f"{name}={eps!r} is larger than 1 for an l_inf ball around images in [0, 1], "
        f"so it allows every image; pixel values here are in [0, 1], not 0-255 (did you "
        f"mean {name}={float(np.nanmax(v)):g}/255?).", UserWarning,
        stacklevel=_user_stacklevel())


def warn_if_l2_allows_every_image(eps, norm: str, image_shape: Sequence[int],
                                  name: str = "eps", *,
                                  consequence: str = "so the attack is unconstrained") -> None:
  """`warnings.warn` when a concrete l2 radius is >= sqrt(D) (D = H * W * C, the largest
  l2 distance between two images in [0, 1]^D): that ball allows every image. Traced
  radii, l_inf and an unknown `image_shape` (None) pass silently.

  Args:
    eps: the radius (a number, or per-example radii: the largest is checked).
    norm: the norm ('l2' is checked).
    image_shape: (N, H, W, C) or (H, W, C).
    name: the argument's name (unused in the text, shared with the evaluators').
    consequence: what follows for the caller, ending the message.
  """
  del name  # one text for every entry point: shown once per line by the warnings filter
  if norm != "l2" or image_shape is None or eps is None or isinstance(eps, (str, bytes)):
    return
  v = _values(eps)
  if v is None or not v.size or not np.issubdtype(v.dtype, np.number):
    return
  value = float(np.nanmax(v))
  dims = tuple(image_shape)[-3:]
  size = int(np.prod(dims))
  if size and value >= np.sqrt(size):
    warnings.warn(  # the same text from every check of one radius: shown once
        f"the l2 radius {value:g} is at least sqrt(D) = {np.sqrt(size):.4g} (D = {size} "
        f"values per image of shape {dims}), the largest l2 distance between two images "
        f"in [0, 1]: this l2 ball allows every image, {consequence}.",
        UserWarning, stacklevel=_user_stacklevel())


def check_radius_for_evaluation(eps, norm: str, name: str = "eps", *,
                                image_shape: Sequence[int] | None = None) -> float:
  """`eps` as a Python float; ValueError unless it is a usable radius for EVALUATING
  robustness (robust accuracy, AutoAttack, `evaluation.lp_robustness`).

  Stricter than the attacks' own check (`attacks.lp.check_radius`: eps >= 0, a warning
  above 1 for l_inf), since a report row from a wrong radius looks plausible:
  - `eps` must be a concrete real number (a scalar, not traced: evaluation checks it in
    Python before anything is traced), finite (no NaN / inf) and > 0 (eps = 0 is clean
    accuracy, not robustness);
  - an l_inf radius must be <= 1: images are in [0, 1], so a larger one (8 for 8/255, a
    0-255 value) allows every image;
  - an l2 radius >= sqrt(D) (D = H * W * C, the largest distance between two images in
    [0, 1]^D) allows every image too: a `UserWarning` (`image_shape` given).

  Args:
    eps: the radius (Python / numpy number, a 0-d concrete array, or text such as
      '8/255' or '0.5', parsed by `core.radius.parse_radius`).
    norm: 'linf' or 'l2'.
    name: the argument's name in the messages.
    image_shape: the images' shape, (N, H, W, C) or (H, W, C) (for the l2 warning;
      None: not checked).
  """
  check_norm(norm)
  if eps is None:
    raise ValueError(f"{name} is required: the {norm} radius to evaluate (e.g. 8/255 for "
                     f"l_inf, 0.5 for l2).")
  if isinstance(eps, (str, bytes)):  # '8/255', '0.5': the forms every entry point accepts
    eps = as_radius(eps, name)
  if isinstance(eps, (bool, np.bool_)) or not (
      is_number(eps) or (is_concrete(eps) and hasattr(eps, "shape") and not jnp.shape(eps)
                         and jnp.issubdtype(jnp.result_type(eps), jnp.number))):
    what = "a traced value" if not is_concrete(eps) else f"{type(eps).__name__} {eps!r}"
    raise ValueError(f"{name} must be one concrete real number (the {norm} radius), got "
                     f"{what}; evaluation checks the radius before tracing anything.")
  value = float(np.asarray(eps))
  if not np.isfinite(value):
    raise ValueError(f"{name}={value!r} must be a finite number: a NaN or infinite radius "
                     f"gives no meaningful robust accuracy.")
  if value == 0:
    raise ValueError(f"{name}=0 evaluates clean accuracy, not robustness; pass a radius "
                     f"> 0 (e.g. 8/255 l_inf, 0.5 l2).")
  if value < 0:
    raise ValueError(f"{name}={value!r} is negative; a radius must be > 0.")
  if norm == "linf" and value > 1.0:
    raise ValueError(
        f"{name}={value:g} is larger than 1 for an l_inf ball around images in [0, 1], so "
        f"it allows every image; pixel values here are in [0, 1], not 0-255 (did you mean "
        f"{name}={value:g}/255 = {value / 255:.6g}?).")
  if norm == "l2" and image_shape is not None:
    warn_if_l2_allows_every_image(value, norm, image_shape, name,
                                  consequence="so robust accuracy is meaningless")
  return value


# --------------------------------------------------------------------------- arrays


def nonfinite_summary(value) -> str | None:
  """None when `value` is traced, not floating point, or finite; else a description of
  its NaN / inf entries, e.g. '3 NaN and 0 inf of 120 entries, in rows 0, 2'."""
  if (value is None or not is_concrete(value) or not jnp.size(value)
      or not jnp.issubdtype(jnp.result_type(value), jnp.inexact)):
    return None
  if isinstance(value, jax.Array) and bool(jnp.all(jnp.isfinite(value))):
    return None  # checked on device: no copy to the host
  v = np.asarray(value)
  bad = ~np.isfinite(v)
  if not bad.any():
    return None
  text = f"{int(np.isnan(v).sum())} NaN and {int(np.isinf(v).sum())} inf of {v.size} entries"
  if v.ndim:
    rows = np.flatnonzero(bad.reshape(v.shape[0], -1).any(axis=1))
    text += f", in rows {', '.join(map(str, rows[:5]))}{', ...' if rows.size > 5 else ''}"
  return text


def check_finite(value, name: str) -> None:
  """ValueError naming `name` when (concrete) `value` has a NaN or infinite entry (the
  message counts them and names the first rows, axis 0, holding one)."""
  bad = nonfinite_summary(value)
  if bad is not None:
    raise ValueError(f"{name} contains NaN or inf values ({bad}).")


def check_unit_interval(x, name: str = "x") -> None:
  """ValueError unless `x` is floating point and (when concrete) finite and in [0, 1].

  Integer input (e.g. uint8 images in 0..255) is rejected with the fix in the message.
  """
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
        f"{name} must be floating point in [0, 1], got dtype {dtype}; convert to float32 "
        f"in [0, 1] first (e.g. {name}.astype(np.float32) / 255 for 0-255 images).")
  v = _values(x)
  if v is None or not v.size:
    return
  if not np.isfinite(v).all():
    raise ValueError(f"{name} contains NaN or inf values ({int(np.isnan(v).sum())} NaN, "
                     f"{int(np.isinf(v).sum())} inf).")
  lo, hi = v.min(), v.max()
  if lo < 0.0 or hi > 1.0:
    hint = " (0-255 images must be divided by 255)" if hi > 2.0 and lo >= 0.0 else ""
    raise ValueError(f"{name} must lie in [0, 1]; got values in [{lo:.4g}, {hi:.4g}]{hint}.")


def check_images(x, name: str = "x", *, channels: Sequence[int] | None = None,
                 allow_empty: bool = True) -> None:
  """ValueError unless `x` is a rank-4 NHWC batch, floating point, finite, in [0, 1].

  Args:
    x: the images (values checked only when concrete).
    name: the argument's name in the messages.
    channels: allowed channel counts (e.g. (1, 3)); None allows any.
    allow_empty: whether a batch of 0 images is accepted.
  """
  if x is None or not hasattr(x, "shape") or not hasattr(x, "dtype"):
    raise ValueError(f"{name} must be an array of images (B, H, W, C) (numpy or jax), got "
                     f"{type(x).__name__}; e.g. {name}=np.asarray({name}, np.float32).")
  shape = jnp.shape(x)
  if len(shape) != 4:
    raise ValueError(f"{name} must be a rank-4 NHWC batch (B, H, W, C), got shape {shape}.")
  if channels is not None and shape[-1] not in tuple(channels):
    raise ValueError(f"{name} must be NHWC with {' or '.join(map(str, channels))} "
                     f"channels, got shape {shape}.")
  if not allow_empty and shape[0] == 0:
    raise ValueError(f"{name} is an empty batch (shape {shape}); pass at least one image.")
  check_unit_interval(x, name)


def check_same_shape(a, b, names: tuple[str, str] = ("x", "x_adv")) -> None:
  """ValueError unless `a` and `b` have the same shape."""
  if jnp.shape(a) != jnp.shape(b):
    raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got "
                     f"{jnp.shape(a)} and {jnp.shape(b)}.")


def check_labels(y, batch_size: int | None = None, num_classes: int | None = None,
                 name: str = "y") -> None:
  """ValueError unless `y` is an int (B,) array with (when concrete) 0 <= y < num_classes.

  Args:
    y: the labels.
    batch_size: B, the number of images (None: not checked).
    num_classes: K, e.g. the logits' last dimension (None: only y >= 0 is checked).
    name: the argument's name in the messages.
  """
  shape = jnp.shape(y)
  if len(shape) != 1 or (batch_size is not None and shape[0] != batch_size):
    want = f"({batch_size},)" if batch_size is not None else "(B,)"
    raise ValueError(f"{name} must have shape (B,) = {want}, got {shape}.")
  dtype = jnp.result_type(y)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f"{name} must be integer class labels, got dtype {dtype}.")
  v = _values(y)
  if v is None or not v.size:
    return
  lo, hi = int(v.min()), int(v.max())
  if lo < 0 or (num_classes is not None and hi >= num_classes):
    k = "K" if num_classes is None else str(num_classes)
    raise ValueError(f"{name} must lie in [0, {k}) (the number of classes), got values "
                     f"in [{lo}, {hi}].")


def check_logits_fn(logits_fn: Callable, x, name: str = "logits_fn") -> int:
  """The number of classes K of `logits_fn(x)`; ValueError unless it returns floating
  point logits of shape (B, K).

  Runs `jax.eval_shape` (tracing only, no computation): this is where an attack first
  calls the user's model, so an exception it raises (flax's `ScopeParamShapeError` for
  NCHW images or a wrong channel count, `ScopeCollectionNotFound` for variables without
  'params', a `TypeError` for a wrong signature) is re-raised as a ValueError that names
  `name` and x's shape, chained to the original.
  """
  if not callable(logits_fn):
    raise ValueError(f"{name} must be a function x -> logits (B, K), got {type(logits_fn)}.")
  spec = jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
  try:
    out = jax.eval_shape(logits_fn, spec)
  except Exception as e:  # pylint: disable=broad-except  (any error of the user's model)
    raise ValueError(logits_fn_failure(e, spec.shape, spec.dtype, name)) from e
  shape = getattr(out, "shape", None)
  if shape is None or len(shape) != 2 or shape[0] != jnp.shape(x)[0]:
    shown = shape if shape is not None else type(out).__name__
    raise ValueError(f"{name} must return logits of shape (B, K) = ({jnp.shape(x)[0]}, K), "
                     f"got {shown}.")
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise ValueError(f"{name} must return floating point logits, got dtype {out.dtype} "
                     f"(class indices or rounded scores have no gradient: an attack on them "
                     f"would silently do nothing).")
  return int(shape[1])


def logits_fn_failure(error: BaseException, shape, dtype, name: str = "logits_fn") -> str:
  """The message for `name` raising `error` on images of `shape` / `dtype`: the original
  error, and the usual causes (layout, channel count, the variables' structure)."""
  text = f"{type(error).__name__}: {error}"
  if isinstance(error, (jax.errors.ConcretizationTypeError,
                        jax.errors.TracerArrayConversionError,
                        jax.errors.TracerBoolConversionError,
                        jax.errors.TracerIntegerConversionError)):
    hint = (f"{name} must be a JAX function (traceable by jax.jit / jax.grad): no numpy "
            f"conversions or Python branches on the image values")
  elif isinstance(error, TypeError) and ("positional argument" in str(error)
                                         or "keyword argument" in str(error)):
    hint = (f"{name} is called as {name}(x) with x the images alone (B, H, W, C); bind the "
            f"variables first, e.g. lambda x: model.apply(variables, x)")
  else:
    hint = (f"is x NHWC (B, H, W, C) with the model's channel count, and are the variables "
            f"{{'params': ...}} (model.apply(variables, x), not model.apply(params, x))?")
  return f"{name} failed on x of shape {tuple(shape)} ({dtype}): {text}; {hint}"


def check_key(key, name: str = "key", *, reason: str = "", single: bool = False) -> None:
  """ValueError if `key` is None or not a PRNG key (typed, or raw uint32 (..., 2)).

  `reason` says why the key is needed (appended to the message for None). With
  `single`, only ONE key is accepted (typed shape (), raw (2,)): for functions that
  split it themselves (per component, then per example).
  """
  if key is None:
    why = f" ({reason})" if reason else ""
    raise ValueError(f"{name} is required{why}: pass jax.random.key(seed) or one key "
                     f"per example.")
  dtype = jnp.result_type(key)
  typed = jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
  if not typed and not (dtype == jnp.uint32 and jnp.ndim(key) >= 1
                        and jnp.shape(key)[-1] == 2):
    raise ValueError(f"{name} must be a PRNG key (jax.random.key / jax.random.PRNGKey), "
                     f"got dtype {dtype} and shape {jnp.shape(key)}.")
  if single and jnp.shape(key) != (() if typed else (2,)):
    raise ValueError(f"{name} must be ONE PRNG key (jax.random.key(seed)), got a key array of "
                     f"shape {jnp.shape(key)}; the per-example keys are derived from it.")


def is_number(value) -> bool:
  """A real Python/numpy number that is not a bool."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def warn_if_probabilities(logits, name: str = "logits", *, atol: float = 1e-3) -> bool:
  """`warnings.warn` (and True) when concrete (N, K) `logits` look like probabilities:
  every entry in [0, 1] and every row summing to 1 within `atol` (softmax applied twice
  gives a silently wrong, flattened answer). Traced, empty or non-float input: False.

  Args:
    logits: the scores a function expects to be logits.
    name: the argument's name in the message.
    atol: the tolerance on the row sums.
  """
  if logits is None or not is_concrete(logits) or jnp.ndim(logits) != 2 or not jnp.size(logits):
    return False
  if not jnp.issubdtype(jnp.result_type(logits), jnp.floating) or jnp.shape(logits)[1] < 2:
    return False
  v = np.asarray(logits, np.float64)
  if not np.isfinite(v).all() or v.min() < 0.0 or v.max() > 1.0:
    return False
  if not np.allclose(v.sum(axis=1), 1.0, rtol=0.0, atol=atol):
    return False
  warnings.warn(
      f"{name} look like probabilities, not logits: every row of the {v.shape} array lies "
      f"in [0, 1] and sums to 1 (within {atol:g}); this function applies the softmax "
      f"itself, so pass the logits (the model's output before softmax).", UserWarning,
      stacklevel=_user_stacklevel())
  return True
