"""DeepAugment: network distortions (adacorr/augment/deepaugment.py), the copy writer
(adacorr/run/deepaugment.py, python -m experiments.make_deepaugment) and the training sources (adacorr/data/deepaugment.py).

Compile-bound on CPU: every test shares the compiled `jit_distort_params` /
`jit_distorted_apply` of one tiny EDSR and one CAE at 8x16x16x3, as the writer does."""

from __future__ import annotations

import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import data as data_lib
from adacorr.augment import deepaugment as da
from adacorr.data import deepaugment as da_data
from adacorr.data.sources import ArraySource
from adacorr.models.corruption import CAE, EDSR
from adacorr.models.corruption import cae as cae_lib
from adacorr.run import deepaugment as run_deepaugment

B = 8
SHAPE = (B, 16, 16, 3)
TINY_EDSR = dict(features=8, num_blocks=1)
NETS = {"edsr": EDSR(**TINY_EDSR), "cae": CAE()}


def _random_params(net, x_shape, gain, seed=0):
  """Kernels ~ U(+-sqrt(gain / fan_in)), biases ~ U(+-0.1), drawn with NumPy (no jax RNG
  compiles). The CAE gets He scales (gain 6; with PyTorch's, a random CAE's output hardly
  depends on its input) and an output bias of 0.5 (else its output is clipped to 0)."""
  shapes = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), jnp.zeros(x_shape)))["params"]
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = jax.tree_util.keystr(path)
    if len(s.shape) == 4:
      value = rng.uniform(-1, 1, s.shape) * np.sqrt(gain / np.prod(s.shape[:-1]))
    else:
      value = rng.uniform(-0.1, 0.1, s.shape)
    if "d_up_conv_3" in name and "conv_2" in name and "bias" in name:
      value = np.full(s.shape, 0.5)
    return jnp.asarray(value, jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.lru_cache(maxsize=None)
def _setup(name):
  net = NETS[name]
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, SHAPE).astype(np.float32))
  return net, _random_params(net, SHAPE, gain=1.0 if name == "edsr" else 6.0), x


def _distort_with_op(params, key, name, op):
  """`distort_params` with the single op `op`, through the compiled function that
  `jit_deepaugment_batch` uses (EDSR: padded with no-ops to its 3 draws)."""
  ops = [op] + [da.EDSR_WEIGHT_OPS] * (da.EDSR_WEIGHT_DRAWS - 1) if name == "edsr" else [op]
  return da.jit_distort_params(params, key, net=name, ops=jnp.array(ops, jnp.int32))


def _leaves_changed(a, b):
  return [jax.tree_util.keystr(path) for (path, x), y in
          zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b))
          if not np.array_equal(np.asarray(x), np.asarray(y))]


@pytest.mark.parametrize("name", ["edsr", "cae"])
def test_every_weight_op_changes_params_and_keeps_the_tree(name):
  _, params, _ = _setup(name)
  num_ops = da.EDSR_WEIGHT_OPS if name == "edsr" else da.CAE_WEIGHT_OPS
  for op in range(num_ops):
    out = _distort_with_op(params, jax.random.PRNGKey(op), name, op)
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(params)
    for x, y in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(out)):
      assert x.shape == y.shape and x.dtype == y.dtype
      assert np.all(np.isfinite(np.asarray(y)))
    changed = _leaves_changed(params, out)
    assert changed, f"op {op} changed nothing"
    if name == "edsr":  # the reference only distorts the residual blocks
      assert all("body_" in c for c in changed), (op, changed)
    else:  # layers 8..15 (e_conv_3 .. d_block_3/conv_1)
      allowed = {"/".join(da.CAE_LAYERS[i]) for i in range(8, 16)}
      assert {"/".join(c.strip("[]'").split("']['")[:-1]) for c in changed} <= allowed
  out = _distort_with_op(params, jax.random.PRNGKey(0), name, 99)  # padding id: a no-op
  assert not _leaves_changed(params, out)


