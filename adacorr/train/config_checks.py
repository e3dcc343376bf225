"""Checks of training configs, before any data is read or anything is compiled.

Two kinds, both raising `ValueError` with a message that names the key, the value given
and what is expected:

* Keys against a schema (`check_known_keys`, `override_error`): every key of a config
  must be a key of the schema config (the experiment defaults), with a "did you mean"
  from `difflib`; the schema's `free_form` sub-dicts (e.g. `method_kwargs`, whose keys are
  a method's keywords) may hold any keys and are checked by their consumer instead.
* Values the engine reads (`check_training_values`: batch, steps, epochs, learning rate,
  schedule, ...; `check_classifier_config`: those plus the classifier's dataset, model,
  model_kwargs, method, augmentation, optimizer and evaluation fields). A field absent
  from the config is not checked (the engine reads it with a default).

`adacorr.train.loop.train_and_evaluate` runs `check_classifier_config` and
`adacorr.train.corruption_nets.validate_config` runs `check_training_values`, so a bad
value fails before training, not after an epoch or inside a traced function.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from typing import Any, Collection, Iterable, Mapping

# The model attributes the loop sets itself (from the dataset and config.compute_dtype).
LOOP_MODEL_ATTRIBUTES = ("num_classes", "mean", "std", "dtype")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
WEIGHT_DECAY_ON = ("all", "kernels")


# --- keys --------------------------------------------------------------------------------

def _is_mapping(value: Any) -> bool:
  """A dict or a ConfigDict (anything with `keys()` and item access)."""
  return isinstance(value, Mapping) or (hasattr(value, "keys") and hasattr(value, "__getitem__"))


def did_you_mean(key: str, known: Iterable[str]) -> str:
  """'; did you mean 'x'?' for the closest of `known` to `key` (difflib), or ''."""
  matches = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
  return f"; did you mean {matches[0]!r}?" if matches else ""


def unknown_key_message(key: str, known: Collection[str], where: str = "config") -> str:
  """"config key 'learnng_rate' is not a known key; did you mean 'learning_rate'? (known:
  ...)" for `key` of the dict `where`."""
  return (f"{where} key {key!r} is not a known key{did_you_mean(key, known)} "
          f"(known: {', '.join(sorted(known)) or 'none'}).")


def unknown_keys(config: Any, schema: Any, *, free_form: Collection[str] = (),
                 where: str = "config") -> list[str]:
  """One message per key of `config` that `schema` lacks (`unknown_key_message`), keys of
  sub-dicts included (named 'config.a.b'), except inside the `free_form` keys of `schema`
  (top-level names, e.g. 'method_kwargs'). A key whose schema value is a dict but whose
  config value is not is reported too."""
  messages = []
  known = list(schema.keys())
  for key in config.keys():
    if key not in schema:
      messages.append(unknown_key_message(key, known, where))
      continue
    if key in free_form or not _is_mapping(schema[key]):
      continue
    value = config[key]
    if not _is_mapping(value):
      messages.append(f"{where}.{key}={value!r} must be a dict (ConfigDict) with keys from "
                      f"{sorted(schema[key].keys())}.")
      continue
    messages += unknown_keys(value, schema[key], where=f"{where}.{key}")
  return messages


def check_known_keys(config: Any, schema: Any, *, free_form: Collection[str] = (),
                     where: str = "config", hint: str = "") -> None:
  """Raises ValueError if `config` has a key `schema` lacks (see `unknown_keys`); the
  message lists every such key, with `hint` appended."""
  messages = unknown_keys(config, schema, free_form=free_form, where=where)
  if messages:
    raise ValueError(" ".join(messages) + (f" {hint}" if hint else ""))


def override_error(config: Any, path: str, *, free_form: Collection[str] = (),
                   flag: str = "config") -> str | None:
  """Why the command-line override `--{flag}.{path}=...` names no key of `config` (a
  message with a "did you mean"), or None if every component of `path` exists.

  Keys of a `free_form` dict can be overridden but not added on the command line (the
  message says so: add them in the config file)."""
  node, where = config, flag
  for part in path.split("."):
    if not _is_mapping(node):
      return f"--{flag}.{path}: {where} is not a dict (it is {node!r}); it has no key {part!r}."
    if part not in node:
      known = list(node.keys())
      top = where.split(".")[1] if where.count(".") >= 1 else None
      if top not in free_form:
        return f"--{flag}.{path}: " + unknown_key_message(part, known, where)
      return (f"--{flag}.{path}: {where} has no key {part!r}{did_you_mean(part, known)} "
              f"(it has: {', '.join(sorted(known)) or 'none'}). The command line can only "
              f"override keys that the config file sets; add {part!r} to {where} in the "
              "config file.")
    node, where = node[part], f"{where}.{part}"
  return None


# --- values ------------------------------------------------------------------------------

def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bad(key: str, value: Any, expected: str, where: str = "config") -> ValueError:
  return ValueError(f"{where}.{key}={value!r} must be {expected}.")


