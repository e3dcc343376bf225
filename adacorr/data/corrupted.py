"""`<dataset>-C`: corrupted copies of a `Source`, built locally or loaded from tfds.

Build CIFAR-10-C-style files from any `Source` (deterministic, resumable)::

  from adacorr.data import corrupted, load_split
  test = load_split("cifar10", "test")
  corrupted.build_corrupted(test, "/data/cifar10-c", seed=0)   # 15 x 5 .npz files
  fog3 = corrupted.load_corrupted("/data/cifar10-c", "fog", 3)  # an ArraySource

or load the published CIFAR-10-C from tfds::

  fog3 = corrupted.load_cifar10_corrupted("fog", 3)

Layout of `out_dir`: `{name}_{severity}.npz` with `images` (uint8 NHWC, as the
source's) and `labels` (int32), plus `manifest.json` recording what was built from
what (source fingerprint, params, seed, corrupt_fn).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from adacorr.corruptions import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, SEVERITIES
from adacorr.data import _tfds
from adacorr.data.sources import ArraySource, Source

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
_CACHE_BYTES = 1 << 30  # a source up to this size is read once for all corruptions
_FINGERPRINT_EXAMPLES = 64

# Our corruption names -> tfds `cifar10_corrupted` names (the rest are identical; all
# 19 names of ALL_CORRUPTIONS have tfds configs `{tfds_name}_{1..5}`).
TFDS_CORRUPTION_NAMES: dict[str, str] = {
    **{name: name for name in ALL_CORRUPTIONS},
    "glass_blur": "frosted_glass_blur",
    "elastic_transform": "elastic",
}
CIFAR10_NUM_CLASSES = 10

CorruptFn = Callable[..., jax.Array]


def file_name(name: str, severity: int) -> str:
  """`'{name}_{severity}.npz'`, the file of one corruption and severity."""
  return f"{name}_{severity}.npz"


def _check_name(name, argname: str = "name") -> str:
  if name not in ALL_CORRUPTIONS:
    raise ValueError(f"Unknown corruption {argname}={name!r}; known: "
                     f"{', '.join(ALL_CORRUPTIONS)}.")
  return name


def _check_severity(severity, argname: str = "severity") -> int:
  if isinstance(severity, bool) or severity not in SEVERITIES:
    raise ValueError(f"{argname}={severity!r} must be an int in 1..5.")
  return int(severity)


def example_keys(seed: int, name: str, severity: int, indices: np.ndarray) -> jax.Array:
  """One typed PRNG key per example index, shape `(len(indices),)`.

  Key of example `i` = `fold_in(fold_in(fold_in(key(seed), c), severity), i)` with `c`
  the index of `name` in `ALL_CORRUPTIONS`: independent of batching.
  """
  base = jax.random.fold_in(
      jax.random.fold_in(jax.random.key(seed), ALL_CORRUPTIONS.index(name)), severity)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
      base, jnp.asarray(indices, jnp.uint32))


def source_fingerprint(source: Source) -> str:
  """A sha256 hex digest of the source's size, shape, classes and 64 spread-out examples."""
  n = source.num_examples
  idx = np.unique(np.linspace(0, n - 1, min(n, _FINGERPRINT_EXAMPLES)).astype(np.int64))
  images, labels = source.get(idx)
  h = hashlib.sha256()
  h.update(json.dumps([n, list(source.image_shape), source.num_classes]).encode())
  h.update(np.ascontiguousarray(images, np.uint8).tobytes())
  h.update(np.ascontiguousarray(labels, np.int32).tobytes())
  return h.hexdigest()


def _fn_name(fn) -> str:
  return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def _manifest(source: Source, params: str, seed: int, corrupt_fn) -> dict:
  """The manifest of a build; every key but 'source_repr' must match on a rebuild."""
  return {
      "format": MANIFEST_FORMAT,
      "source": {"num_examples": int(source.num_examples),
                 "image_shape": [int(d) for d in source.image_shape],
                 "num_classes": int(source.num_classes),
                 "fingerprint": source_fingerprint(source)},
      "source_repr": repr(source),
      "params": params,
      "seed": int(seed),
      "corrupt_fn": _fn_name(corrupt_fn),
  }


