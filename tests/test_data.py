"""Tests of adacorr.data: datasets, IDX reader, deterministic sharded batching."""

import gzip
import os
import struct
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from adacorr import data, parallel
from adacorr.data import _tfds, idx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="module")
def mesh():
  return parallel.make_mesh()


@pytest.fixture(scope="module")
def synth_train():
  return data.load_split("synthetic", "train")


@pytest.fixture(scope="module")
def tfds():
  return _tfds.import_tfds()


def prepared_data_dir(root, *tfds_names):
  """A tfds data dir holding (empty) folders of `tfds_names`: what `download=False` looks for
  before it hands over to tfds (here `tfds.testing.mock_data`, which ignores data_dir)."""
  for name in tfds_names:
    os.makedirs(os.path.join(root, name), exist_ok=True)
  return str(root)


def run_config(**fields):
  config = ml_collections.ConfigDict()
  config.dataset = "synthetic"
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.fashion_mnist_dir = ml_collections.config_dict.placeholder(str)
  config.update(fields)
  return config


def small_source(n=50, shape=(4, 4, 1), num_classes=7, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n,) + shape, dtype=np.uint8)
  images[0] = 255  # the range [0, 1] is reached
  return data.ArraySource(images, rng.integers(0, num_classes, n), num_classes)


# ---------------------------------------------------------------- registry, loaders


def test_registry():
  assert set(data.DATASETS) == {"cifar10", "cifar100", "cifar10_1", "fashion_mnist",
                                "imagenet100", "synthetic"}
  for name, info in data.DATASETS.items():
    assert info.name == name
    channels = info.image_shape[-1]
    assert len(info.mean) == len(info.std) == channels
    assert all(0 < m < 1 for m in info.mean) and all(0 < s < 1 for s in info.std)
  assert data.DATASETS["cifar10_1"].train_split is None
  assert data.DATASETS["cifar100"].num_classes == 100
  assert data.DATASETS["imagenet100"].num_classes == 100
  with pytest.raises(Exception):  # frozen
    data.DATASETS["cifar10"].num_classes = 3


def test_synthetic(synth_train):
  info = data.DATASETS["synthetic"]
  test = data.load_split("synthetic", "test")
  assert (synth_train.num_examples, test.num_examples) == (512, 256)
  assert synth_train.image_shape == test.image_shape == info.image_shape == (16, 16, 3)
  images, labels = synth_train.get(np.arange(512))
  assert images.dtype == np.uint8 and labels.dtype == np.int32
  assert np.bincount(labels, minlength=10).min() >= 50  # balanced
  again = data.load_split("synthetic", "train")  # deterministic
  np.testing.assert_array_equal(again.get(np.arange(512))[0], images)
  assert not np.array_equal(test.get(np.arange(256))[0], images[:256])
  x = images / 255.0
  np.testing.assert_allclose(x.mean((0, 1, 2)), info.mean, atol=1e-3)
  np.testing.assert_allclose(x.std((0, 1, 2)), info.std, atol=1e-3)


def test_synthetic_is_learnable(synth_train):
  """A tiny CNN (conv, ReLU, mean-pool, dense) lowers its loss a lot in 20 steps."""
  info = data.DATASETS["synthetic"]
  images, labels = synth_train.get(np.arange(synth_train.num_examples))
  x = jnp.asarray((images / 255.0 - np.array(info.mean)) / np.array(info.std),
                  jnp.float32)
  k1, k2 = jax.random.split(jax.random.key(0))
  params = {"w": 0.3 * jax.random.normal(k1, (3, 3, 3, 16)), "b": jnp.zeros(16),
            "v": 0.1 * jax.random.normal(k2, (16, 10))}

  def loss(p):
    h = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    logits = jax.nn.relu(h + p["b"]).mean((1, 2)) @ p["v"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                         labels[:, None], axis=1))

  step = jax.jit(lambda p: jax.tree.map(lambda a, g: a - 0.5 * g, p, jax.grad(loss)(p)))
  first = float(loss(params))
  for _ in range(20):
    params = step(params)
  assert float(loss(params)) < 0.5 * first


def test_unknown_name_and_split():
  with pytest.raises(ValueError, match="name='mnist'"):
    data.load_split("mnist", "train")
  with pytest.raises(ValueError, match="split='val'"):
    data.load_split("synthetic", "val")
  with pytest.raises(ValueError, match="split='train'"):
    data.load_split("cifar10_1", "train")
  with pytest.raises(ValueError, match="image_size"):
    data.load_split("synthetic", "train", image_size=64)


