"""Deterministic, resumable, data-parallel batching of a `Source` onto a device mesh.

The examples of global training batch `step` are a pure function of
`(num_examples, global_batch_size, seed, step)` (see `batch_indices`), so resuming at
a step needs nothing but the step. Each host reads only its own rows of a global
batch (`adacorr.parallel.host_local_slice`), moves them to its devices as uint8 and
converts them to float32 in [0, 1] on device.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from adacorr import parallel
from adacorr.data.sources import Source


def steps_per_epoch(source: Source, global_batch_size: int) -> int:
  """Full global batches in one pass over `source` (the remainder is dropped)."""
  _check_source(source)
  _check_positive_int(global_batch_size, "global_batch_size")
  return source.num_examples // global_batch_size


def _check_source(source: Any) -> None:
  """TypeError unless `source` has what a `Source` has (arrays are not one: wrap them in
  `adacorr.data.ArraySource(images, labels, num_classes)`)."""
  for attr in ("num_examples", "image_shape", "num_classes", "get"):
    if not hasattr(source, attr):
      raise TypeError(f"source must be a Source (with num_examples, image_shape, num_classes "
                      f"and get), got {type(source).__name__} without {attr!r}; wrap arrays "
                      f"in adacorr.data.ArraySource(images, labels, num_classes).")


def _check_positive_int(value: Any, name: str) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")


def _check_nonnegative_int(value: Any, name: str) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
    raise ValueError(f"{name} must be a non-negative int, got {value!r}.")


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The order of the examples in `epoch`: int64 `(num_examples,)`, from `(seed, epoch)`."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batch_indices(num_examples: int, global_batch_size: int, step: int,
                  seed: int) -> np.ndarray:
  """Example indices of global training batch `step`: int64 `(global_batch_size,)`.

  Epoch `e = step // steps_per_epoch` visits the examples in the order
  `epoch_permutation(num_examples, seed, e)`; each step takes the next
  `global_batch_size` of them and the remainder of an epoch is dropped. So no index
  repeats within an epoch and every batch is a pure function of its arguments.
  """
  _check_positive_int(num_examples, "num_examples")
  _check_positive_int(global_batch_size, "global_batch_size")
  _check_nonnegative_int(step, "step")
  _check_nonnegative_int(seed, "seed")
  if global_batch_size > num_examples:
    raise ValueError(f"global_batch_size={global_batch_size} is larger than the "
                     f"dataset ({num_examples} examples).")
  per_epoch = num_examples // global_batch_size
  epoch, i = divmod(int(step), per_epoch)
  perm = epoch_permutation(num_examples, seed, epoch)
  return perm[i * global_batch_size:(i + 1) * global_batch_size]


def _check_batch(global_batch_size: int, mesh: Mesh) -> None:
  if not isinstance(mesh, Mesh):
    raise TypeError(f"mesh must be a jax.sharding.Mesh (adacorr.parallel.make_mesh()), got "
                    f"{type(mesh).__name__}.")
  _check_positive_int(global_batch_size, "global_batch_size")
  num_devices = mesh.devices.size
  if global_batch_size % num_devices:
    raise ValueError(f"global_batch_size={global_batch_size} must be a multiple of "
                     f"the number of devices in the mesh ({num_devices}).")


def _to_float_fn(mesh: Mesh) -> Callable[[dict], dict]:
  """Jitted: `'image'` uint8 -> float32 / 255 in [0, 1]; keeps the batch sharding."""
  sharding = parallel.batch_sharding(mesh)

  def to_float(batch):
    return {**batch, "image": batch["image"].astype(jnp.float32) / 255.0}

  return jax.jit(to_float, out_shardings=sharding)


def train_batches(source: Source, *, global_batch_size: int, seed: int, mesh: Mesh,
                  start_step: int = 0, prefetch: int = 2) -> Iterator[dict]:
  """Endless training batches, sharded over `mesh`'s data axis.

  Batch `k` holds the examples `batch_indices(source.num_examples,
  global_batch_size, start_step + k, seed)`.

  Args:
    source: the training split.
    global_batch_size: examples per step over all devices; a multiple of the number
      of devices and at most `source.num_examples`.
    seed: non-negative int; fixes the order of every epoch.
    mesh: device mesh (`adacorr.parallel.make_mesh`).
    start_step: step of the first batch (for resuming).
    prefetch: batches prepared ahead by a background thread (0: none).

  Yields:
    `{'image': float32 (B, H, W, C) in [0, 1], 'label': int32 (B,)}`, global
    `jax.Array`s sharded along the batch axis.
  """
  _check_source(source)
  _check_batch(global_batch_size, mesh)
  _check_nonnegative_int(seed, "seed")
  _check_nonnegative_int(start_step, "start_step")
  _check_nonnegative_int(prefetch, "prefetch")
  num_examples = source.num_examples
  if global_batch_size > num_examples:
    raise ValueError(f"global_batch_size={global_batch_size} is larger than the "
                     f"dataset ({num_examples} examples).")
  rows = parallel.host_local_slice(global_batch_size, mesh)
  per_epoch = num_examples // global_batch_size
  to_float = _to_float_fn(mesh)

  def make_batches() -> Iterator[dict]:
    epoch, perm = -1, None
    step = start_step
    while True:
      e, i = divmod(step, per_epoch)
      if e != epoch:  # same as batch_indices, without a permutation per step
        epoch, perm = e, epoch_permutation(num_examples, seed, e)
      indices = perm[i * global_batch_size:(i + 1) * global_batch_size][rows]
      images, labels = source.get(indices)
      batch = parallel.shard_batch({"image": images, "label": labels}, mesh)
      yield to_float(batch)
      step += 1

  return _prefetch(make_batches(), prefetch)


def eval_batches(source: Source, *, global_batch_size: int, mesh: Mesh,
                 prefetch: int = 2) -> Iterator[dict]:
  """Every example of `source` once, in order, in batches sharded over `mesh`.

  The last batch is padded to `global_batch_size` with zero images and label 0;
  `'mask'` tells real examples (1) from padding (0): weight per-example metrics by
  it and divide by `mask.sum()`.

  Yields:
    `{'image': float32 (B, H, W, C) in [0, 1], 'label': int32 (B,),
    'mask': float32 (B,)}`, global `jax.Array`s sharded along the batch axis;
    `ceil(num_examples / B)` batches.
  """
  _check_source(source)
  _check_batch(global_batch_size, mesh)
  _check_nonnegative_int(prefetch, "prefetch")
  rows = parallel.host_local_slice(global_batch_size, mesh)
  num_examples = source.num_examples
  num_batches = -(-num_examples // global_batch_size)
  to_float = _to_float_fn(mesh)

  def make_batches() -> Iterator[dict]:
    for b in range(num_batches):
      positions = np.arange(b * global_batch_size, (b + 1) * global_batch_size)[rows]
      real = positions < num_examples  # a prefix of the host's rows
      num_real = int(real.sum())
      images = np.zeros((positions.size,) + tuple(source.image_shape), np.uint8)
      labels = np.zeros((positions.size,), np.int32)
      if num_real:
        images[:num_real], labels[:num_real] = source.get(positions[:num_real])
      batch = {"image": images, "label": labels, "mask": real.astype(np.float32)}
      yield to_float(parallel.shard_batch(batch, mesh))

  return _prefetch(make_batches(), prefetch)


class _Raised:
  """Carries an exception of the producer thread to the consumer."""

  def __init__(self, error: BaseException):
    self.error = error


_DONE = object()


def _prefetch(iterable: Iterable[Any], depth: int) -> Iterator[Any]:
  """Runs `iterable` in a daemon thread, up to `depth` items ahead (0: inline).

  Exceptions are re-raised in the consumer; closing (or dropping) the returned
  generator stops the thread.
  """
  if depth == 0:
    return iter(iterable)
  items: queue.Queue = queue.Queue(maxsize=depth)
  stop = threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        items.put(item, timeout=0.05)
        return True
      except queue.Full:
        continue  # re-check `stop`
    return False

  def produce():
    try:
      for item in iterable:
        if not put(item):
          return
      put(_DONE)
    except BaseException as e:  # pylint: disable=broad-except
      put(_Raised(e))

  def consume():
    thread = threading.Thread(target=produce, daemon=True, name="adacorr-prefetch")
    thread.start()
    try:
      while True:
        item = items.get()
        if item is _DONE:
          return
        if isinstance(item, _Raised):
          raise item.error
        yield item
    finally:
      stop.set()
      # Wait for the item in flight: a daemon thread still inside a jax call when the
      # interpreter exits aborts the process.
      thread.join()

  return consume()
