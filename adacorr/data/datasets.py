"""Dataset registry (`DATASETS`), `load_split` (one split as a random-access `Source`) and
`load_dataset` (a config's dataset: its `DatasetInfo` and the requested splits).

Data is read from disk only: nothing is downloaded unless `download=True` is passed (or a
config sets `download = True`). A dataset that is not on disk fails at once with a
`FileNotFoundError` that names the directories looked in and how to get the data.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from adacorr.data import _tfds
from adacorr.data import idx
from adacorr.data.sources import ArraySource, Source

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "ADACORR_FASHION_MNIST_DIR"

_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about a dataset.

  Attributes:
    name: key in `DATASETS`.
    num_classes: labels lie in `[0, num_classes)`.
    image_shape: `(H, W, C)` of the images its `Source`s return.
    mean: per-channel mean of the training images, in [0, 1] units.
    std: per-channel standard deviation, in [0, 1] units.
    train_split: split name for training (`None`: test-only dataset).
    test_split: split name for evaluation.
  """

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  train_split: str | None
  test_split: str


DATASETS: dict[str, DatasetInfo] = {
    info.name: info for info in [
        DatasetInfo("cifar10", 10, (32, 32, 3), _CIFAR10_MEAN, _CIFAR10_STD,
                    "train", "test"),
        DatasetInfo("cifar100", 100, (32, 32, 3), (0.5071, 0.4865, 0.4409),
                    (0.2673, 0.2564, 0.2762), "train", "test"),
        # CIFAR-10.1 v6: a new CIFAR-10 test set (2000 images); CIFAR-10 statistics.
        DatasetInfo("cifar10_1", 10, (32, 32, 3), _CIFAR10_MEAN, _CIFAR10_STD,
                    None, "test"),
        DatasetInfo("fashion_mnist", 10, (28, 28, 1), (0.2860,), (0.3530,),
                    "train", "test"),
        # 'test' is ImageNet's validation set; image_shape is for the default
        # image_size=144 (training crops 128 from it, evaluation center-crops 128).
        DatasetInfo("imagenet100", 100, (144, 144, 3), _IMAGENET_MEAN, _IMAGENET_STD,
                    "train", "test"),
        # Tiny, learnable, generated in numpy: for unit tests only.
        DatasetInfo("synthetic", 10, (16, 16, 3), (0.5710, 0.3906, 0.4731),
                    (0.1904, 0.2220, 0.2128), "train", "test"),
    ]
}

_TFDS_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "cifar10_1": "cifar10_1/v6",
               "fashion_mnist": "fashion_mnist"}


GET_FASHION_MNIST = (
    "`make data` (runs scripts/get_fashion_mnist.sh: `apt-get install dataset-fashion-mnist`, "
    f"files in {DEFAULT_FASHION_MNIST_DIR})")


def _splits(info: DatasetInfo) -> tuple[str, ...]:
  extra = ("validation",) if info.name == "imagenet100" else ()
  return tuple(s for s in (info.train_split, info.test_split) if s) + extra


