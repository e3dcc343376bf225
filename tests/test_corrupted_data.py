"""Tests of adacorr.data.corrupted: building, resuming and loading <dataset>-C."""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import data
from adacorr.corruptions import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS
from adacorr.data import _tfds, corrupted

NAMES = ("gaussian_noise", "fog")
SEVERITIES = (1, 4)


def small_source(n=20, shape=(8, 8, 3), num_classes=5, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n,) + shape, dtype=np.uint8)
  return data.ArraySource(images, rng.integers(0, num_classes, n), num_classes)


def fake_corrupt(images, name, severity, keys, *, params="cifar10"):
  """Deterministic per image: mixes each image with noise from its own key."""
  assert images.dtype == jnp.float32 and keys.shape == (images.shape[0],)
  assert params in ("cifar10", "imagenet") and name in ALL_CORRUPTIONS
  noise = jax.vmap(lambda k: jax.random.uniform(k, images.shape[1:]))(keys)
  w = severity / 10.0
  return (1 - w) * images + w * noise


def counting_corrupt():
  """`fake_corrupt` that records the (name, severity, batch) of every call."""
  calls = []

  def fn(images, name, severity, keys, *, params="cifar10"):
    calls.append((name, severity, images.shape[0]))
    return fake_corrupt(images, name, severity, keys, params=params)

  fn.calls = calls
  return fn


def build(source, out_dir, **kw):
  kw = {"corruptions": NAMES, "severities": SEVERITIES, "corrupt_fn": fake_corrupt,
        "progress": False, "batch_size": 8, **kw}
  return corrupted.build_corrupted(source, out_dir, **kw)


def read_all(out_dir):
  out = {}
  for f in sorted(os.listdir(out_dir)):
    if f.endswith(".npz"):
      with np.load(os.path.join(out_dir, f)) as d:
        out[f] = (d["images"], d["labels"])
  return out


@pytest.fixture(scope="module")
def tfds():
  return _tfds.import_tfds()


# ---------------------------------------------------------------- build


def test_build_writes_files(tmp_path):
  source = small_source()
  paths = build(source, tmp_path)
  assert set(paths) == {(c, s) for c in NAMES for s in SEVERITIES}
  files = sorted(os.listdir(tmp_path))
  assert files == sorted(["manifest.json"] + [f"{c}_{s}.npz" for c in NAMES
                                               for s in SEVERITIES])
  clean, labels = source.get(np.arange(source.num_examples))
  for (c, s), path in paths.items():
    assert path == os.path.join(tmp_path, f"{c}_{s}.npz")
    with np.load(path) as d:
      assert d["images"].shape == clean.shape and d["images"].dtype == np.uint8
      assert d["labels"].dtype == np.int32
      np.testing.assert_array_equal(d["labels"], labels)
      assert not np.array_equal(d["images"], clean)
      # The fake's output, computed directly with the documented keys.
      keys = corrupted.example_keys(0, c, s, np.arange(source.num_examples))
      want = fake_corrupt(jnp.asarray(clean, jnp.float32) / 255, c, s, keys)
      np.testing.assert_array_equal(d["images"], np.round(np.asarray(want) * 255))
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  assert manifest["seed"] == 0 and manifest["params"] == "cifar10"
  assert manifest["source"]["num_classes"] == 5
  assert manifest["source"]["image_shape"] == [8, 8, 3]


def test_build_grayscale_and_default_corruptions(tmp_path):
  source = small_source(n=3, shape=(4, 4, 1))
  paths = corrupted.build_corrupted(source, tmp_path, corrupt_fn=fake_corrupt,
                                    progress=False)
  assert len(paths) == 15 * 5 and {c for c, _ in paths} == set(BENCHMARK_CORRUPTIONS)
  assert corrupted.load_corrupted(tmp_path, "fog", 5).image_shape == (4, 4, 1)


def test_build_is_deterministic_and_batch_independent(tmp_path):
  source = small_source()
  build(source, tmp_path / "a", batch_size=7)
  ref = read_all(tmp_path / "a")
  build(source, tmp_path / "b", batch_size=7)
  build(source, tmp_path / "c", batch_size=64)
  build(source, tmp_path / "d", batch_size=1)
  for other in "bcd":
    got = read_all(tmp_path / other)
    assert got.keys() == ref.keys()
    for f in ref:
      np.testing.assert_array_equal(got[f][0], ref[f][0])
  build(source, tmp_path / "e", seed=1)
  assert not np.array_equal(read_all(tmp_path / "e")["fog_1.npz"][0], ref["fog_1.npz"][0])
  # Keys differ between corruptions and severities (the fake's noise differs).
  k = lambda c, s: jax.random.key_data(corrupted.example_keys(0, c, s, np.arange(3)))
  assert not np.array_equal(k("fog", 1), k("gaussian_noise", 1))
  assert not np.array_equal(k("fog", 1), k("fog", 2))
  np.testing.assert_array_equal(k("fog", 1)[2], jax.random.key_data(
      corrupted.example_keys(0, "fog", 1, np.array([2])))[0])