def check_int(config: Any, key: str, *, minimum: int | None = None, where: str = "config",
              expected: str | None = None) -> None:
  """`config[key]`, if present, is an int (not a bool) and >= `minimum`."""
  if key not in config:
    return
  value = config[key]
  if not _is_int(value) or (minimum is not None and value < minimum):
    raise _bad(key, value, expected or ("an int" + (f" >= {minimum}" if minimum is not None
                                                      else "")), where)


def check_real(config: Any, key: str, *, minimum: float | None = None,
               positive: bool = False, below: float | None = None, where: str = "config",
               expected: str | None = None) -> None:
  """`config[key]`, if present, is a finite real number (not a bool), > 0 if `positive`,
  >= `minimum`, < `below`."""
  if key not in config:
    return
  value = config[key]
  ok = _is_real(value) and math.isfinite(value)
  ok = ok and not (positive and not value > 0)
  ok = ok and not (minimum is not None and value < minimum)
  ok = ok and not (below is not None and not value < below)
  if not ok:
    bounds = [s for s, on in (("> 0", positive), (f">= {minimum}", minimum is not None),
                               (f"< {below}", below is not None)) if on]
    raise _bad(key, value, expected or ("a finite number" + (f" {' and '.join(bounds)}"
                                                            if bounds else "")), where)


def check_choice(config: Any, key: str, choices: Collection[Any], *,
                 where: str = "config") -> None:
  """`config[key]`, if present, is one of `choices` (with a "did you mean")."""
  if key not in config:
    return
  value = config[key]
  try:
    known = value in choices
  except TypeError:  # unhashable
    known = False
  if not known:
    hint = did_you_mean(value, choices) if isinstance(value, str) else ""
    raise ValueError(f"{where}.{key}={value!r} is not one of {sorted(choices)}{hint}.")


def check_bool(config: Any, key: str, *, where: str = "config") -> None:
  """`config[key]`, if present, is True or False."""
  if key in config and not isinstance(config[key], bool):
    raise _bad(key, config[key], "True or False", where)


def check_training_values(config: Any, *, where: str = "config") -> None:
  """The fields every run of the engine's loop reads (`loop.run`, `optim.make_schedule`).

  Checked: global_batch_size (int >= 1); num_steps (int, >= 1, or -1: train for
  num_epochs); num_epochs (finite > 0, when num_steps is -1); learning_rate (finite > 0);
  scale_learning_rate (bool); warmup_epochs (finite >= 0); schedule (one of
  `optim.SCHEDULES`); for the piecewise schedule, piecewise_boundaries (fractions in
  [0, 1], non-decreasing) and piecewise_factor (finite >= 0); seed (int);
  keep_checkpoints (int >= 1); prefetch (int >= 0); log_every_steps,
  checkpoint_every_steps, eval_every_steps, eval_batch_size (ints).

  Raises:
    ValueError: naming the field, its value and what is expected.
  """
  from adacorr.train import optim  # pylint: disable=import-outside-toplevel
  check_int(config, "global_batch_size", minimum=1, where=where)
  if "num_steps" in config:
    steps = config["num_steps"]
    if not _is_int(steps) or not (steps >= 1 or steps == -1):
      raise _bad("num_steps", steps, f"an int >= 1, or -1 to train for {where}.num_epochs",
                 where)
  if config.get("num_steps", -1) == -1:
    check_real(config, "num_epochs", positive=True, where=where,
               expected="a finite number of epochs > 0 (or set num_steps >= 1)")
  check_real(config, "learning_rate", positive=True, where=where)
  check_bool(config, "scale_learning_rate", where=where)
  check_real(config, "warmup_epochs", minimum=0, where=where)
  check_choice(config, "schedule", optim.SCHEDULES, where=where)
  if config.get("schedule") == "piecewise":
    if "piecewise_boundaries" in config:
      bounds = config["piecewise_boundaries"]
      fractions = list(bounds) if isinstance(bounds, (list, tuple)) else None
      if (fractions is None or not all(_is_real(f) and 0 <= f <= 1 for f in fractions)
          or fractions != sorted(fractions)):
        raise _bad("piecewise_boundaries", bounds,
                   "a non-decreasing sequence of fractions of training in [0, 1]", where)
    check_real(config, "piecewise_factor", minimum=0, where=where)
  check_int(config, "seed", where=where)
  check_int(config, "keep_checkpoints", minimum=1, where=where)
  check_int(config, "prefetch", minimum=0, where=where)
  for key in ("log_every_steps", "checkpoint_every_steps", "eval_every_steps",
              "eval_batch_size"):
    check_int(config, key, where=where)