def test_array_source_validation():
  source = small_source()
  images, labels = source.get(np.array([3, 1, 3]))
  np.testing.assert_array_equal(images, source.images[[3, 1, 3]])  # order kept
  np.testing.assert_array_equal(labels, source.labels[[3, 1, 3]])
  with pytest.raises(ValueError, match="indices"):
    source.get(np.array([0, 50]))
  with pytest.raises(ValueError, match="indices"):
    source.get(np.array([-1]))
  with pytest.raises(ValueError, match="labels"):
    data.ArraySource(source.images, np.full(50, 7), num_classes=7)
  with pytest.raises(ValueError, match="images"):
    data.ArraySource(source.images.astype(np.float32), source.labels, num_classes=7)


def test_import_is_light():
  """`import adacorr.data` and the synthetic/IDX paths never import TensorFlow."""
  code = ("import sys, adacorr.data as d; d.load_split('synthetic', 'test'); "
          "assert 'tensorflow' not in sys.modules, 'tf imported'; "
          "assert 'tensorflow_datasets' not in sys.modules, 'tfds imported'")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_first_n():
  source = small_source(n=50)
  head = data.first_n(source, 20)
  assert isinstance(head, data.FirstN) and isinstance(head, data.Source)
  assert (head.num_examples, head.image_shape, head.num_classes) == (20, (4, 4, 1), 7)
  images, labels = head.get(np.array([19, 0, 5]))
  np.testing.assert_array_equal(images, source.images[[19, 0, 5]])
  np.testing.assert_array_equal(labels, source.labels[[19, 0, 5]])
  with pytest.raises(ValueError, match=r"indices must lie in \[0, 20\)"):
    head.get(np.array([20]))  # in the source, but past the first 20
  whole = data.first_n(source, 1000)  # more than there are: all of them
  assert whole.num_examples == 50
  assert data.first_n(head, np.int64(5)).num_examples == 5
  for bad in (0, -3, 2.5, True, "5"):
    with pytest.raises(ValueError, match="n must be a positive int"):
      data.first_n(source, bad)
  with pytest.raises(TypeError, match="source must be a Source"):
    data.first_n(np.zeros((5, 4, 4, 1)), 3)
  # Batching reads only the first n.
  batches = list(data.eval_batches(head, global_batch_size=8, mesh=parallel.make_mesh()))
  assert float(sum(b["mask"].sum() for b in batches)) == 20


def test_load_dataset_name_and_config():
  info, (train, test) = data.load_dataset("synthetic")
  assert info is data.DATASETS["synthetic"]
  assert (train.num_examples, test.num_examples) == (512, 256)
  np.testing.assert_array_equal(train.get(np.arange(4))[0],
                                data.load_split("synthetic", "train").get(np.arange(4))[0])
  info2, (test2,) = data.load_dataset(run_config(), splits=("test",))
  assert info2 is info and test2.num_examples == 256
  np.testing.assert_array_equal(test2.get(np.arange(256))[1], test.get(np.arange(256))[1])
  # Order follows `splits`.
  _, (first, second) = data.load_dataset(run_config(), splits=["test", "train"])
  assert (first.num_examples, second.num_examples) == (256, 512)


def test_load_dataset_errors():
  with pytest.raises(ValueError, match="config.dataset='mnist'"):
    data.load_dataset(run_config(dataset="mnist"))
  with pytest.raises(ValueError, match="config_or_name='mnist'"):
    data.load_dataset("mnist")
  with pytest.raises(TypeError, match="'dataset' field"):
    data.load_dataset(ml_collections.ConfigDict({"data_dir": "/tmp"}))
  with pytest.raises(TypeError, match=r"use \('test',\)"):
    data.load_dataset("synthetic", splits="test")
  with pytest.raises(ValueError, match="at least one split"):
    data.load_dataset("synthetic", splits=())
  with pytest.raises(TypeError, match="download must be a bool"):
    data.load_dataset(run_config(download="yes"))
  with pytest.raises(TypeError, match="download must be a bool"):
    data.load_split("synthetic", "test", download=1)


def test_load_dataset_checks_every_split_first(monkeypatch):
  """A bad split fails before any split is read."""
  calls = []
  monkeypatch.setattr(_tfds, "load_arrays", lambda *a, **k: calls.append(a))
  with pytest.raises(ValueError, match="split='train'"):
    data.load_dataset("cifar10_1", splits=("test", "train"))
  assert calls == []


