"""DeepAugment copies on disk: load an EDSR / CAE from a backbone spec and write a
distorted copy of a dataset (resumable, chunk by chunk).

`make_copy` writes what `adacorr.data.deepaugment` reads: `images.npy` (uint8
(N, H, W, C)), `labels.npy` (int32 (N,)) and, last, `info.json`. The CLI is
`python -m experiments.make_deepaugment`; a DeepAugment training config makes its
missing copies on first use.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.augment import deepaugment
from adacorr.data import deepaugment as da_data
from adacorr.run import corruption_nets

CHUNKS_DIR = "chunks"
PROGRESS_FILE = "progress.json"


def load_net(spec, *, image_shape, seed=0):
  """`(net module, params)` of a backbone spec; mirrors `adacorr.run.load_backbone`
  (which hides the module in a closure) for DeepAugment's two nets."""
  from adacorr.models import corruption  # pylint: disable=import-outside-toplevel
  net_name = spec["net"]
  if net_name not in deepaugment.NETS:
    raise ValueError(f"net={net_name!r}: DeepAugment distorts {deepaugment.NETS} only.")
  net_kwargs = dict(spec.get("net_kwargs") or {})
  if spec.get("workdir"):
    if spec.get("pretrain") is not None:
      net, variables = corruption_nets.ensure_pretrained(spec["pretrain"], spec["workdir"])
    else:
      net, variables = corruption_nets.load_corruption_net(spec["workdir"])
  elif spec.get("torch_weights"):
    from adacorr.models.corruption import convert_torch  # pylint: disable=import-outside-toplevel
    state_dict = convert_torch.load_torch_state_dict(os.path.expanduser(spec["torch_weights"]))
    if net_name == "edsr":
      net_kwargs.setdefault("scale", 4)
      params = convert_torch.edsr_params_from_torch(state_dict, scale=net_kwargs["scale"])
    else:
      params = convert_torch.cae_params_from_torch(state_dict)
    net, variables = corruption.get_corruption_net(net_name, **net_kwargs), {"params": params}
  elif spec.get("init") == "random":
    net = corruption.get_corruption_net(net_name, **net_kwargs)
    variables = {"params": random_params(net, image_shape, seed)}
  else:
    raise ValueError(f"backbone spec {spec} names no weights.")
  deepaugment.net_name(net)  # checks it is an EDSR / CAE
  return net, variables["params"]


def random_params(net, image_shape, seed=0):
  """Random params with the nets' own (PyTorch-default) init distribution: kernel and bias
  of each layer ~ U(+-1/sqrt(fan_in)), fan_in = prod(kernel.shape[:-1]). Drawn with NumPy
  from `seed` (a jitted `net.init` costs seconds of XLA compilation per call on CPU)."""
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32))
  rng = np.random.default_rng(seed)

  def layer(node):
    if "kernel" in node:
      bound = 1.0 / np.sqrt(np.prod(node["kernel"].shape[:-1]))
      return {k: jnp.asarray(rng.uniform(-bound, bound, v.shape).astype(np.float32))
              for k, v in sorted(node.items())}
    return {k: layer(v) for k, v in sorted(node.items())}

  return layer(shapes["params"])


def _atomic_save(path, array):
  tmp = path + ".tmp.npy"
  np.save(tmp, array)
  os.replace(tmp, path)