def check_kwargs(kwargs: Any, cls: type, *, key: str, owner: str, reserved: Collection[str] = (),
                 where: str = "config") -> None:
  """The keys of `kwargs` (a dict of constructor keywords, `config.<key>`) are init fields
  of the dataclass `cls` (a Flax module) other than `reserved` (set by the caller)."""
  if not dataclasses.is_dataclass(cls):
    return
  accepted = sorted(f.name for f in dataclasses.fields(cls)
                    if f.init and f.name not in ("parent", "name", *reserved))
  for name in kwargs.keys():
    if name in reserved:
      raise ValueError(f"{where}.{key}.{name} is set by the training loop (from the dataset "
                       f"or config.compute_dtype), not by {where}.{key}; {owner} takes "
                       f"{accepted}.")
    if name not in accepted:
      raise ValueError(f"{where}.{key} key {name!r} is not an attribute of {owner}"
                       f"{did_you_mean(name, accepted)} (known: {', '.join(accepted)}).")


def check_augment(config: Any, *, where: str = "config") -> None:
  """`config.augment`, if present, names an augmentation of
  `adacorr.data.augment.get_augment` that takes the keywords `config.augment_kwargs`."""
  from adacorr.data import augment as augment_lib  # pylint: disable=import-outside-toplevel
  if "augment" not in config:
    return
  kwargs = config.get("augment_kwargs") or {}
  if not _is_mapping(kwargs):
    raise _bad("augment_kwargs", kwargs, "a dict of the augmentation's keywords", where)
  try:
    augment_lib.get_augment(config["augment"], **dict(kwargs))
  except ValueError as e:
    raise ValueError(f"{where}.augment={config['augment']!r} with {where}.augment_kwargs="
                     f"{dict(kwargs)}: {e}") from e


def check_classifier_config(config: Any, *, where: str = "config") -> None:
  """The fields `loop.train_and_evaluate` reads: `check_training_values`, and

  dataset (a key of `adacorr.data.DATASETS` with a training split); model (a key of
  `adacorr.models.MODELS`) and model_kwargs (its attributes, less those the loop sets:
  `LOOP_MODEL_ATTRIBUTES`); compute_dtype (`COMPUTE_DTYPES`); method (a key of
  `adacorr.methods.FACTORIES`; its method_kwargs are checked by the run layer,
  `adacorr.run.methods.check_method_kwargs`); augment and augment_kwargs (an augmentation
  of `adacorr.data.augment.get_augment` and its keywords); momentum (finite, in [0, 1));
  nesterov (bool); weight_decay (finite >= 0); weight_decay_on (`WEIGHT_DECAY_ON`);
  clip_grad_value (finite >= 0); eval_center_crop (int in [0, the image size]);
  deepaugment_dirs (a sequence of directory names).

  Raises:
    ValueError: naming the field, its value and what is expected.
  """
  # pylint: disable=import-outside-toplevel
  from adacorr import data as data_lib
  from adacorr import methods
  from adacorr import models
  check_training_values(config, where=where)
  info = None
  if "dataset" in config:
    check_choice(config, "dataset", data_lib.DATASETS, where=where)
    info = data_lib.DATASETS[config["dataset"]]
    if info.train_split is None:
      trainable = sorted(k for k, v in data_lib.DATASETS.items() if v.train_split)
      raise ValueError(f"{where}.dataset={config['dataset']!r} has no training split (a "
                       f"test set only); train on one of {trainable}.")
  if "model" in config:
    check_choice(config, "model", models.MODELS, where=where)
    kwargs = config.get("model_kwargs") or {}
    if not _is_mapping(kwargs):
      raise _bad("model_kwargs", kwargs, "a dict of the model's attributes", where)
    check_kwargs(kwargs, models.MODELS[config["model"]], key="model_kwargs",
                 owner=f"model {config['model']!r}", reserved=LOOP_MODEL_ATTRIBUTES,
                 where=where)
  check_choice(config, "compute_dtype", COMPUTE_DTYPES, where=where)
  check_choice(config, "method", methods.FACTORIES, where=where)
  check_augment(config, where=where)
  check_real(config, "momentum", minimum=0, below=1, where=where)
  check_bool(config, "nesterov", where=where)
  check_real(config, "weight_decay", minimum=0, where=where)
  check_choice(config, "weight_decay_on", WEIGHT_DECAY_ON, where=where)
  if "clip_grad_value" in config and config["clip_grad_value"] is not None:
    check_real(config, "clip_grad_value", minimum=0, where=where)
  if "eval_center_crop" in config:
    size = min(info.image_shape[:2]) if info is not None else None
    crop = config["eval_center_crop"]
    if not _is_int(crop) or crop < 0 or (size is not None and crop > size):
      raise _bad("eval_center_crop", crop,
                 f"an int in [0, {size if size is not None else 'the image size'}] "
                 "(0: no crop)", where)
  dirs = config.get("deepaugment_dirs", ())
  if isinstance(dirs, str) or not isinstance(dirs, (list, tuple)) or not all(
      isinstance(d, str) and d for d in dirs):
    raise _bad("deepaugment_dirs", dirs, "a tuple of directory names (() for none)", where)