def _write_atomic(path: str, write: Callable) -> None:
  """Writes via `write(file)` to `path + '.tmp'`, then renames it to `path`."""
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    write(f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _check_manifest(out_dir: str, manifest: dict) -> None:
  """Writes `manifest` into a fresh `out_dir`, or checks it against the one there."""
  path = os.path.join(out_dir, MANIFEST)
  if not os.path.exists(path):
    stray = [f for f in sorted(os.listdir(out_dir))
             if f.endswith(".npz") and f[:-4].rsplit("_", 1)[0] in ALL_CORRUPTIONS]
    if stray:
      raise ValueError(f"out_dir={out_dir!r} holds corrupted files ({stray[0]}, ...) but no "
                       f"{MANIFEST}, so what built them is unknown; use an empty out_dir.")
    _write_atomic(path, lambda f: f.write(json.dumps(manifest, indent=2).encode()))
    return
  with open(path) as f:
    old = json.load(f)
  new = json.loads(json.dumps(manifest))
  diff = [k for k in sorted(set(old) | set(new))
          if k != "source_repr" and old.get(k) != new.get(k)]
  if diff:
    details = "; ".join(f"{k}: built with {old.get(k)!r}, now {new.get(k)!r}" for k in diff)
    raise ValueError(f"out_dir={out_dir!r} was built from a different configuration "
                     f"({details}). Use another out_dir, or delete it to rebuild.")


def _reader(source: Source) -> Callable[[int, int], tuple[np.ndarray, np.ndarray]]:
  """`read(start, stop)` -> examples `start..stop-1`; small sources are read only once."""
  n = source.num_examples
  if n * int(np.prod(source.image_shape)) > _CACHE_BYTES:
    return lambda start, stop: source.get(np.arange(start, stop))
  cache = []

  def read(start, stop):
    if not cache:
      parts = [source.get(np.arange(i, min(i + 10_000, n))) for i in range(0, n, 10_000)]
      cache.append((np.concatenate([p[0] for p in parts]),
                    np.concatenate([p[1] for p in parts])))
    return cache[0][0][start:stop], cache[0][1][start:stop]

  return read


def _corrupt_split(read, n: int, name: str, severity: int, *, seed: int, params: str,
                   batch_size: int, corrupt_fn: CorruptFn) -> tuple[np.ndarray, np.ndarray]:
  """All `n` examples corrupted: uint8 NHWC images and int32 labels."""
  images_out, labels_out = [], []
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    images, labels = read(start, stop)
    x = np.asarray(images, np.float32) / 255.0
    pad = batch_size - (stop - start)  # pad the last batch: one compiled shape
    if pad:
      x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
    keys = example_keys(seed, name, severity, np.arange(start, start + batch_size))
    y = np.asarray(corrupt_fn(jnp.asarray(x), name, severity, keys, params=params))
    if y.shape != x.shape:
      raise ValueError(f"corrupt_fn returned shape {y.shape} for images of shape {x.shape}.")
    y = np.round(np.clip(y[:stop - start], 0.0, 1.0) * 255.0).astype(np.uint8)
    images_out.append(y)
    labels_out.append(np.asarray(labels, np.int32))
  return np.concatenate(images_out), np.concatenate(labels_out)


def build_corrupted(source: Source, out_dir: str, *,
                    corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS,
                    severities: Sequence[int] = SEVERITIES, seed: int = 0,
                    params: str = "cifar10", batch_size: int = 256,
                    corrupt_fn: CorruptFn | None = None,
                    progress: bool = True) -> dict[tuple[str, int], str]:
  """Writes `out_dir/{name}_{severity}.npz` for every corruption and severity.

  Deterministic: example `i` is corrupted with `example_keys(seed, name, severity, i)`,
  so the files do not depend on `batch_size`. Resumable: finished files are skipped;
  each file is written to `{file}.tmp` and renamed when complete. `manifest.json`
  records the source fingerprint, `params`, `seed` and `corrupt_fn`; building into a
  directory made with others raises.

  Args:
    source: the clean split (e.g. `load_split('cifar10', 'test')`).
    out_dir: output directory (created if missing).
    corruptions: names from `ALL_CORRUPTIONS`.
    severities: severities in 1..5.
    seed: root of every example's PRNG key.
    params: parameter table passed to `corrupt_fn` ('cifar10' or 'imagenet').
    batch_size: images per `corrupt_fn` call (the last batch is padded to it).
    corrupt_fn: `fn(images float32 (B, H, W, C) in [0, 1], name, severity, keys (B,),
      *, params) -> images`; default `adacorr.corruptions.corrupt`.
    progress: show a tqdm bar over (corruption, severity).

  Returns:
    `(name, severity)` -> path of its file, for every requested pair.
  """
  corruptions = tuple(_check_name(c, "corruptions") for c in corruptions)
  severities = tuple(_check_severity(s, "severities") for s in severities)
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")
  if not isinstance(source, Source):
    raise ValueError(f"source must be a Source (num_examples, image_shape, num_classes, "
                     f"get), got {type(source).__name__}.")
  if source.num_examples < 1:
    raise ValueError("source must hold at least one example.")
  if corrupt_fn is None:
    from adacorr.corruptions import corrupt as corrupt_fn  # pylint: disable=g-import-not-at-top
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  _check_manifest(out_dir, _manifest(source, params, seed, corrupt_fn))

  paths = {(c, s): os.path.join(out_dir, file_name(c, s)) for c in corruptions
           for s in severities}
  todo = [job for job, path in paths.items() if not os.path.exists(path)]
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm(todo, disable=not progress, unit="file",
             desc=f"{os.path.basename(out_dir.rstrip(os.sep)) or out_dir} "
                  f"({len(paths) - len(todo)} done before)")
  read = _reader(source)
  n = source.num_examples
  for name, severity in bar:
    bar.set_postfix_str(f"{name} {severity}")
    images, labels = _corrupt_split(read, n, name, severity, seed=seed, params=params,
                                    batch_size=min(batch_size, n), corrupt_fn=corrupt_fn)
    _write_atomic(paths[(name, severity)],
                  lambda f, i=images, l=labels: np.savez(f, images=i, labels=l))
  return paths


def load_corrupted(out_dir: str, name: str, severity: int, *,
                   num_classes: int | None = None) -> ArraySource:
  """One file of a `build_corrupted` directory as an `ArraySource`.

  Args:
    out_dir: the directory given to `build_corrupted`.
    name: a corruption in `ALL_CORRUPTIONS`.
    severity: 1..5.
    num_classes: default: from `manifest.json`.

  Raises:
    ValueError: for an unknown `name` or `severity`.
    FileNotFoundError: if the file (or, without `num_classes`, the manifest) is missing.
  """
  name, severity = _check_name(name), _check_severity(severity)
  out_dir = os.fspath(out_dir)
  path = os.path.join(out_dir, file_name(name, severity))
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} not found. Build it with adacorr.data.corrupted.build_corrupted(source, "
        f"{out_dir!r}, corruptions=[{name!r}], severities=[{severity}]) (the default "
        "builds all 15 benchmark corruptions x 5 severities).")
  if num_classes is None:
    manifest = os.path.join(out_dir, MANIFEST)
    if not os.path.exists(manifest):
      raise FileNotFoundError(f"{manifest} not found; pass num_classes= to load {path}.")
    with open(manifest) as f:
      num_classes = json.load(f)["source"]["num_classes"]
  with np.load(path) as data:
    return ArraySource(data["images"], data["labels"], num_classes=num_classes)