def test_reference_weight_ops_exactly():
  """A few EDSR ops against their definition (one block: every draw hits it)."""
  _, params, _ = _setup("edsr")
  k = jax.random.PRNGKey(0)
  w1 = np.asarray(params["body_0"]["conv1"]["kernel"])  # (3, 3, in, out)
  b1 = np.asarray(params["body_0"]["conv1"]["bias"])
  w2 = np.asarray(params["body_0"]["conv2"]["kernel"])
  out = _distort_with_op(params, k, "edsr", 1)  # negate conv1
  np.testing.assert_array_equal(out["body_0"]["conv1"]["kernel"], -w1)
  np.testing.assert_array_equal(out["body_0"]["conv1"]["bias"], -b1)
  out = _distort_with_op(params, k, "edsr", 0)  # flip the output channels
  np.testing.assert_array_equal(out["body_0"]["conv2"]["kernel"], w2[..., ::-1])
  out = _distort_with_op(params, k, "edsr", 4)  # Laplacian taps on conv1
  lap = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)[:, :, None, None]
  np.testing.assert_allclose(out["body_0"]["conv1"]["kernel"], w1 * lap)
  out = _distort_with_op(params, k, "edsr", 16)  # one tap per (in, out) filter survives
  kept = [np.count_nonzero(np.asarray(out["body_0"][c]["kernel"]).reshape(9, -1), axis=0)
          for c in ("conv1", "conv2")]
  assert any(np.all(c == 1) for c in kept)


@pytest.mark.parametrize("name", ["edsr", "cae"])
def test_undistorted_forward_equals_the_net(name):
  net, params, x = _setup(name)
  ours = da.jit_distorted_apply(net, params, x, None)
  ref = jax.jit(lambda p, x: net.apply({"params": p}, x))(params, x)
  np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_every_activation_op_changes_the_output():
  """Each forced per-example op against 'none' with the same key (so the same masks and,
  for the CAE, the same stochastic binarisation); 'none' is the net's plain forward (for
  the CAE: with the stochastic binarisation only)."""
  k = jax.random.PRNGKey(1)
  full = lambda v: jnp.full((B,), v, jnp.int32)
  net, params, x = _setup("edsr")
  edsr = jax.jit(lambda p, x, k, pre, body: da.edsr_distorted_apply(
      net, p, x, k, pre_ops=pre, body_ops=body))
  none = np.asarray(edsr(params, x, k, full(4), full(5)))  # pre 4 / body 5: none
  np.testing.assert_allclose(none, da.jit_distorted_apply(net, params, x, None), atol=1e-6)
  for pre, body in [(1, 5), (2, 5), (3, 5), (4, 1), (4, 2), (4, 3), (4, 4)]:
    out = np.asarray(edsr(params, x, k, full(pre), full(body)))
    assert out.shape == SHAPE and out.min() >= 0 and out.max() <= 1
    assert np.mean((out - none) ** 2) > 1e-6, f"pre {pre} / body {body} changed nothing"
    if (pre, body) == (4, 1):  # negates the body's input (block 5 * 1 // 16 = 0 of 1)
      negated = net.apply({"params": params}, x,
                          hook=lambda point, v, _: -v if point == "trunk_0" else v)
      np.testing.assert_allclose(out, negated, atol=1e-6)
  net, params, x = _setup("cae")
  cae = jax.jit(lambda p, x, k, ops: da.cae_distorted_apply(net, p, x, k, latent_ops=ops))
  none = np.asarray(cae(params, x, k, full(da.CAE_LATENT_OPS)))  # ids >= 9: none
  seen = {}

  def binarize_only(point, v, _):  # the stochastic binarisation with the key's bits
    seen.setdefault(point, v)
    if point != "code":
      return v
    return cae_lib.binarize(seen["ec3"], jax.random.split(k, 3)[2])  # k_op, k_lat, k_bin

  np.testing.assert_allclose(none, net.apply({"params": params}, x, hook=binarize_only),
                             atol=1e-6)
  for op in range(da.CAE_LATENT_OPS):
    out = np.asarray(cae(params, x, k, full(op)))
    assert out.shape == SHAPE and out.min() >= 0 and out.max() <= 1
    assert np.mean((out - none) ** 2) > 1e-6, f"latent op {op} changed nothing"


PINNED_MEANS = {
    "edsr": [0.432974, 0.435316, 0.429981, 0.429829, 0.432928, 0.431955, 0.433193, 0.427561],
    "cae": [0.565204, 0.571805, 0.570365, 0.578264, 0.560857, 0.575162, 0.564957, 0.569371],
}