def load_split(name: str, split: str, *, data_dir: str | None = None,
               fashion_mnist_dir: str | None = None,
               image_size: int | None = None, download: bool = False) -> Source:
  """A split of dataset `name` as a random-access `Source` of uint8 images.

  Args:
    name: a key of `DATASETS`.
    split: 'train' or 'test' ('cifar10_1': 'test' only; 'imagenet100' also accepts
      'validation' for 'test').
    data_dir: tfds data dir for the tfds datasets (default: tfds's own, i.e.
      `$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
    fashion_mnist_dir: directory with the four Fashion-MNIST IDX `.gz` files
      (default `$ADACORR_FASHION_MNIST_DIR`, else `/usr/share/datasets/fashion-mnist`).
    image_size: image side for 'imagenet100' (default 144); the other datasets
      have a fixed size and need `None`.
    download: let tfds download a missing tfds dataset (needs internet); Fashion-MNIST
      falls back to that download when its IDX files are missing. 'imagenet100' is
      never downloaded (it needs a manual ILSVRC2012 download).

  Returns:
    A `Source` with `num_examples`, `image_shape`, `num_classes` and `get(indices)`.

  Raises:
    ValueError: for an unknown `name` or `split`, or a misused `image_size`.
    TypeError: if `download` is not a bool.
    FileNotFoundError: if the data is not on disk (and `download` is False) or cannot
      be loaded; the message names the directories looked in and how to get the data.
  """
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset name={name!r}; known: {sorted(DATASETS)}.")
  info = DATASETS[name]
  if split not in _splits(info):
    raise ValueError(
        f"Unknown split={split!r} for dataset {name!r}; use one of {_splits(info)}.")
  if not isinstance(download, bool):
    raise TypeError(f"download must be a bool, got {download!r}.")
  if image_size is not None and name != "imagenet100":
    raise ValueError(
        f"image_size={image_size!r} is only for 'imagenet100'; {name!r} images are "
        f"{info.image_shape}.")

  if name == "synthetic":
    return ArraySource(*synthetic_arrays(split), num_classes=info.num_classes)
  if name == "fashion_mnist":
    return ArraySource(*_fashion_mnist_arrays(split, fashion_mnist_dir, data_dir, download),
                       num_classes=info.num_classes)
  if name == "imagenet100":
    from adacorr.data.imagenet import ImageNet100Source  # pylint: disable=g-import-not-at-top
    return ImageNet100Source(split, data_dir=data_dir,
                             image_size=144 if image_size is None else image_size)
  tfds_name = _TFDS_NAMES[name]
  try:
    images, labels = _tfds.load_arrays(tfds_name, split, data_dir=data_dir, download=download)
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(
        f"Dataset {name!r}: {_tfds.describe_failure(tfds_name, split, data_dir, e)}. Get it "
        "with download=True (a config: `download = True`, or the tfds download flag; "
        f"needs internet), or copy a prepared `{tfds_name}` folder into that data_dir.") from e
  _check_shape(name, images, info)
  return ArraySource(images, labels, num_classes=info.num_classes)


def _check_shape(name: str, images: np.ndarray, info: DatasetInfo) -> None:
  if images.shape[1:] != info.image_shape:
    raise ValueError(
        f"Dataset {name!r}: images of shape {images.shape[1:]}, expected "
        f"{info.image_shape}.")


def _fashion_mnist_arrays(split: str, directory: str | None, data_dir: str | None,
                          download: bool) -> tuple[np.ndarray, np.ndarray]:
  """Fashion-MNIST from IDX files, else from tfds; uint8 `(N, 28, 28, 1)`, int32 `(N,)`."""
  directory = os.fspath(directory or os.environ.get(FASHION_MNIST_ENV)
                        or DEFAULT_FASHION_MNIST_DIR)
  paths = [os.path.join(directory, f) for f in idx.FASHION_MNIST_FILES[split]]
  missing = [p for p in paths if not os.path.isfile(p)]
  if not missing:
    return idx.read_mnist_split(directory, split)
  try:
    images, labels = _tfds.load_arrays("fashion_mnist", split, data_dir=data_dir,
                                       download=download)
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(
        f"Fashion-MNIST: {missing[0]} not found (IDX directory {directory}), and the tfds "
        f"fallback failed: {_tfds.describe_failure('fashion_mnist', split, data_dir, e)}. "
        "Get it with "
        f"{GET_FASHION_MNIST}, or put the four IDX .gz files in a directory and pass "
        f"fashion_mnist_dir= (config.fashion_mnist_dir) or set ${FASHION_MNIST_ENV}, or "
        "pass download=True (a config: `download = True`, or the tfds download flag) to "
        "let tfds download `fashion_mnist` (needs internet).") from e
  _check_shape("fashion_mnist", images, DATASETS["fashion_mnist"])
  return images, labels


def _config_field(config: Any, field: str) -> Any:
  """`config.field`, or None if `config` (an ml_collections config) lacks it."""
  return getattr(config, field, None)