def test_load_dataset_fields_and_overrides(tmp_path, monkeypatch):
  """config.data_dir / fashion_mnist_dir / download reach the loaders; keyword arguments
  override them; `download` is False unless asked."""
  (tmp_path / "idx").mkdir()
  written = write_mnist(tmp_path / "idx")
  config = run_config(dataset="fashion_mnist", fashion_mnist_dir=str(tmp_path / "idx"))
  info, (train, test) = data.load_dataset(config)
  assert info.name == "fashion_mnist" and (train.num_examples, test.num_examples) == (5, 3)
  np.testing.assert_array_equal(test.get(np.arange(3))[1], written["test"][1])
  with pytest.raises(FileNotFoundError, match="no-idx"):  # the keyword wins over the field
    data.load_dataset(config, fashion_mnist_dir=str(tmp_path / "no-idx"),
                      data_dir=str(tmp_path / "tfds"), splits=("test",))

  calls = []

  def fake_load(name, split, *, data_dir, download=False):
    calls.append((name, split, data_dir, download))
    return np.zeros((2, 32, 32, 3), np.uint8), np.zeros(2, np.int32)

  monkeypatch.setattr(_tfds, "load_arrays", fake_load)
  data.load_dataset(run_config(dataset="cifar10", data_dir="/d1"), splits=("test",))
  data.load_dataset(run_config(dataset="cifar10", data_dir="/d1", download=True),
                    splits=("test",))
  data.load_dataset(run_config(dataset="cifar10", data_dir="/d1", download=True),
                    splits=("train",), data_dir="/d2", download=False)
  data.load_dataset("cifar10_1", splits=("test",), download=True)
  assert calls == [("cifar10", "test", "/d1", False), ("cifar10", "test", "/d1", True),
                   ("cifar10", "train", "/d2", False), ("cifar10_1/v6", "test", None, True)]


OFFLINE_CODE = textwrap.dedent("""
    import sys, time
    from adacorr import data
    start = time.time()
    try:
      data.load_dataset({arg}, splits=("test",))
    except FileNotFoundError as e:
      print(str(e))
    else:
      raise AssertionError("no FileNotFoundError")
    assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'
    assert time.time() - start < 5, time.time() - start
""")


def run_offline(arg, env_updates):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **env_updates)
  env.pop("ADACORR_FASHION_MNIST_DIR", None)
  result = subprocess.run([sys.executable, "-c", OFFLINE_CODE.format(arg=arg)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.mark.parametrize("name,tfds_folder", [("cifar10", "cifar10"),
                                              ("cifar10_1", os.path.join("cifar10_1", "v6"))])
def test_tfds_dataset_not_on_disk_fails_fast(tmp_path, name, tfds_folder):
  """An empty data dir: a FileNotFoundError in well under a second, with no TensorFlow
  import and no download, naming the folder looked for and how to get the data."""
  empty = tmp_path / "empty"
  empty.mkdir()
  start = time.time()
  with pytest.raises(FileNotFoundError) as err:
    data.load_dataset(name, splits=("test",), data_dir=str(empty))
  assert time.time() - start < 2
  message = str(err.value)
  assert os.path.join(str(empty), tfds_folder) in message
  assert "download=True" in message and "download flag" in message
  assert not os.listdir(empty)  # nothing downloaded or created
  # Default data dir ($TFDS_DATA_DIR), in a fresh process: TensorFlow is never imported.
  message = run_offline(repr(name), {"TFDS_DATA_DIR": str(empty)})
  assert os.path.join(str(empty), tfds_folder) in message


def test_fashion_mnist_not_on_disk_fails_fast(tmp_path):
  empty = tmp_path / "tfds"
  empty.mkdir()
  arg = (f"dict(dataset='fashion_mnist', data_dir={str(empty)!r}, "
         f"fashion_mnist_dir={str(tmp_path / 'idx')!r})")
  # A plain object with the config's fields works too (fields read as attributes).
  arg = f"type('Config', (), {arg})"
  message = run_offline(arg, {})
  assert str(tmp_path / "idx") in message  # the IDX directory
  assert os.path.join(str(empty), "fashion_mnist") in message  # the tfds folder
  assert "make data" in message and "apt-get install dataset-fashion-mnist" in message
  assert "download=True" in message and "fashion_mnist_dir" in message
  assert not os.listdir(empty)


def test_imagenet100_not_on_disk_fails_fast(tmp_path):
  start = time.time()
  with pytest.raises(FileNotFoundError) as err:
    data.load_split("imagenet100", "test", data_dir=str(tmp_path))
  assert time.time() - start < 2
  assert str(tmp_path) in str(err.value) and "tfds build imagenet2012" in str(err.value)


# ---------------------------------------------------------------- IDX / Fashion-MNIST


def write_idx(path, array, code=0x08, magic=None):
  array = np.asarray(array)
  header = magic if magic is not None else bytes([0, 0, code, array.ndim])
  header += struct.pack(f">{array.ndim}I", *array.shape)
  dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
           0x0E: ">f8"}[code]
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(dtype).tobytes())


