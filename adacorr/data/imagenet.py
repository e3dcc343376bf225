"""ImageNet-100: every 10th ImageNet-1k class, read with random access from tfds.

How it works:
  * `tfds.data_source('imagenet2012', ...)` gives random access to the records of a
    split prepared in the ArrayRecord format (`tfds build imagenet2012
    --file_format=array_record --manual_dir=...`). Images are read undecoded
    (`tfds.decode.SkipDecoding`) and decoded on the host with Pillow.
  * tfds's label is the index of the class in the sorted WordNet-id list, so the
    kept classes are labels 0, 10, ..., 990, relabelled `label // 10` in 0..99.
  * Which records belong to kept classes is found once per split by reading every
    record's label (a full pass over the split: minutes for the 1.28M training
    images, bound by disk reads). The 1000-class label array is cached as `.npy` in
    `cache_dir` (default `$ADACORR_CACHE_DIR`, else `~/.cache/adacorr`), checked on
    reuse against a few records, and reused afterwards.
  * `get` decodes each JPEG (with Pillow's draft mode, which lets libjpeg decode at
    a reduced scale), resizes its shorter side to `image_size` (bilinear, with
    antialiasing) and center-crops `image_size x image_size`, in a thread pool.
    The training pipeline then takes a random-resized crop (e.g. 128 of 144) and
    evaluation a center crop (`adacorr.data.augment.center_crop`) on device.
"""

from __future__ import annotations

import concurrent.futures
import io
import logging
import os

import numpy as np

from adacorr.data import _tfds
from adacorr.data.sources import check_indices

NUM_CLASSES = 100
CLASS_STRIDE = 10  # keep ImageNet-1k classes 0, 10, ..., 990 (sorted WordNet ids)
SPLITS = {"train": "train", "test": "validation", "validation": "validation"}

_log = logging.getLogger(__name__)


