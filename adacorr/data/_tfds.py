"""Lazy, accelerator-free access to TensorFlow Datasets.

TensorFlow is imported only here and only when a tfds dataset is requested, so that
`import adacorr.data` stays cheap. Its GPUs are hidden before first use, so that TF
never allocates accelerator memory next to JAX.
"""

from __future__ import annotations

import contextlib

import numpy as np


def import_tfds():
  """Imports `tensorflow_datasets` after hiding every GPU from TensorFlow."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # RuntimeError: TF's devices were already initialised by the caller; nothing to change.
  with contextlib.suppress(RuntimeError):
    tf.config.set_visible_devices([], "GPU")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def load_arrays(tfds_name: str, split: str, *, data_dir: str | None, download: bool = True,
                chunk: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
  """A whole tfds split in memory: images uint8 `(N, H, W, C)`, labels int32 `(N,)`.

  Reads with `as_supervised=True` in chunks of `chunk` examples, in the split's
  order. (`batch_size=-1` would do the same in one batch, but tfds sizes that batch
  from the split metadata, which `tfds.testing.mock_data` lacks: it then asks TF for
  a `sys.maxsize` batch and the process aborts.)
  """
  tfds = import_tfds()
  ds = tfds.load(tfds_name, split=split, data_dir=data_dir, download=download,
                 as_supervised=True, batch_size=chunk, shuffle_files=False)
  images, labels = [], []
  for x, y in tfds.as_numpy(ds):
    images.append(np.asarray(x, np.uint8))
    labels.append(np.asarray(y).astype(np.int32))
  if not images:
    raise ValueError(f"tfds dataset {tfds_name!r} split {split!r} is empty.")
  return np.concatenate(images), np.concatenate(labels)