@pytest.mark.parametrize("name", ["edsr", "cae"])
def test_deepaugment_batch_distorts_deterministically_per_key(name):
  net, params, x = _setup(name)
  if name == "edsr":  # the pinned means were computed with the downsample-first forward
    net = net.clone(resample="down_then_sr")
  run = functools.partial(da.jit_deepaugment_batch, net, params, x)
  clean = np.asarray(da.jit_distorted_apply(net, params, x, None))
  a, a2, b = (np.asarray(run(jax.random.PRNGKey(s))) for s in (0, 0, 1))
  assert a.shape == SHAPE and a.dtype == np.float32
  assert a.min() >= 0 and a.max() <= 1 and np.all(np.isfinite(a))
  np.testing.assert_array_equal(a, a2)
  assert not np.array_equal(a, b)
  # Pinned: the per-example means of key 0's batch, as computed by the module's earlier
  # re-implementation of the EDSR / CAE forwards (DeepAugment's results must not change).
  np.testing.assert_allclose(a.mean(axis=(1, 2, 3)), PINNED_MEANS[name], atol=2e-4)
  per_example = np.mean((a - clean) ** 2, axis=(1, 2, 3))
  assert np.mean(per_example > 1e-5) >= 0.5, per_example  # most examples are distorted
  # Per-example activation draws: copies of one image come out differently.
  same = jnp.broadcast_to(x[:1], x.shape)
  out = np.asarray(da.jit_distorted_apply(net, params, same, jax.random.PRNGKey(3)))
  assert len({out[i].tobytes() for i in range(B)}) > 1


def test_bad_arguments_raise():
  net, params, x = _setup("edsr")
  with pytest.raises(ValueError, match="net="):
    da.distort_params(params, jax.random.PRNGKey(0), net="vqvae")
  with pytest.raises(ValueError, match="not a CAE parameter tree"):
    da.distort_params(params, jax.random.PRNGKey(0), net="cae")
  with pytest.raises(ValueError, match="EDSR or a CAE"):
    da.deepaugment_batch(object(), params, x, jax.random.PRNGKey(0))


# --- sources ----------------------------------------------------------------------------------

def _array_source(n, shape=(4, 4, 1), num_classes=3, offset=0):
  images = (np.arange(n)[:, None, None, None] + offset + np.zeros((1,) + shape)).astype(np.uint8)
  return ArraySource(images, (np.arange(n) + offset) % num_classes, num_classes)


def _write_copy(directory, source, **info):
  os.makedirs(directory, exist_ok=True)
  images, labels = source.get(np.arange(source.num_examples))
  np.save(os.path.join(directory, "images.npy"), images)
  np.save(os.path.join(directory, "labels.npy"), labels)
  meta = dict(net="edsr", dataset="synthetic", count=source.num_examples, seed=0,
              num_classes=source.num_classes)
  meta.update(info)
  with open(os.path.join(directory, "info.json"), "w") as f:
    json.dump(meta, f)
  return directory


def test_concat_and_deepaugment_sources_index_correctly(tmp_path):
  a, b = _array_source(5), _array_source(7, offset=100)
  copy = da_data.DeepAugmentSource(_write_copy(str(tmp_path / "copy"), b))
  assert copy.num_examples == 7 and copy.image_shape == (4, 4, 1) and copy.num_classes == 3
  assert isinstance(copy.images, np.memmap)
  both = da_data.ConcatSource(a, copy)
  assert both.num_examples == 12 and isinstance(both, data_lib.Source)
  idx = np.array([11, 0, 5, 4, 6, 5])
  images, labels = both.get(idx)
  want = np.where(idx < 5, idx, idx - 5 + 100)
  np.testing.assert_array_equal(images[:, 0, 0, 0], want)
  np.testing.assert_array_equal(labels, want % 3)
  assert images.dtype == np.uint8 and labels.dtype == np.int32
  with pytest.raises(ValueError, match="indices"):
    both.get(np.array([12]))


def test_concat_source_rejects_mismatches():
  with pytest.raises(ValueError, match="image_shape"):
    da_data.ConcatSource(_array_source(3), _array_source(3, shape=(4, 4, 3)))
  with pytest.raises(ValueError, match="num_classes"):
    da_data.ConcatSource(_array_source(3), _array_source(3, num_classes=5))
  with pytest.raises(ValueError, match="at least one"):
    da_data.ConcatSource()


