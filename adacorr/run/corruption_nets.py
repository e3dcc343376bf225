"""Corruption nets from run directories: load a pretrained one, pretrain it on first use,
and build AdA backbones from their config specs.

`pretrain` itself is the engine's (`adacorr.train.corruption_nets.pretrain`); this
module reads what it wrote.

Typical use (the AdA quickstart)::

  net, variables = ensure_pretrained(config, workdir)   # trains once, then reuses
  images = net.apply(variables, x, train=False)
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
import orbax.checkpoint as ocp

from adacorr import data as data_lib
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


def load_backbone(spec: Mapping[str, Any], *, image_shape: Sequence[int] | None = None,
                  seed: int = 0) -> Backbone:
  """Builds an AdA `Backbone` from a config spec (see `adacorr.methods.ada`).

  Args:
    spec: {'net', 'net_kwargs'?, 'name'?, one of 'workdir' (+ 'pretrain'?) /
      'torch_weights' / init='random', 'nu'?, 'num_steps'?, 'step_size'?}.
    image_shape: (H, W, C) of the data, needed for `init='random'`.
    seed: seed of the random init.

  Raises:
    ValueError: for an unknown net or a spec that names no weights.
    FileNotFoundError: for a `workdir` with no finished run and no `pretrain` config.
  """
  spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
  if "net" not in spec:
    raise ValueError(f"backbone spec {spec} must name its 'net' "
                     f"(one of {sorted(corruption.CORRUPTION_NETS)}).")
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
    state_dict = convert_torch.load_torch_state_dict(os.path.expanduser(spec["torch_weights"]))
    if spec["net"] == "edsr":
      net_kwargs.setdefault("scale", 4)
      params = convert_torch.edsr_params_from_torch(state_dict, scale=net_kwargs["scale"])
    elif spec["net"] == "cae":
      params = convert_torch.cae_params_from_torch(state_dict)
    else:
      raise ValueError(f"torch_weights are supported for 'edsr' and 'cae' (DeepAugment's "
                       f"published nets), not {spec['net']!r}.")
    net = corruption.get_corruption_net(spec["net"], **net_kwargs)
    variables = {"params": params}
  elif spec.get("init") == "random":
    if image_shape is None:
      raise ValueError("init='random' needs the image_shape.")
    net = corruption.get_corruption_net(spec["net"], **net_kwargs)
    variables = dict(jax.jit(net.init)(jax.random.PRNGKey(seed),
                                       jnp.zeros((1,) + tuple(image_shape), jnp.float32)))
  else:
    raise ValueError(f"backbone spec {spec} names no weights: give 'workdir' (a pretrained "
                     "run, optionally with a 'pretrain' config), 'torch_weights', or "
                     "init='random'.")
  return backbone_from_net(name, net, variables, **overrides)