def default_cache_dir() -> str:
  """`$ADACORR_CACHE_DIR`, else `~/.cache/adacorr`."""
  return os.environ.get("ADACORR_CACHE_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "adacorr")


def decode_resize_center_crop(jpeg: bytes, size: int) -> np.ndarray:
  """Decodes an encoded image to uint8 `(size, size, 3)`.

  The shorter side is resized to `size` (bilinear with antialiasing), then the
  central square is kept.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(io.BytesIO(jpeg)) as img:
    img.draft("RGB", (size, size))  # JPEG only: decode at the smallest scale >= size
    img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    img = img.resize((size, size), Image.Resampling.BILINEAR,
                     box=(left, top, left + side, top + side))
    return np.asarray(img, dtype=np.uint8)


def _label(record) -> int:
  return int(np.asarray(record["label"]))


class ImageNet100Source:
  """ImageNet-100 split as a `Source`: uint8 `(n, image_size, image_size, 3)`, labels 0..99.

  Args:
    split: 'train', or 'test' (= 'validation', ImageNet's validation set).
    data_dir: tfds data dir (default: tfds's, i.e. `$TFDS_DATA_DIR` or
      `~/tensorflow_datasets`).
    image_size: side of the square images returned by `get`.
    num_threads: decoding threads (default: the number of CPUs).
    cache_dir: where the label index is cached (default `default_cache_dir()`).
  """

  def __init__(self, split: str = "train", *, data_dir: str | None = None,
               image_size: int = 144, num_threads: int | None = None,
               cache_dir: str | None = None):
    if split not in SPLITS:
      raise ValueError(f"split={split!r} is not a split of 'imagenet100'; use one of "
                       f"{sorted(SPLITS)}.")
    if not isinstance(image_size, int) or image_size <= 0:
      raise ValueError(f"image_size must be a positive int, got {image_size!r}.")
    self.split = split
    self.image_size = image_size
    self.image_shape = (image_size, image_size, 3)
    self.num_classes = NUM_CLASSES
    self._num_threads = num_threads or os.cpu_count() or 1
    self._pool: concurrent.futures.ThreadPoolExecutor | None = None
    try:
      _tfds.check_on_disk("imagenet2012", data_dir)  # before the slow TensorFlow import
      tfds = _tfds.import_tfds()
      self._ds = tfds.data_source(
          "imagenet2012", split=SPLITS[split], data_dir=data_dir, download=False,
          decoders={"image": tfds.decode.SkipDecoding()})
    except (AssertionError, FileNotFoundError, NotImplementedError) as e:
      # tfds reports a missing dataset as a missing TFRECORD one: NotImplementedError.
      raise FileNotFoundError(
          "imagenet2012 (for 'imagenet100') is not prepared in the ArrayRecord format "
          f"in tfds data_dir {_tfds.resolve_data_dir(data_dir)}. "
          "Download the ILSVRC2012 train/val tars by hand and run `tfds build "
          "imagenet2012 --file_format=array_record --manual_dir=DIR_WITH_TARS "
          f"--data_dir=...` (random access needs ArrayRecord). tfds said: {e}") from e
    try:
      info = self._ds.dataset_info
      self._version = str(info.version)
      wnids = list(info.features["label"].names)
    except Exception:  # pylint: disable=broad-except
      self._version, wnids = "unknown", []
    self.class_names = tuple(wnids[::CLASS_STRIDE]) if len(wnids) == 1000 else ()

    labels_1000 = self._labels_1000(cache_dir or default_cache_dir())
    keep = labels_1000 % CLASS_STRIDE == 0
    self._records = np.flatnonzero(keep).astype(np.int64)
    self._labels = (labels_1000[keep] // CLASS_STRIDE).astype(np.int32)
    self.num_examples = int(self._records.size)

  @property
  def labels(self) -> np.ndarray:
    """int32 `(num_examples,)` labels in 0..99 (from the index; no image decoding)."""
    return self._labels

  def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
    if self._pool is None:
      self._pool = concurrent.futures.ThreadPoolExecutor(
          self._num_threads, thread_name_prefix="imagenet100")
    return self._pool

  def _labels_1000(self, cache_dir: str) -> np.ndarray:
    """int16 `(len(split),)` ImageNet-1k labels of every record, cached on disk."""
    n = len(self._ds)
    path = self.index_path = os.path.join(
        cache_dir, f"imagenet2012-{self._version}-{SPLITS[self.split]}-{n}-labels.npy")
    if os.path.exists(path):
      labels = np.load(path)
      probe = np.unique(np.linspace(0, n - 1, num=min(n, 8)).astype(np.int64))
      if labels.shape == (n,) and all(
          _label(self._ds[int(i)]) == labels[i] for i in probe):
        return labels
      _log.warning("Stale ImageNet label index %s; rebuilding it.", path)
    _log.info("Indexing the labels of imagenet2012 %s (%d records), once.",
              SPLITS[self.split], n)
    chunks = [range(s, min(s + 4096, n)) for s in range(0, n, 4096)]
    read = lambda r: np.array([_label(self._ds[i]) for i in r], dtype=np.int16)
    labels = np.concatenate([np.zeros((0,), np.int16)]
                            + list(self._executor().map(read, chunks)))
    try:
      os.makedirs(cache_dir, exist_ok=True)
      tmp = f"{path}.{os.getpid()}.tmp.npy"
      np.save(tmp, labels)
      os.replace(tmp, path)
    except OSError as e:
      _log.warning("Could not cache the ImageNet label index in %s: %s", path, e)
    return labels

  def _load(self, position: int) -> np.ndarray:
    record = self._ds[int(self._records[position])]
    if _label(record) != CLASS_STRIDE * self._labels[position]:
      raise RuntimeError(
          "The cached ImageNet label index does not match the data; delete "
          f"{self.index_path} and retry.")
    return decode_resize_center_crop(bytes(record["image"]), self.image_size)

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples `indices`, in order: uint8 `(n, S, S, 3)`, int32 `(n,)` in 0..99."""
    indices = check_indices(indices, self.num_examples)
    images = np.empty((indices.size,) + self.image_shape, np.uint8)
    for k, image in enumerate(self._executor().map(self._load, indices.tolist())):
      images[k] = image
    return images, self._labels[indices]

  def __repr__(self) -> str:
    return (f"ImageNet100Source(split={self.split!r}, num_examples="
            f"{self.num_examples}, image_shape={self.image_shape})")
