"""Corruption nets from run directories: load a pretrained one, pretrain it on first use,
and build AdA backbones from their config specs.

`pretrain` itself is the engine's (`adacorr.train.corruption_nets.pretrain`); this
module reads what it wrote.

Typical use (the AdA quickstart)::

  net, variables = ensure_pretrained(config, workdir)   # trains once, then reuses
  images = net.apply(variables, x, train=False)
"""

from __future__ import annotations

import difflib
import json
import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from adacorr import data as data_lib
from adacorr.attacks import adversarial_augment as ada_attack
from adacorr.core.checks import check_steps
from adacorr.methods.ada import Backbone, backbone_from_net
from adacorr.models import corruption
from adacorr.models.corruption import convert_torch
from adacorr.train import corruption_nets as pretraining
from adacorr.train.checkpoint import latest_checkpoint_step
from adacorr.train.loop import config_differences

CLI = "python -m experiments.train_corruption_net"
CONFIG_DIR = "experiments/configs/corruption_nets"


def read_config(workdir: str) -> ml_collections.ConfigDict | None:
  """`workdir/config.json` as a ConfigDict, or None if there is none."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def _checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def _create_command(workdir: str, config_name: str | None = None) -> str:
  config = f"{CONFIG_DIR}/{config_name or '<config>'}.py"
  return f"{CLI} --config={config} --workdir={workdir}"


def load_corruption_net(workdir: str, step: int | None = None
                        ) -> tuple[nn.Module, dict[str, Any]]:
  """The net and its variables (`{'params', **state collections}`) of a pretraining run.

  Rebuilds the net from `workdir/config.json` and restores checkpoint `step` (default:
  the latest) onto the first local device.

  Raises:
    FileNotFoundError: if `workdir` holds no config or no complete checkpoint.
  """
  config = read_config(workdir)
  checkpoints = _checkpoint_dir(workdir)
  if config is None or latest_checkpoint_step(checkpoints) is None:
    what = "no config.json" if config is None else "no complete checkpoint"
    name = config.get("name") if config is not None else None
    raise FileNotFoundError(
        f"No pretrained corruption net in {os.path.abspath(workdir)} ({what}). Create it "
        f"with:\n  {_create_command(workdir, name)}\n(configs: {CONFIG_DIR}/*.py), or call "
        "adacorr.run.corruption_nets.ensure_pretrained(config, workdir).")
  net = pretraining.build_net(config)
  info = data_lib.DATASETS[config.dataset]
  tx = pretraining.make_optimizer(config, optax.constant_schedule(0.0))
  abstract = jax.eval_shape(
      lambda: pretraining.create_pretrain_state(net, tx, jax.random.PRNGKey(0),
                                                info.image_shape))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                        abstract)
  # A manager that only reads (creates, cleans and saves nothing).
  with ocp.CheckpointManager(checkpoints, options=ocp.CheckpointManagerOptions(
      create=False, cleanup_tmp_directories=False,
      enable_async_checkpointing=False)) as manager:
    step = manager.latest_step() if step is None else step
    state = manager.restore(int(step), args=ocp.args.StandardRestore(target))
  return net, pretraining.net_variables(state)


def ensure_pretrained(config: ml_collections.ConfigDict, workdir: str
                      ) -> tuple[nn.Module, dict[str, Any]]:
  """Pretrain or reuse: `(net, variables)` of the finished run of `config` in `workdir`.

  Reuses the run if `workdir/summary.json` exists and `workdir/config.json` matches
  `config` (ignoring `adacorr.train.loop.BOOKKEEPING_FIELDS`); otherwise trains
  (resuming an interrupted run of the same config), then loads.

  Raises:
    ValueError: for a bad config, or if `workdir` holds checkpoints of a different config.
  """
  pretraining.validate_config(config)
  previous = read_config(workdir)
  if previous is not None:
    finished = latest_checkpoint_step(_checkpoint_dir(workdir)) is not None
    changed = config_differences(pretraining.config_to_dict(previous),
                                 pretraining.config_to_dict(config))
    if changed and finished:
      raise ValueError(
          f"{os.path.abspath(workdir)} holds a corruption-net run with a different config "
          f"(fields {changed} differ: "
          + ", ".join(f"{k}: {previous.get(k)!r} there vs {config.get(k)!r}" for k in changed)
          + "). Pass another workdir, or delete this one to retrain.")
    if not changed and finished and os.path.exists(os.path.join(workdir, "summary.json")):
      return load_corruption_net(workdir)
  pretraining.pretrain(config, workdir)
  return load_corruption_net(workdir)


SPEC_KEYS = ("net", "name", "net_kwargs", "workdir", "pretrain", "torch_weights", "init",
             "nu", "num_steps", "step_size")
WEIGHT_SOURCES = ("workdir", "torch_weights", "init")


def check_backbone_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
  """The spec as a dict, checked before anything is loaded or built.

  Raises:
    ValueError: for a spec that is not a mapping, a key not in `SPEC_KEYS` (a typo such
      as 'num_step' would otherwise be ignored; the closest key is suggested), a missing
      or unknown 'net', no or several weight sources (`WEIGHT_SOURCES`), init other than
      'random', net_kwargs that are not a mapping, or overrides out of range (nu not a
      finite number in (0, 1), num_steps not an int >= 0, step_size not a finite
      number >= 0).
  """
  if hasattr(spec, "to_dict"):
    spec = spec.to_dict()
  if not isinstance(spec, Mapping):
    raise ValueError(f"a backbone spec must be a dict such as {{'net': 'edsr', 'workdir': "
                     f"...}} (see load_backbone), got {type(spec).__name__} {spec!r:.80}.")
  spec = dict(spec)
  unknown = sorted(k for k in spec if k not in SPEC_KEYS)
  if unknown:
    hints = "".join(f" {k!r}: did you mean {m[0]!r}?" for k in unknown
                    for m in [difflib.get_close_matches(str(k), SPEC_KEYS, n=1)] if m)
    raise ValueError(f"backbone spec has keys {unknown} that load_backbone does not read;"
                     f"{hints} it reads {list(SPEC_KEYS)}.")
  if spec.get("net") not in corruption.CORRUPTION_NETS:
    what = "must name its 'net'" if spec.get("net") is None else (
        f"has net={spec['net']!r}, not a known corruption net;")
    raise ValueError(f"backbone spec {spec} {what} (one of "
                     f"{sorted(corruption.CORRUPTION_NETS)}).")
  sources = [k for k in WEIGHT_SOURCES if spec.get(k)]
  if len(sources) > 1:
    raise ValueError(f"backbone spec names several weight sources {sources}; give exactly "
                     f"one of 'workdir', 'torch_weights' or init='random'.")
  if spec.get("init") and spec["init"] != "random":
    raise ValueError(f"backbone spec has init={spec['init']!r}; the only init is 'random' "
                     f"(untrained weights, for tests and benchmarks).")
  if spec.get("pretrain") is not None and not spec.get("workdir"):
    raise ValueError("backbone spec has a 'pretrain' config but no 'workdir' to train it in.")
  if spec.get("net_kwargs") is not None and not isinstance(
      spec["net_kwargs"], Mapping) and not hasattr(spec["net_kwargs"], "to_dict"):
    raise ValueError(f"backbone spec net_kwargs={spec['net_kwargs']!r} must be a dict of "
                     f"the net's constructor arguments.")
  label = f"backbone spec {spec.get('name') or spec['net']!r}"
  if spec.get("nu") is not None:
    ada_attack.check_nu(spec["nu"], f"{label}: nu")
  if spec.get("num_steps") is not None:
    check_steps(spec["num_steps"], f"{label}: num_steps")
  ada_attack.check_step_size(spec.get("step_size"), f"{label}: step_size")
  return spec


def _check_image_shape(image_shape) -> tuple[int, int, int]:
  """`image_shape` as (H, W, C); ValueError unless it is three positive ints, NHWC."""
  try:
    shape = tuple(int(d) for d in image_shape)
    ok = all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
             for d in image_shape) and len(shape) == 3 and min(shape) >= 1
  except (TypeError, ValueError):
    ok, shape = False, image_shape
  if not ok:
    raise ValueError(f"image_shape={image_shape!r} must be (H, W, C), three positive ints "
                     f"(one image, no batch axis), e.g. (32, 32, 3).")
  if shape[0] in (1, 3) and shape[2] not in (1, 3, 4):
    raise ValueError(f"image_shape={image_shape!r} looks like (C, H, W); adacorr's images "
                     f"are NHWC, so pass (H, W, C) = {(shape[1], shape[2], shape[0])}.")
  return shape


def load_backbone(spec: Mapping[str, Any], *, image_shape: Sequence[int] | None = None,
                  seed: int = 0) -> Backbone:
  """Builds an AdA `Backbone` from a config spec (see `adacorr.methods.ada`).

  Args:
    spec: {'net', 'net_kwargs'?, 'name'?, one of 'workdir' (+ 'pretrain'?) /
      'torch_weights' / init='random', 'nu'?, 'num_steps'?, 'step_size'?}.
    image_shape: (H, W, C) of the data, needed for `init='random'`.
    seed: seed of the random init.

  Raises:
    ValueError: for a bad spec (`check_backbone_spec`: unknown keys, unknown net, no or
      several weight sources, bad overrides), a bad image_shape, or net_kwargs the net
      does not take.
    FileNotFoundError: for a `workdir` with no finished run and no `pretrain` config,
      or missing `torch_weights`.
  """
  spec = check_backbone_spec(spec)
  name = spec.get("name") or spec["net"]
  overrides = {k: spec[k] for k in ("nu", "num_steps", "step_size") if spec.get(k) is not None}
  net_kwargs = dict(spec.get("net_kwargs") or {})
  if spec.get("workdir"):
    if spec.get("pretrain") is not None:
      pretrain = spec["pretrain"]
      if not isinstance(pretrain, ml_collections.ConfigDict):  # e.g. read from config.json
        pretrain = ml_collections.ConfigDict(dict(pretrain))
      net, variables = ensure_pretrained(pretrain, spec["workdir"])
    else:
      net, variables = load_corruption_net(spec["workdir"])
    if type(net) is not corruption.CORRUPTION_NETS.get(spec["net"]):
      raise ValueError(f"backbone {name!r}: {spec['workdir']} holds a "
                       f"{type(net).__name__}, not a {spec['net']!r} net.")
  elif spec.get("torch_weights"):
    path = os.path.expanduser(spec["torch_weights"])
    if not os.path.exists(path):
      raise FileNotFoundError(f"backbone {name!r}: torch_weights={spec['torch_weights']!r} "
                              f"does not exist (DeepAugment's published EDSR / CAE weights "
                              f"must be downloaded by hand).")
    if spec["net"] not in ("edsr", "cae"):
      raise ValueError(f"torch_weights are supported for 'edsr' and 'cae' (DeepAugment's "
                       f"published nets), not {spec['net']!r}.")
    state_dict = convert_torch.load_torch_state_dict(path)
    if spec["net"] == "edsr":
      net_kwargs.setdefault("scale", 4)
      params = convert_torch.edsr_params_from_torch(state_dict, scale=net_kwargs["scale"])
    else:
      params = convert_torch.cae_params_from_torch(state_dict)
    net = _build_net(spec["net"], net_kwargs, name)
    variables = {"params": params}
  elif spec.get("init") == "random":
    if image_shape is None:
      raise ValueError("init='random' needs the image_shape (H, W, C).")
    image_shape = _check_image_shape(image_shape)
    net = _build_net(spec["net"], net_kwargs, name)
    try:
      variables = dict(jax.jit(net.init)(jax.random.PRNGKey(seed),
                                         jnp.zeros((1,) + image_shape, jnp.float32)))
    except ValueError as e:
      raise ValueError(f"backbone {name!r}: the {spec['net']!r} net cannot take images of "
                       f"shape {image_shape}: {e}") from e
  else:
    raise ValueError(f"backbone spec {spec} names no weights: give 'workdir' (a pretrained "
                     "run, optionally with a 'pretrain' config), 'torch_weights', or "
                     "init='random'.")
  return backbone_from_net(name, net, variables, **overrides)


def _build_net(net: str, net_kwargs: dict[str, Any], name: str) -> nn.Module:
  try:
    return corruption.get_corruption_net(net, **net_kwargs)
  except TypeError as e:  # an unknown constructor argument
    fields = sorted(getattr(corruption.CORRUPTION_NETS[net], "__dataclass_fields__", {}))
    fields = [f for f in fields if f not in ("parent", "name")]
    raise ValueError(f"backbone {name!r}: net_kwargs={net_kwargs!r} do not fit the "
                     f"{net!r} net ({e}); its arguments are {fields}.") from e
