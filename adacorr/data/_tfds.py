"""Lazy, accelerator-free access to TensorFlow Datasets.

TensorFlow is imported only here and only when a tfds dataset is requested, so that
`import adacorr.data` stays cheap. Its GPUs are hidden before first use, so that TF
never allocates accelerator memory next to JAX.

Nothing is downloaded unless a caller passes `download=True`. Without it, a dataset
whose folder is not in the tfds data dir fails at once (`check_on_disk`), before
TensorFlow is even imported.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

DATA_DIR_ENV = "TFDS_DATA_DIR"
DEFAULT_DATA_DIR = "~/tensorflow_datasets"


def import_tfds():
  """Imports `tensorflow_datasets` after hiding every GPU from TensorFlow."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # RuntimeError: TF's devices were already initialised by the caller; nothing to change.
  with contextlib.suppress(RuntimeError):
    tf.config.set_visible_devices([], "GPU")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def resolve_data_dir(data_dir: str | None) -> str:
  """The tfds data dir tfds reads: `data_dir`, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`."""
  return os.path.expanduser(os.fspath(data_dir or os.environ.get(DATA_DIR_ENV)
                                      or DEFAULT_DATA_DIR))


def dataset_dir(tfds_name: str, data_dir: str | None) -> str:
  """Folder of tfds dataset `tfds_name` (e.g. 'cifar10_1/v6', 'cifar10:3.0.2') in its data dir."""
  return os.path.join(resolve_data_dir(data_dir), tfds_name.split(":")[0])


def check_on_disk(tfds_name: str, data_dir: str | None) -> None:
  """Fails fast if tfds dataset `tfds_name` has no folder in the (local) tfds data dir.

  Only looks at the file system (no TensorFlow import). Remote data dirs (`gs://...`)
  are not checked.

  Raises:
    FileNotFoundError: naming the folder looked for and its data dir.
  """
  root = resolve_data_dir(data_dir)
  if "://" in root:
    return
  path = dataset_dir(tfds_name, data_dir)
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f"tfds dataset {tfds_name!r} is not on disk: no folder {path} (in the tfds data_dir "
        f"{root}: the data_dir argument, else ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR}); "
        "nothing is downloaded unless download=True")


def describe_failure(tfds_name: str, split: str, data_dir: str | None,
                     error: Exception) -> str:
  """What went wrong loading `tfds_name`/`split`, naming the tfds data dir looked in."""
  if isinstance(error, FileNotFoundError) and str(error).startswith(f"tfds dataset {tfds_name!r}"):
    return str(error)  # from check_on_disk: it names the folder and the data dir
  return (f"could not load tfds dataset {tfds_name!r} split {split!r} from the tfds "
          f"data_dir {resolve_data_dir(data_dir)} ({type(error).__name__}: {error})")


def load_arrays(tfds_name: str, split: str, *, data_dir: str | None, download: bool = False,
                chunk: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
  """A whole tfds split in memory: images uint8 `(N, H, W, C)`, labels int32 `(N,)`.

  Reads with `as_supervised=True` in chunks of `chunk` examples, in the split's
  order. (`batch_size=-1` would do the same in one batch, but tfds sizes that batch
  from the split metadata, which `tfds.testing.mock_data` lacks: it then asks TF for
  a `sys.maxsize` batch and the process aborts.)

  Args:
    tfds_name: tfds dataset (and config) name, e.g. 'cifar10' or 'cifar10_1/v6'.
    split: tfds split name.
    data_dir: tfds data dir (None: `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`).
    download: let tfds download and prepare a missing dataset (needs internet). If
      False, a dataset not in `data_dir` fails at once (`check_on_disk`).
    chunk: examples read per tfds batch.

  Raises:
    FileNotFoundError: `download` is False and the dataset is not on disk.
  """
  if not download:
    check_on_disk(tfds_name, data_dir)
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
