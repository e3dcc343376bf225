"""From an experiment config to a training method: the one place where
`config.method` and `config.method_kwargs` become a factory call.

`make_method(model, config)` looks up `config.method` in `adacorr.methods.FACTORIES`,
resolves the keywords that name things on disk into objects (AdA's backbone specs into
`Backbone`s, PAT's `lpips_model` workdir into an LPIPS `features_fn`), checks every
remaining key against the factory's signature (a misspelt key is an error, for every
method) and calls the factory. `train_and_evaluate(config, workdir)` trains with it.
"""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import os
from typing import Any, Callable, Sequence

import ml_collections

from adacorr import data as data_lib
from adacorr import methods
from adacorr.core.types import LossFn, StatefulLoss
from adacorr.perceptual import lpips_layers as check_lpips_layers
from adacorr.perceptual.features import model_features_fn
from adacorr.run.classifiers import load_classifier
from adacorr.run.corruption_nets import load_backbone, read_config
from adacorr.train import loop


def load_lpips_network(workdir: str, layers: Sequence[str] | str | None = None):
  """`features_fn` of a trained classifier's LPIPS layers, from its training workdir."""
  net, variables, _, _ = load_classifier(workdir)
  return model_features_fn(net, variables, check_lpips_layers(net, layers))


def _resolve_ada(kwargs: dict[str, Any], config: ml_collections.ConfigDict) -> dict[str, Any]:
  """AdA: backbone spec dicts -> `Backbone`s (random inits seeded by `config.seed + i`)."""
  info = data_lib.DATASETS.get(config.get("dataset"))
  image_shape = info.image_shape if info is not None else None
  seed = int(config.get("seed", 0))
  resolved = []
  for i, spec in enumerate(kwargs.get("backbones", ())):
    if not isinstance(spec, methods.Backbone):
      spec = load_backbone(spec, image_shape=image_shape, seed=seed + i)
      logging.info("AdA backbone %d: %s", i, spec.name)
    resolved.append(spec)
  return dict(kwargs, backbones=tuple(resolved))


def _resolve_pat(kwargs: dict[str, Any], config: ml_collections.ConfigDict) -> dict[str, Any]:
  """PAT: `lpips_model` ('self' or a classifier's workdir) -> `features_fn`."""
  del config
  kwargs = dict(kwargs)
  lpips_model = kwargs.pop("lpips_model", "self")
  if lpips_model != "self" and kwargs.get("features_fn") is None:
    if not isinstance(lpips_model, str) or not lpips_model:
      raise ValueError(f"method_kwargs.lpips_model={lpips_model!r} must be 'self' or the "
                       "workdir of a trained LPIPS network.")
    kwargs["features_fn"] = load_lpips_network(lpips_model, kwargs.get("lpips_layers"))
  return kwargs


# Per method: keywords that name things on disk, turned into objects before the call.
RESOLVERS: dict[str, Callable[[dict, ml_collections.ConfigDict], dict]] = {
    "ada": _resolve_ada,
    "pat": _resolve_pat,
}


def method_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`config.method_kwargs` as a plain dict ({} if absent)."""
  kwargs = config.get("method_kwargs", None)
  if kwargs is None:
    return {}
  return dict(kwargs.to_dict() if hasattr(kwargs, "to_dict") else kwargs)


def accepted_keywords(factory: Callable) -> tuple[str, ...]:
  """The keyword arguments of a method factory (everything after `model`)."""
  params = list(inspect.signature(factory).parameters.values())[1:]
  return tuple(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


# Per method: keywords its resolver consumes that the factory itself does not take.
RESOLVER_KEYWORDS: dict[str, tuple[str, ...]] = {"pat": ("lpips_model",)}


def check_method_kwargs(config: ml_collections.ConfigDict) -> tuple[str, dict[str, Any]]:
  """`(config.method, config.method_kwargs as a dict)`, checked: the method is a key of
  `adacorr.methods.FACTORIES`, and every method_kwargs key is a keyword of its factory (or
  of its resolver, `RESOLVER_KEYWORDS`). Reads nothing from disk.

  Raises:
    ValueError: for an unknown method, or a method_kwargs key the factory does not take
      (naming the key, the closest accepted one and the accepted ones).
  """
  name = config.get("method", "nominal")
  if name not in methods.FACTORIES:
    matches = difflib.get_close_matches(str(name), list(methods.FACTORIES), n=1)
    hint = f"; did you mean {matches[0]!r}?" if matches else ""
    raise ValueError(f"config.method={name!r} is not one of {sorted(methods.FACTORIES)}{hint}")
  kwargs = method_kwargs(config)
  accepted = sorted(set(accepted_keywords(methods.FACTORIES[name]))
                    | set(RESOLVER_KEYWORDS.get(name, ())))
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    hints = "".join(
        f" {k!r}: did you mean {m[0]!r}?"
        for k in unknown for m in [difflib.get_close_matches(k, accepted, n=1)] if m)
    raise ValueError(
        f"config.method_kwargs has keys {unknown} that method {name!r} does not take;"
        f"{hints} it accepts {accepted}.")
  return name, kwargs


def make_method(model, config: ml_collections.ConfigDict) -> LossFn | StatefulLoss:
  """The training method of `config.method` with `config.method_kwargs`.

  Raises:
    ValueError: for an unknown method, or a method_kwargs key the factory does not take
      (naming the key and the accepted ones; `check_method_kwargs`).
  """
  name, kwargs = check_method_kwargs(config)
  if name in RESOLVERS:
    kwargs = RESOLVERS[name](kwargs, config)
  return methods.FACTORIES[name](model, **kwargs)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       hooks: Sequence[loop.Hook] = ()) -> dict[str, Any]:
  """Trains `config.method` on `config` in `workdir` (`adacorr.train.loop.train_and_evaluate`
  with the method built by `make_method`); returns the summary."""
  return loop.train_and_evaluate(config, workdir, make_loss_fn=make_method, hooks=hooks)


def finished_summary(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  """The summary of a finished run of `config` in `workdir`, or None: `summary.json`
  exists and `config.json` matches `config` (ignoring `loop.BOOKKEEPING_FIELDS`)."""
  path = os.path.join(workdir, "summary.json")
  previous = read_config(workdir)
  if previous is None or not os.path.exists(path):
    return None
  current = json.loads(config.to_json_best_effort())
  if loop.config_differences(json.loads(previous.to_json_best_effort()), current):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def ensure_trained(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict[str, Any], bool]:
  """Train or reuse: `(summary, reused)` of the finished run of `config` in `workdir`.

  Reuses a finished run of the same config (`finished_summary`); otherwise trains,
  resuming an interrupted run of it (`train_and_evaluate`).
  """
  summary = finished_summary(config, workdir)
  if summary is not None:
    return summary, True
  return train_and_evaluate(config, workdir), False