def test_build_resumes(tmp_path):
  source = small_source()
  fn = counting_corrupt()
  build(source, tmp_path, corrupt_fn=fn)
  assert len(fn.calls) == 4 * 3  # 4 files x ceil(20 / 8) batches
  assert all(b == 8 for _, _, b in fn.calls)  # the last batch is padded
  before = read_all(tmp_path)
  mtimes = {f: os.stat(tmp_path / f).st_mtime_ns for f in before}

  fn.calls.clear()
  build(source, tmp_path, corrupt_fn=fn)  # all done: nothing to do
  assert fn.calls == []

  os.remove(tmp_path / "fog_4.npz")
  (tmp_path / "fog_1.npz").rename(tmp_path / "fog_1.npz.tmp")  # as if killed mid-write
  build(source, tmp_path, corrupt_fn=fn)
  assert sorted({c[:2] for c in fn.calls}) == [("fog", 1), ("fog", 4)]
  assert not os.path.exists(tmp_path / "fog_1.npz.tmp")
  after = read_all(tmp_path)
  for f in before:
    np.testing.assert_array_equal(after[f][0], before[f][0])
  for f in ("gaussian_noise_1.npz", "gaussian_noise_4.npz"):
    assert os.stat(tmp_path / f).st_mtime_ns == mtimes[f]  # untouched


def test_build_manifest_mismatch(tmp_path):
  source = small_source()
  build(source, tmp_path)
  build(source, tmp_path, batch_size=3, corruptions=("snow",))  # compatible: adds files
  assert os.path.exists(tmp_path / "snow_4.npz")
  with pytest.raises(ValueError, match=r"different configuration \(seed: built with 0, now 1"):
    build(source, tmp_path, seed=1)
  with pytest.raises(ValueError, match="params"):
    build(source, tmp_path, params="imagenet")
  with pytest.raises(ValueError, match="source"):
    build(small_source(seed=1), tmp_path)
  with pytest.raises(ValueError, match="corrupt_fn"):
    build(source, tmp_path, corrupt_fn=counting_corrupt())
  # Files but no manifest: refuse.
  os.remove(tmp_path / "manifest.json")
  with pytest.raises(ValueError, match="no manifest.json"):
    build(source, tmp_path)


def test_build_bad_arguments(tmp_path):
  source = small_source()
  with pytest.raises(ValueError, match="corruptions='blur'"):
    build(source, tmp_path, corruptions=("blur",))
  with pytest.raises(ValueError, match="severities=6"):
    build(source, tmp_path, severities=(6,))
  with pytest.raises(ValueError, match="batch_size"):
    build(source, tmp_path, batch_size=0)
  with pytest.raises(ValueError, match="source must be a Source"):
    build(np.zeros((2, 4, 4, 3), np.uint8), tmp_path)
  bad = lambda images, name, severity, keys, params: images[:, :2]
  with pytest.raises(ValueError, match="corrupt_fn returned shape"):
    build(source, tmp_path / "bad", corrupt_fn=bad)
  assert not [f for f in os.listdir(tmp_path / "bad") if f.endswith(".npz")]


# ---------------------------------------------------------------- load


def test_load_corrupted_round_trip(tmp_path):
  source = small_source()
  build(source, tmp_path)
  loaded = corrupted.load_corrupted(tmp_path, "fog", 4)
  assert isinstance(loaded, data.ArraySource) and isinstance(loaded, data.Source)
  assert (loaded.num_examples, loaded.image_shape, loaded.num_classes) == (20, (8, 8, 3), 5)
  images, labels = loaded.get(np.arange(20))
  with np.load(tmp_path / "fog_4.npz") as d:
    np.testing.assert_array_equal(images, d["images"])
  np.testing.assert_array_equal(labels, source.labels)
  assert corrupted.load_corrupted(tmp_path, "fog", 4, num_classes=7).num_classes == 7


def test_load_corrupted_errors(tmp_path):
  build(small_source(), tmp_path)
  with pytest.raises(FileNotFoundError, match=r"snow_2.npz not found. Build it with .*build_corrupted"):
    corrupted.load_corrupted(tmp_path, "snow", 2)
  with pytest.raises(ValueError, match="name='snowy'"):
    corrupted.load_corrupted(tmp_path, "snowy", 2)
  with pytest.raises(ValueError, match="severity=0"):
    corrupted.load_corrupted(tmp_path, "fog", 0)
  os.remove(tmp_path / "manifest.json")
  with pytest.raises(FileNotFoundError, match="num_classes"):
    corrupted.load_corrupted(tmp_path, "fog", 1)
  assert corrupted.load_corrupted(tmp_path, "fog", 1, num_classes=5).num_examples == 20