def test_load_train_source(tmp_path):
  import ml_collections
  info = data_lib.DATASETS["synthetic"]
  clean = ArraySource(np.zeros((4, 16, 16, 3), np.uint8), np.arange(4) % 10, 10)
  config = ml_collections.ConfigDict({"dataset": "synthetic"})
  assert da_data.load_train_source(config, info, clean) is clean
  config.deepaugment_dirs = ()
  assert da_data.load_train_source(config, info, clean) is clean
  copy_dir = _write_copy(str(tmp_path / "synthetic_cae"), clean)
  config.deepaugment_dirs = (copy_dir, copy_dir)
  union = da_data.load_train_source(config, info, clean)
  assert union.num_examples == 12
  missing = str(tmp_path / "synthetic_edsr_tiny")
  config.deepaugment_dirs = (copy_dir, missing)
  with pytest.raises(FileNotFoundError, match="make_deepaugment --dataset=synthetic "
                     "--net=edsr --config_name=synthetic_edsr_tiny"):
    da_data.load_train_source(config, info, clean)
  other = _write_copy(str(tmp_path / "other"), clean, dataset="cifar10")
  config.deepaugment_dirs = (other,)
  with pytest.raises(ValueError, match="copy of 'cifar10'"):
    da_data.load_train_source(config, info, clean)
  with pytest.raises(FileNotFoundError, match="make_deepaugment"):
    da_data.DeepAugmentSource(missing)


# --- the writer script ------------------------------------------------------------------------

def _run_script(out_dir, *flags_):
  from absl import flags
  from experiments import make_deepaugment as cli
  argv = ["make_deepaugment", "--dataset=synthetic", f"--out_dir={out_dir}",
          f"--batch_size={B}", *flags_]
  try:
    flags.FLAGS(argv)
    cli.main(argv[:1])
  finally:
    flags.FLAGS.unparse_flags()


def test_script_writes_a_deterministic_resumable_copy(tmp_path):
  tiny = ["--net=edsr", "--random_init", "--net_kwargs=" + json.dumps(TINY_EDSR),
          "--chunk_size=16", "--num_examples=40"]
  fresh, resumed = str(tmp_path / "fresh"), str(tmp_path / "resumed")
  _run_script(fresh, *tiny)
  copy = da_data.DeepAugmentSource(fresh)
  assert copy.num_examples == 40 and copy.image_shape == (16, 16, 3)
  assert copy.info["net"] == "edsr" and copy.info["dataset"] == "synthetic"
  assert copy.info["seed"] == 0 and copy.info["count"] == 40
  images, labels = copy.get(np.arange(40))
  clean_images, clean_labels = data_lib.load_split("synthetic", "train").get(np.arange(40))
  np.testing.assert_array_equal(labels, clean_labels)
  assert not np.array_equal(images, clean_images)
  assert not os.path.exists(os.path.join(fresh, "chunks"))
  # Interrupted after one chunk, then rerun: the same arrays as the unbroken run.
  _run_script(resumed, *tiny, "--max_chunks=1")
  assert os.listdir(os.path.join(resumed, "chunks")) == ["chunk_00000.npy"]
  assert not os.path.exists(os.path.join(resumed, "info.json"))
  _run_script(resumed, *tiny)
  again = da_data.DeepAugmentSource(resumed)
  np.testing.assert_array_equal(again.get(np.arange(40))[0], images)
  _run_script(resumed, *tiny)  # finished: a rerun does nothing
  with pytest.raises(ValueError, match="other settings"):
    _run_script(resumed, *tiny, "--seed=1")


def test_script_cae_copy(tmp_path):
  """The CAE through the writer (random init; the same compiled function as above)."""
  net, params, _ = _setup("cae")
  source = data_lib.load_split("synthetic", "train")
  out = str(tmp_path / "cae")
  info = run_deepaugment.make_copy(net, params, source, out, batch_size=B, chunk_size=B,
                                   seed=3, num_examples=12, meta=dict(dataset="synthetic"),
                                   progress=False)
  assert info["count"] == 12 and info["net"] == "cae"
  images = np.load(os.path.join(out, "images.npy"))
  assert images.shape == (12, 16, 16, 3) and images.dtype == np.uint8
  # Example 0 of the copy is batch 0 of deepaugment_batch with the key of batch 0.
  x = jnp.asarray(source.get(np.arange(B))[0], jnp.float32) / 255
  want = da.jit_deepaugment_batch(net, params, x, jax.random.fold_in(jax.random.PRNGKey(3), 0))
  np.testing.assert_array_equal(images[:B], np.round(np.asarray(want) * 255).astype(np.uint8))
  with pytest.raises(ValueError, match="multiple of batch_size"):
    run_deepaugment.make_copy(net, params, source, str(tmp_path / "x"), batch_size=B,
                              chunk_size=B + 1)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