def cifar10_corrupted_config(name: str, severity: int) -> str:
  """tfds name of one CIFAR-10-C config, e.g. `'cifar10_corrupted/frosted_glass_blur_2'`."""
  name, severity = _check_name(name), _check_severity(severity)
  return f"cifar10_corrupted/{TFDS_CORRUPTION_NAMES[name]}_{severity}"


def load_cifar10_corrupted(name: str, severity: int, *, data_dir: str | None = None,
                           download: bool = False) -> ArraySource:
  """The published CIFAR-10-C (tfds `cifar10_corrupted`, 10000 test images) in memory.

  Args:
    name: a corruption in `ALL_CORRUPTIONS` (our spelling; e.g. 'glass_blur' reads
      tfds's 'frosted_glass_blur').
    severity: 1..5.
    data_dir: tfds data dir (default tfds's own).
    download: let tfds download and prepare the data if missing (~2.9 GB, needs
      internet). If False, data that is not on disk fails at once.

  Raises:
    ValueError: for an unknown `name` or `severity`.
    FileNotFoundError: if tfds cannot provide the data.
  """
  tfds_name = cifar10_corrupted_config(name, severity)
  try:
    images, labels = _tfds.load_arrays(tfds_name, "test", data_dir=data_dir,
                                      download=download)
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(
        f"CIFAR-10-C: {_tfds.describe_failure(tfds_name, 'test', data_dir, e)}. Get it with "
        "download=True (tfds downloads CIFAR-10-C, ~2.9 GB, all configs; needs internet), "
        "or copy a prepared `cifar10_corrupted` folder into that data_dir, or build a "
        "local copy with build_corrupted.") from e
  return ArraySource(images, labels, num_classes=CIFAR10_NUM_CLASSES)