# ---------------------------------------------------------------- tfds CIFAR-10-C


def test_tfds_names_match_builder_configs(tfds):
  configs = {c.name for c in tfds.builder_cls("cifar10_corrupted").BUILDER_CONFIGS}
  ours = {corrupted.cifar10_corrupted_config(c, s).split("/")[1]
          for c in ALL_CORRUPTIONS for s in range(1, 6)}
  assert ours == configs
  assert corrupted.cifar10_corrupted_config("glass_blur", 2) == (
      "cifar10_corrupted/frosted_glass_blur_2")
  assert corrupted.cifar10_corrupted_config("elastic_transform", 1) == (
      "cifar10_corrupted/elastic_1")


@pytest.mark.parametrize("name", ["gaussian_noise", "glass_blur", "elastic_transform"])
def test_load_cifar10_corrupted_mock(tfds, tmp_path, name):
  # The config's folder in the data dir is what download=False (the default) looks for
  # before handing over to tfds (mocked: mock_data ignores data_dir).
  tfds_name = corrupted.cifar10_corrupted_config(name, 3)
  os.makedirs(tmp_path / tfds_name)
  with tfds.testing.mock_data(num_examples=30):
    source = corrupted.load_cifar10_corrupted(name, 3, data_dir=str(tmp_path))
  assert isinstance(source, data.ArraySource)
  assert (source.num_examples, source.image_shape, source.num_classes) == (30, (32, 32, 3), 10)
  images, labels = source.get(np.arange(30))
  assert images.dtype == np.uint8 and labels.dtype == np.int32
  assert labels.min() >= 0 and labels.max() < 10


def test_load_cifar10_corrupted_bad_arguments():
  with pytest.raises(ValueError, match="name='frosted_glass_blur'"):
    corrupted.load_cifar10_corrupted("frosted_glass_blur", 1)  # tfds spelling: not ours
  with pytest.raises(ValueError, match="severity=6"):
    corrupted.load_cifar10_corrupted("fog", 6)
  with pytest.raises(ValueError, match="severity=True"):
    corrupted.load_cifar10_corrupted("fog", True)


def test_load_cifar10_corrupted_missing_data(tmp_path):
  with pytest.raises(FileNotFoundError, match="cifar10_corrupted/fog_1"):
    corrupted.load_cifar10_corrupted("fog", 1, data_dir=str(tmp_path / "nothing"),
                                     download=False)


def test_load_cifar10_corrupted_downloads_only_if_asked(tfds, tmp_path):
  """By default nothing is downloaded: missing data fails at once, naming the data dir;
  download=True hands the missing data to tfds (mocked: its download is a no-op)."""
  start = time.time()
  with pytest.raises(FileNotFoundError) as err:
    corrupted.load_cifar10_corrupted("fog", 2, data_dir=str(tmp_path))
  assert time.time() - start < 2
  assert os.path.join(str(tmp_path), "cifar10_corrupted", "fog_2") in str(err.value)
  assert "download=True" in str(err.value) and not os.listdir(tmp_path)
  with tfds.testing.mock_data(num_examples=7):
    source = corrupted.load_cifar10_corrupted("fog", 2, data_dir=str(tmp_path),
                                              download=True)
  assert source.num_examples == 7


# ---------------------------------------------------------------- real corruptions


def test_build_with_real_corruptions(tmp_path):
  """Integration with `adacorr.corruptions.corrupt` (the default corrupt_fn)."""
  test = data.load_split("synthetic", "test")
  images, labels = test.get(np.arange(6))
  source = data.ArraySource(images, labels, test.num_classes)
  paths = corrupted.build_corrupted(source, tmp_path, corruptions=("brightness",
                                    "gaussian_noise"), severities=(1, 5), batch_size=4,
                                    progress=False)
  assert len(paths) == 4
  for (name, severity) in paths:
    got = corrupted.load_corrupted(tmp_path, name, severity)
    out, out_labels = got.get(np.arange(6))
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out_labels, labels)
    assert not np.array_equal(out, images)
  bright = corrupted.load_corrupted(tmp_path, "brightness", 5).images.astype(float)
  assert bright.mean() > images.mean()
  # Deterministic and batch-size independent with the real corruptions too.
  corrupted.build_corrupted(source, tmp_path / "again", corruptions=("gaussian_noise",),
                            severities=(5,), batch_size=6, progress=False)
  np.testing.assert_array_equal(
      corrupted.load_corrupted(tmp_path / "again", "gaussian_noise", 5).images,
      corrupted.load_corrupted(tmp_path, "gaussian_noise", 5).images)