def write_mnist(directory, n_train=5, n_test=3, seed=0):
  rng = np.random.default_rng(seed)
  out = {}
  for split, n in (("train", n_train), ("test", n_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    image_file, label_file = idx.FASHION_MNIST_FILES[split]
    write_idx(os.path.join(directory, image_file), images)
    write_idx(os.path.join(directory, label_file), labels)
    out[split] = (images, labels)
  return out


@pytest.mark.parametrize("code,dtype,scale,offset", [
    (0x08, np.uint8, 10, 0), (0x09, np.int8, 5, -60), (0x0B, np.int16, 1000, -12000),
    (0x0C, np.int32, 100_000, -10**6), (0x0D, np.float32, 0.5, -3),
    (0x0E, np.float64, 0.25, -3)])
def test_idx_round_trip(tmp_path, code, dtype, scale, offset):
  values = np.arange(24).reshape(2, 3, 4) * scale + offset  # uint8 up to 230
  path = tmp_path / "x-idx3.gz"
  write_idx(path, values, code)
  array = idx.read_idx(path)
  assert array.dtype == np.dtype(dtype) and array.shape == (2, 3, 4)
  np.testing.assert_array_equal(array, values.astype(dtype))


def test_idx_errors(tmp_path):
  bad = tmp_path / "bad-magic.gz"
  write_idx(bad, np.zeros((2, 2), np.uint8), magic=bytes([0x1F, 0, 8, 2]))
  with pytest.raises(ValueError, match="magic"):
    idx.read_idx(bad)
  bad_code = tmp_path / "bad-code.gz"
  write_idx(bad_code, np.zeros((2, 2), np.uint8), magic=bytes([0, 0, 0x07, 2]))
  with pytest.raises(ValueError, match="magic"):
    idx.read_idx(bad_code)
  truncated = tmp_path / "truncated.gz"
  with gzip.open(truncated, "wb") as f:
    f.write(bytes([0, 0, 8, 2]) + struct.pack(">2I", 3, 3) + bytes(8))  # 9 needed
  with pytest.raises(ValueError, match="data bytes"):
    idx.read_idx(truncated)
  not_gzip = tmp_path / "plain.gz"
  not_gzip.write_bytes(b"hello world")
  with pytest.raises(ValueError):
    idx.read_idx(not_gzip)


def test_fashion_mnist_from_dir_and_env(tmp_path, monkeypatch):
  written = write_mnist(tmp_path)
  for split in ("train", "test"):
    source = data.load_split("fashion_mnist", split, fashion_mnist_dir=str(tmp_path))
    images, labels = source.get(np.arange(source.num_examples))
    np.testing.assert_array_equal(images, written[split][0][..., None])
    np.testing.assert_array_equal(labels, written[split][1])
    assert source.image_shape == (28, 28, 1) and source.num_classes == 10
  monkeypatch.setenv("ADACORR_FASHION_MNIST_DIR", str(tmp_path))
  assert data.load_split("fashion_mnist", "test").num_examples == 3
  # Labels and images files that disagree in length are rejected.
  write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
  with pytest.raises(ValueError, match="labels"):
    data.load_split("fashion_mnist", "test")


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                    reason=f"{FASHION_MNIST_DIR} absent (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist():
  for split, n in (("train", 60000), ("test", 10000)):
    source = data.load_split("fashion_mnist", split, fashion_mnist_dir=FASHION_MNIST_DIR)
    assert source.num_examples == n and source.image_shape == (28, 28, 1)
    images, labels = source.get(np.arange(n))
    assert images.dtype == np.uint8 and labels.dtype == np.int32
    np.testing.assert_array_equal(np.unique(labels), np.arange(10))
    if split == "train":
      info = data.DATASETS["fashion_mnist"]
      np.testing.assert_allclose(images.mean() / 255, info.mean[0], atol=1e-3)
      np.testing.assert_allclose(images.std() / 255, info.std[0], atol=1e-3)


def test_fashion_mnist_missing(tmp_path, monkeypatch):
  """No IDX files and a tfds fallback that fails (offline) -> FileNotFoundError."""
  real_load = _tfds.load_arrays
  empty = tmp_path / "tfds"
  empty.mkdir()
  calls = []

  def offline_load(name, split, *, data_dir, download=True):
    calls.append(name)
    return real_load(name, split, data_dir=str(empty), download=False)

  monkeypatch.setattr(_tfds, "load_arrays", offline_load)
  missing = tmp_path / "no-such-dir"
  with pytest.raises(FileNotFoundError) as err:
    data.load_split("fashion_mnist", "train", fashion_mnist_dir=str(missing))
  message = str(err.value)
  assert str(missing) in message and "train-images-idx3-ubyte.gz" in message
  assert "apt-get install dataset-fashion-mnist" in message
  assert "ADACORR_FASHION_MNIST_DIR" in message
  assert calls == ["fashion_mnist"]


# ---------------------------------------------------------------- tfds (mocked)


@pytest.mark.parametrize("name,split,num_classes", [
    ("cifar10", "train", 10), ("cifar10", "test", 10), ("cifar100", "train", 100),
    ("cifar10_1", "test", 10)])
def test_tfds_loaders(tfds, tmp_path, name, split, num_classes):
  data_dir = prepared_data_dir(tmp_path, {"cifar10_1": "cifar10_1/v6"}.get(name, name))
  with tfds.testing.mock_data(num_examples=40):
    source = data.load_split(name, split, data_dir=data_dir)
  assert isinstance(source, data.ArraySource)
  assert source.num_examples == 40 and source.num_classes == num_classes
  assert source.image_shape == (32, 32, 3) == data.DATASETS[name].image_shape
  images, labels = source.get(np.arange(40))
  assert images.dtype == np.uint8 and labels.dtype == np.int32
  assert labels.min() >= 0 and labels.max() < num_classes
  assert images.max() > 0


def test_tfds_download_flag(tfds, tmp_path):
  """download=True skips the on-disk check and lets tfds prepare the data (mocked here:
  `download_and_prepare` is a no-op); load_dataset passes a config's `download` on."""
  empty = str(tmp_path)
  with tfds.testing.mock_data(num_examples=12):
    info, (source,) = data.load_dataset(run_config(dataset="cifar100", data_dir=empty,
                                                   download=True), splits=("test",))
    assert info.num_classes == 100 and source.num_examples == 12
    with pytest.raises(FileNotFoundError, match="download=True"):
      data.load_dataset(run_config(dataset="cifar100", data_dir=empty), splits=("test",))


def test_imagenet100(tfds, tmp_path, tmp_path_factory, monkeypatch, mesh):
  monkeypatch.setenv("ADACORR_CACHE_DIR", str(tmp_path))
  with tfds.testing.mock_data(num_examples=200):
    raw = tfds.data_source("imagenet2012", split="train",
                           decoders={"image": tfds.decode.SkipDecoding()})
    raw_labels = np.array([int(raw[i]["label"]) for i in range(len(raw))])
    data_dir = prepared_data_dir(tmp_path_factory.mktemp("tfds"), "imagenet2012")
    source = data.load_split("imagenet100", "train", image_size=24, data_dir=data_dir)
    kept = raw_labels[raw_labels % 10 == 0]
    assert 0 < source.num_examples == kept.size < 200
    assert source.num_classes == 100 and source.image_shape == (24, 24, 3)
    assert os.listdir(tmp_path)  # label index cached
    order = np.arange(source.num_examples)[::-1]
    images, labels = source.get(order)
    assert images.shape == (kept.size, 24, 24, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.max() < 100
    np.testing.assert_array_equal(labels, kept[order] // 10)
    assert len(source.class_names) == 100 and source.class_names[1] == (
        raw.dataset_info.features["label"].names[10])
    # Second construction reuses the cached index; the test split is 'validation'.
    again = data.load_split("imagenet100", "train", image_size=24, data_dir=data_dir)
    np.testing.assert_array_equal(again.get(order)[0], images)
    test = data.load_split("imagenet100", "test", data_dir=data_dir)
    assert test.image_shape == (144, 144, 3) == data.DATASETS["imagenet100"].image_shape
    batch = next(iter(data.eval_batches(test, global_batch_size=8, mesh=mesh)))
    assert batch["image"].shape == (8, 144, 144, 3)
    assert 0.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0


def test_imagenet100_decode():
  """The host decode keeps the central square of the shorter-side-resized image."""
  from PIL import Image
  import io
  image = np.zeros((60, 90, 3), np.uint8)
  image[:, :15] = 255  # left and right thirds of the excess width are cut off
  image[:, 75:] = 255
  image[:, 15:75, 1] = 200
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  from adacorr.data.imagenet import decode_resize_center_crop
  out = decode_resize_center_crop(buffer.getvalue(), 30)
  assert out.shape == (30, 30, 3) and out.dtype == np.uint8
  # (Pillow's filter reads just past the box: the outermost columns may blend.)
  np.testing.assert_array_equal(out[:, 1:-1, 0], 0)
  np.testing.assert_array_equal(out[:, 1:-1, 1], 200)


# ---------------------------------------------------------------- batching


def test_batch_indices_epochs():
  n, b = 103, 10
  per_epoch = n // b
  first = np.concatenate([data.batch_indices(n, b, s, seed=3) for s in range(per_epoch)])
  assert first.shape == (per_epoch * b,) and len(np.unique(first)) == first.size
  assert first.min() >= 0 and first.max() < n
  second = np.concatenate([data.batch_indices(n, b, s, seed=3)
                           for s in range(per_epoch, 2 * per_epoch)])
  assert len(np.unique(second)) == second.size
  assert not np.array_equal(first, second)  # a new order each epoch
  np.testing.assert_array_equal(data.batch_indices(n, b, 4, seed=3),
                                data.batch_indices(n, b, 4, seed=3))
  assert not np.array_equal(data.batch_indices(n, b, 4, seed=3),
                            data.batch_indices(n, b, 5, seed=3))
  assert not np.array_equal(data.batch_indices(n, b, 4, seed=3),
                            data.batch_indices(n, b, 4, seed=4))
  assert data.steps_per_epoch(small_source(n=103), 10) == 10
  with pytest.raises(ValueError, match="global_batch_size"):
    data.batch_indices(n, n + 1, 0, seed=0)
  with pytest.raises(ValueError, match="seed"):
    data.batch_indices(n, b, 0, seed=-1)


def test_train_batches(mesh):
  source = small_source(n=50)
  batches = data.train_batches(source, global_batch_size=8, seed=1, mesh=mesh)
  got = [next(batches) for _ in range(8)]  # crosses the epoch boundary (6 per epoch)
  batches.close()
  for step, batch in enumerate(got):
    assert set(batch) == {"image", "label"}
    image, label = batch["image"], batch["label"]
    assert isinstance(image, jax.Array) and image.dtype == jnp.float32
    assert image.shape == (8, 4, 4, 1) and label.shape == (8,) and label.dtype == jnp.int32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    want_images, want_labels = source.get(data.batch_indices(50, 8, step, seed=1))
    np.testing.assert_allclose(np.asarray(image), want_images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(label), want_labels)
    for array in (image, label):
      assert array.sharding.spec == P(parallel.DATA_AXIS)
      assert array.sharding.mesh.shape == mesh.shape
  # Same seed: same batches, with or without prefetching; another seed differs.
  inline = data.train_batches(source, global_batch_size=8, seed=1, mesh=mesh, prefetch=0)
  for batch in got:
    np.testing.assert_array_equal(next(inline)["label"], batch["label"])
  other = next(data.train_batches(source, global_batch_size=8, seed=2, mesh=mesh))
  assert not np.array_equal(np.asarray(other["image"]), np.asarray(got[0]["image"]))


def test_train_batches_resume(mesh, synth_train):
  fresh = data.train_batches(synth_train, global_batch_size=64, seed=7, mesh=mesh)
  reference = [next(fresh) for _ in range(11)]
  for k in (0, 5, 10):  # 10 is in the second epoch (8 steps per epoch)
    resumed = next(data.train_batches(synth_train, global_batch_size=64, seed=7,
                                      mesh=mesh, start_step=k))
    np.testing.assert_array_equal(np.asarray(resumed["image"]),
                                  np.asarray(reference[k]["image"]))
    np.testing.assert_array_equal(np.asarray(resumed["label"]),
                                  np.asarray(reference[k]["label"]))


def test_train_batches_validation(mesh):
  source = small_source(n=20)
  for bad in (0, -8, 2.5):
    with pytest.raises(ValueError, match="global_batch_size"):
      data.train_batches(source, global_batch_size=bad, seed=0, mesh=mesh)
  with pytest.raises(ValueError, match="global_batch_size=24 is larger"):
    data.train_batches(source, global_batch_size=24, seed=0, mesh=mesh)
  with pytest.raises(ValueError, match="start_step"):
    data.train_batches(source, global_batch_size=4, seed=0, mesh=mesh, start_step=-1)
  with pytest.raises(ValueError, match="prefetch"):
    data.train_batches(source, global_batch_size=4, seed=0, mesh=mesh, prefetch=-1)


def test_prefetch_propagates_errors(mesh):
  class Broken(data.ArraySource):
    def get(self, indices):
      raise OSError("disk on fire")

  source = small_source(n=20)
  broken = Broken(source.images, source.labels, source.num_classes)
  with pytest.raises(OSError, match="disk on fire"):
    next(data.train_batches(broken, global_batch_size=4, seed=0, mesh=mesh))


@pytest.mark.parametrize("n,b", [(50, 8), (48, 8), (3, 8)])
def test_eval_batches(mesh, n, b):
  source = small_source(n=n, num_classes=5)
  batches = list(data.eval_batches(source, global_batch_size=b, mesh=mesh))
  assert len(batches) == -(-n // b)
  images = np.concatenate([np.asarray(x["image"]) for x in batches])
  labels = np.concatenate([np.asarray(x["label"]) for x in batches])
  mask = np.concatenate([np.asarray(x["mask"]) for x in batches])
  assert images.shape == (len(batches) * b, 4, 4, 1) and mask.dtype == np.float32
  np.testing.assert_array_equal(mask, np.arange(len(mask)) < n)
  np.testing.assert_allclose(images[:n], source.images / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(labels[:n], source.labels)
  assert not images[n:].any()
  for batch in batches:
    assert batch["image"].dtype == jnp.float32 and batch["label"].dtype == jnp.int32
    for array in batch.values():
      assert array.sharding.spec == P(parallel.DATA_AXIS)


def test_eight_devices():
  """In a subprocess with 8 CPU devices: each device holds its rows of the batch;
  augmentation of the sharded batch equals that on one device."""
  code = textwrap.dedent("""
      import numpy as np, jax
      from adacorr import data, parallel
      assert jax.device_count() == 8
      mesh = parallel.make_mesh()
      source = data.load_split('synthetic', 'train')
      batch = next(data.train_batches(source, global_batch_size=16, seed=0, mesh=mesh))
      want = source.get(data.batch_indices(512, 16, 0, seed=0))[0] / 255.0
      image = batch['image']
      assert len(image.addressable_shards) == 8
      devices = set()
      for shard in image.addressable_shards:
        assert shard.data.shape == (2, 16, 16, 3), shard.data.shape
        np.testing.assert_allclose(np.asarray(shard.data), want[shard.index], rtol=1e-6)
        devices.add(shard.device)
      assert len(devices) == 8
      assert len(batch['label'].addressable_shards) == 8
      # Augmenting the sharded batch gives the same result as on one device.
      from adacorr.data import augment
      key = jax.random.key(0)
      for fn in (augment.pad_crop_flip, lambda x, k: augment.random_resized_crop_flip(x, k, size=12)):
        sharded = jax.jit(fn)(image, key)
        single = fn(jax.device_put(np.asarray(image), jax.devices()[0]), key)
        np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), atol=1e-6)
      ev = list(data.eval_batches(data.load_split('synthetic', 'test'),
                                  global_batch_size=40, mesh=mesh))
      assert len(ev) == 7 and float(sum(e['mask'].sum() for e in ev)) == 256
      assert len(ev[-1]['mask'].addressable_shards) == 8
      try:
        data.train_batches(source, global_batch_size=12, seed=0, mesh=mesh)
      except ValueError as e:
        assert 'global_batch_size=12' in str(e)
      else:
        raise AssertionError('no error for 12 examples on 8 devices')
      print('OK')
  """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith("OK")