def _write_json(path, obj):
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def make_copy(net, params, source, out_dir, *, batch_size=20, chunk_size=5000, seed=0,
              num_examples=None, max_chunks=None, meta=None, progress=True):
  """Writes the DeepAugment copy of `source` to `out_dir`; returns its info dict, or None
  if `max_chunks` stopped it early.

  Batch g (images g*batch_size ...) uses key fold_in(PRNGKey(seed), g), so the copy does
  not depend on chunk_size or on interruptions.

  Raises:
    ValueError: for bad sizes, or if `out_dir` holds chunks made with other settings.
  """
  for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"{name} must be a positive int, got {value!r}.")
  if chunk_size % batch_size:
    raise ValueError(f"chunk_size={chunk_size} must be a multiple of batch_size={batch_size}.")
  n = source.num_examples if num_examples is None else min(int(num_examples),
                                                           source.num_examples)
  if n <= 0:
    raise ValueError(f"num_examples must be positive, got {num_examples!r}.")
  settings = dict(meta or {}, net=deepaugment.net_name(net), net_module=repr(net),
                  count=n, seed=int(seed), batch_size=batch_size, chunk_size=chunk_size,
                  num_classes=int(source.num_classes),
                  image_shape=[int(d) for d in source.image_shape],
                  weights_redrawn="per batch", activations_redrawn="per example")
  settings = json.loads(json.dumps(settings))  # as stored
  info_path = os.path.join(out_dir, da_data.INFO_FILE)
  if os.path.exists(info_path):
    with open(info_path, encoding="utf-8") as f:
      done = json.load(f)
    if {k: done.get(k) for k in settings} == settings:
      print(f"{out_dir} already holds this DeepAugment copy ({n} images); nothing to do.")
      return done
    raise ValueError(f"{out_dir} holds a DeepAugment copy with other settings; pass another "
                     "--out_dir or delete it.")
  chunk_dir = os.path.join(out_dir, CHUNKS_DIR)
  os.makedirs(chunk_dir, exist_ok=True)
  progress_path = os.path.join(out_dir, PROGRESS_FILE)
  if os.path.exists(progress_path):
    with open(progress_path, encoding="utf-8") as f:
      previous = json.load(f)
    if previous != settings:
      changed = sorted(k for k in set(previous) | set(settings)
                       if previous.get(k) != settings.get(k))
      raise ValueError(f"{out_dir} holds chunks made with other settings (fields {changed} "
                       "differ); pass another --out_dir or delete it.")
  else:
    _write_json(progress_path, settings)

  num_chunks = -(-n // chunk_size)
  paths = [os.path.join(chunk_dir, f"chunk_{c:05d}.npy") for c in range(num_chunks)]
  todo = [c for c in range(num_chunks) if not os.path.exists(paths[c])]
  key = jax.random.PRNGKey(seed)
  h, w, ch = source.image_shape
  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=n, initial=n - sum(min(chunk_size, n - c * chunk_size) for c in todo),
               desc=f"deepaugment {settings['net']}", unit="img", dynamic_ncols=True)
  written = 0
  start_time = time.time()
  for c in todo:
    if max_chunks is not None and written >= max_chunks:
      if bar is not None:
        bar.close()
      print(f"Stopped after {written} new chunk(s); rerun to continue.")
      return None
    lo, hi = c * chunk_size, min((c + 1) * chunk_size, n)
    out = np.empty((hi - lo, h, w, ch), np.uint8)
    for start in range(lo, hi, batch_size):
      stop = min(start + batch_size, hi)
      images, _ = source.get(np.arange(start, stop))
      batch = np.zeros((batch_size, h, w, ch), np.uint8)
      batch[:stop - start] = images
      y = deepaugment.jit_deepaugment_batch(
          net, params, jnp.asarray(batch, jnp.float32) / 255.0,
          jax.random.fold_in(key, start // batch_size))
      y = np.asarray(y[:stop - start])
      out[start - lo:stop - lo] = np.round(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)
      if bar is not None:
        bar.update(stop - start)
    _atomic_save(paths[c], out)
    written += 1
  if bar is not None:
    bar.close()

  images = np.lib.format.open_memmap(os.path.join(out_dir, da_data.IMAGES_FILE + ".tmp"),
                                     mode="w+", dtype=np.uint8, shape=(n, h, w, ch))
  labels = np.empty((n,), np.int32)
  for c in range(num_chunks):
    lo, hi = c * chunk_size, min((c + 1) * chunk_size, n)
    images[lo:hi] = np.load(paths[c])
    labels[lo:hi] = source.get(np.arange(lo, hi))[1]
  images.flush()
  del images
  os.replace(os.path.join(out_dir, da_data.IMAGES_FILE + ".tmp"),
             os.path.join(out_dir, da_data.IMAGES_FILE))
  _atomic_save(os.path.join(out_dir, da_data.LABELS_FILE), labels)
  info = dict(settings, seconds_this_run=round(time.time() - start_time, 1))
  _write_json(info_path, info)  # last: marks the copy finished
  shutil.rmtree(chunk_dir)
  os.remove(progress_path)
  return info