def load_dataset(config_or_name: Any, *, splits: Sequence[str] = ("train", "test"),
                 data_dir: str | None = None, fashion_mnist_dir: str | None = None,
                 download: bool | None = None,
                 image_size: int | None = None) -> tuple[DatasetInfo, tuple[Source, ...]]:
  """A dataset's `DatasetInfo` and its splits `splits`, each a `Source` (see `load_split`).

  Typical use (`config` an ml_collections config of a run)::

    info, (train, test) = data.load_dataset(config)
    info, (test,) = data.load_dataset(config, splits=("test",))

  Args:
    config_or_name: a key of `DATASETS`, or a config with the field `dataset` and the
      optional fields `data_dir`, `fashion_mnist_dir` and `download` (missing or None:
      the defaults below).
    splits: split names to load, e.g. `("train", "test")` (a sequence, not one string).
    data_dir: tfds data dir; overrides `config.data_dir` (None: the config's, else
      tfds's default, `$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
    fashion_mnist_dir: Fashion-MNIST IDX directory; overrides `config.fashion_mnist_dir`
      (None: the config's, else `$ADACORR_FASHION_MNIST_DIR`, else
      `/usr/share/datasets/fashion-mnist`). Ignored by the other datasets.
    download: let tfds download data that is not on disk (needs internet); overrides
      `config.download` (None: the config's, else False).
    image_size: image side for 'imagenet100' only (see `load_split`).

  Returns:
    `(info, sources)`: the `DatasetInfo` and a tuple of one `Source` per entry of
    `splits`, in that order.

  Raises:
    ValueError: for an unknown dataset or split, or empty `splits`.
    TypeError: for a `config_or_name` that is neither a name nor a config with
      `dataset`, a string `splits`, or a non-bool `download`.
    FileNotFoundError: if the data is not on disk (the message says where it looked and
      how to get it).
  """
  if isinstance(config_or_name, str):
    name, where = config_or_name, "config_or_name"
  else:
    name, where = _config_field(config_or_name, "dataset"), "config.dataset"
    if name is None:
      raise TypeError("config_or_name must be a dataset name or a config with a "
                      f"'dataset' field, got {type(config_or_name).__name__}.")
    data_dir = data_dir if data_dir is not None else _config_field(config_or_name, "data_dir")
    if fashion_mnist_dir is None:
      fashion_mnist_dir = _config_field(config_or_name, "fashion_mnist_dir")
    download = download if download is not None else _config_field(config_or_name, "download")
  download = False if download is None else download
  if not isinstance(download, bool):
    raise TypeError(f"download must be a bool, got {download!r}.")
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {where}={name!r}; known: {sorted(DATASETS)}.")
  if isinstance(splits, str):
    raise TypeError(f"splits must be a sequence of split names, got the string {splits!r}; "
                    f"use ({splits!r},).")
  splits = tuple(splits)
  if not splits:
    raise ValueError("splits must name at least one split, got none.")
  for split in splits:  # all checked before any split is read
    if split not in _splits(DATASETS[name]):
      raise ValueError(f"Unknown split={split!r} for dataset {name!r}; use one of "
                       f"{_splits(DATASETS[name])}.")
  sources = tuple(
      load_split(name, split, data_dir=data_dir, fashion_mnist_dir=fashion_mnist_dir,
                 image_size=image_size, download=download) for split in splits)
  return DATASETS[name], sources


def synthetic_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
  """The 'synthetic' dataset: uint8 `(N, 16, 16, 3)`, int32 `(N,)` in 0..9.

  512 'train' / 256 'test' examples, balanced classes. Class `c` is a colour plus
  an oriented sinusoidal grating (angle `c * 18` degrees, random phase), with
  Gaussian noise; all drawn from fixed seeds, so the data never changes.
  """
  num_classes, size = 10, 16
  num = {"train": 512, "test": 256}[split]
  cls_rng = np.random.default_rng(20240601)
  colors = cls_rng.uniform(0.25, 0.75, (num_classes, 3))
  angles = np.pi * np.arange(num_classes) / num_classes
  freqs = cls_rng.uniform(0.6, 1.2, num_classes)  # radians per pixel
  rng = np.random.default_rng({"train": 1, "test": 2}[split])
  labels = rng.permutation(np.arange(num) % num_classes)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
  proj = (np.cos(angles)[labels, None, None] * xx
          + np.sin(angles)[labels, None, None] * yy)
  phase = rng.uniform(0, 2 * np.pi, (num, 1, 1))
  grating = np.cos(freqs[labels, None, None] * proj + phase)
  images = (colors[labels, None, None, :] + 0.2 * grating[..., None]
            + rng.normal(0.0, 0.08, (num, size, size, 3)))
  images = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
  return images, labels.astype(np.int32)
