"""Pretraining of the AdA corruption nets: losses, masks, PSNR, resume, load / reuse, CLI."""

import importlib
import json
import os
import shutil
import sys

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adacorr import data as data_lib
from adacorr.train import checkpoint as ckpt_lib
from adacorr.run import corruption_nets as rcn
from adacorr.train import corruption_nets as cp
from adacorr.train import step as step_lib
from experiments.configs import corruption_nets

# Tiny variants on the 16x16x3 'synthetic' images (the CAE has no size options).
TINY_NETS = {
    "edsr": dict(features=8, num_blocks=1),
    "cae": {},
    "vqvae": dict(num_hiddens=16, num_residual_layers=1, num_residual_hiddens=8, embedding_dim=8,
                  num_embeddings=32),
    "unet": dict(features=(8, 16), bottleneck=16),
}


def _config(net, **overrides):
  """A tiny net on the synthetic data (for the step-level tests)."""
  config = corruption_nets.get_base_config()
  config.update(dict(name="tiny", net=net, dataset="synthetic", global_batch_size=32,
                     num_steps=8, prefetch=0))
  config.net_kwargs.update(TINY_NETS[net])
  config.update(overrides)
  return config


# The run shared by the run-level tests: the Fashion-MNIST VQ-VAE quickstart's config, made
# tiny and moved to the synthetic data (6 steps, checkpoints at 2, 4 and 6), via the CLI.
RUN_CONFIG = "fashion_mnist_vqvae"
RUN_OVERRIDES = {
    **{f"net_kwargs.{k}": v for k, v in TINY_NETS["vqvae"].items()},
    "dataset": "synthetic", "global_batch_size": 32, "num_steps": 6, "log_every_steps": 2,
    "checkpoint_every_steps": 2, "keep_checkpoints": 10, "eval_batch_size": 128,
    "num_eval_examples": 128, "prefetch": 0}


def _run_config(**overrides):
  """The config of the shared run, as the AdA quickstart would build it."""
  config = importlib.import_module(
      f"experiments.configs.corruption_nets.{RUN_CONFIG}").get_config()
  for path, value in {**RUN_OVERRIDES, **overrides}.items():
    *parents, field = path.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[field] = value
  return config


def _images(n=32, split="train"):
  images, _ = data_lib.datasets.synthetic_arrays(split)
  return jnp.asarray(images[:n], jnp.float32) / 255.0


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- metrics and masks ------------------------------------------------------------------

def test_psnr_matches_the_formula_on_known_pairs():
  a = jnp.zeros((1, 4, 4, 1))
  np.testing.assert_allclose(cp.psnr(a, a + 0.1), [20.0], rtol=1e-5)  # mse 0.01
  rng = np.random.default_rng(0)
  x, y = rng.uniform(size=(2, 3, 8, 8, 3)).astype(np.float32)
  expected = [10 * np.log10(1.0 / np.mean((x[i] - y[i]) ** 2)) for i in range(3)]
  np.testing.assert_allclose(cp.psnr(jnp.asarray(x), jnp.asarray(y)), expected, rtol=1e-5)
  assert np.isfinite(cp.psnr(a, a)).all()  # identical images: capped, not inf


def test_completion_mask_zeroes_2_to_35_percent_of_pixels_on_all_channels():
  images = jnp.asarray(np.random.default_rng(0).uniform(0.1, 1.0, (64, 16, 16, 3)),
                       jnp.float32)
  key = jax.random.PRNGKey(3)
  masked, mask = jax.device_get(cp.mask_pixels(images, key))
  images = np.asarray(images)
  assert mask.shape == (64, 16, 16, 1)
  zeroed = np.asarray(masked == 0)  # images are > 0, so only masked pixels are 0
  # A zeroed pixel has all its channels zeroed; the rest is the image unchanged.
  assert (zeroed.all(-1) == zeroed.any(-1)).all()
  np.testing.assert_array_equal(zeroed[..., 0], np.asarray(mask[..., 0] == 0))
  np.testing.assert_array_equal(np.where(mask > 0, images, 0), masked)
  fraction = zeroed[..., 0].mean(axis=(1, 2))
  assert fraction.min() >= 0.02 and fraction.max() <= 0.35
  assert fraction.min() < 0.1 and fraction.max() > 0.25  # spread over the range
  # Key-driven: the same key gives the same masks, another key other masks.
  np.testing.assert_array_equal(cp.completion_mask(key, images.shape), mask)
  assert not np.array_equal(cp.completion_mask(jax.random.PRNGKey(4), images.shape), mask)


# --- losses -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TINY_NETS))
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(name):
  config = _config(name)
  net = cp.build_net(config)
  images = _images(8 if name == "cae" else 32)  # the full-size CAE is slow on CPU
  variance = float(jnp.var(images)) if name == "vqvae" else None
  loss_fn = cp.make_loss_fn(name, net, data_variance=variance)
  tx = cp.make_optimizer(config, optax.constant_schedule(1e-3 if name == "cae" else 3e-3))
  start = cp.create_pretrain_state(net, tx, jax.random.PRNGKey(0), images.shape[1:])
  train_step = jax.jit(step_lib.make_train_step(loss_fn, tx))
  state, first = train_step(start, {"image": images})  # the loss before the update
  for _ in range(7):
    state, metrics = train_step(state, {"image": images})
    assert float(metrics["finite"]) == 1.0
  assert int(state.step) == 8
  # The loss of the trained params with step 0's key (same masks / binarisation).
  _, after = train_step(state.replace(step=start.step, rng=start.rng), {"image": images})
  assert float(after["loss"]) < 0.9 * float(first["loss"]), (first["loss"], after["loss"])
  if name == "vqvae":  # the codebook follows its EMA updates, outside the gradient
    assert set(state.batch_stats) == {"vq_ema"}
    assert "perplexity" in metrics and float(metrics["vq_loss"]) >= 0
  else:
    assert state.batch_stats == {}


def test_edsr_trains_on_super_resolution_and_reports_the_applied_net():
  """EDSR's loss is x2 super-resolution (the 'down_then_sr' net), whatever mode it is
  applied in; the evaluation also reports the net as applied ('sr_then_down')."""
  from adacorr.models.corruption import EDSR  # pylint: disable=import-outside-toplevel
  net = EDSR(**TINY_NETS["edsr"])
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 16, 16, 3))
  variables = dict(jax.jit(net.init)(jax.random.PRNGKey(1), x[:1]))
  loss, _ = cp.make_loss_fn("edsr", net)(variables["params"], {}, {"image": x},
                                         jax.random.PRNGKey(2))
  task = net.clone(resample="down_then_sr").apply(variables, x)
  np.testing.assert_allclose(loss, jnp.mean(jnp.abs(task - x)), rtol=1e-5)
  sums = cp.make_eval_step("edsr", net)(variables, {"image": x}, jax.random.PRNGKey(3))
  applied = net.apply(variables, x)
  np.testing.assert_allclose(sums["applied_ssim"], jnp.sum(pix.ssim(applied, x)), rtol=1e-5)
  np.testing.assert_allclose(sums["ssim"], jnp.sum(pix.ssim(task, x)), rtol=1e-5)


def test_zero_init_zeroes_the_named_modules_only():
  params = {"head": {"kernel": jnp.ones((3, 3, 2, 1)), "bias": jnp.ones((1,))},
            "enc": {"conv": {"kernel": jnp.ones((2,))}}}
  zeroed = cp.zero_params(params, ["head", "enc/conv"])
  assert all(float(jnp.abs(x).sum()) == 0 for x in jax.tree.leaves(zeroed))
  partial = cp.zero_params(params, ["head"])
  np.testing.assert_array_equal(partial["enc"]["conv"]["kernel"], 1.0)
  with pytest.raises(ValueError, match="no parameters under 'tail'"):
    cp.zero_params(params, ["tail"])


def test_unknown_net_has_no_loss():
  with pytest.raises(ValueError, match="No pretraining loss"):
    cp.make_loss_fn("nope", None)
  with pytest.raises(ValueError, match="data_variance"):
    cp.make_loss_fn("vqvae", None)


# --- runs -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """Runs experiments/train_corruption_net.py's main in-process: `(workdir, summary)`."""
  from absl import flags
  from experiments import train_corruption_net as cli
  workdir = str(tmp_path_factory.mktemp("corruption_net") / "vqvae")
  config_path = os.path.join(os.path.dirname(corruption_nets.__file__), f"{RUN_CONFIG}.py")
  argv = (["train_corruption_net", f"--config={config_path}", f"--workdir={workdir}",
           "--fashion_mnist_dir=/nonexistent"]
          + [f"--config.{k}={v}" for k, v in RUN_OVERRIDES.items()])
  with pytest.MonkeyPatch.context() as m:
    m.setattr(sys, "argv", argv)  # config_flags reads its overrides from sys.argv
    try:
      flags.FLAGS(argv)
      cli.main(argv[:1])
    finally:
      flags.FLAGS.unparse_flags()
  with open(os.path.join(workdir, "summary.json")) as f:
    return workdir, json.load(f)


def test_cli_run_checkpoints_logs_and_summarises(finished_run):
  workdir, summary = finished_run
  assert summary["steps"] == 6 and summary["net"] == "vqvae" and summary["dataset"] == "synthetic"
  assert summary["test_examples"] == 128 and summary["baseline"] == "bicubic_x4"
  assert np.isfinite([summary["test_psnr"], summary["test_ssim"], summary["baseline_psnr"],
                      summary["data_variance"]]).all()
  with open(os.path.join(workdir, "config.json")) as f:
    recorded = json.load(f)
  assert recorded["fashion_mnist_dir"] == "/nonexistent"  # the CLI flag reached the config
  assert recorded["net_kwargs"]["num_hiddens"] == 16
  assert ckpt_lib.latest_checkpoint_step(os.path.join(workdir, "checkpoints")) == 6
  assert ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == [2, 4, 6]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6]
  assert {"loss", "mse", "vq_loss", "perplexity"} <= set(records[0])


def test_resumed_run_ends_with_the_state_of_an_unbroken_run(finished_run, tmp_path):
  workdir, _ = finished_run
  resumed = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed)
  # What a run killed after step 2's checkpoint leaves behind.
  for step in ("4", "6"):
    shutil.rmtree(os.path.join(resumed, "checkpoints", step))
  os.remove(os.path.join(resumed, "summary.json"))
  # ensure_pretrained finds an unfinished run of its config: it resumes it, then loads it.
  _, variables = rcn.ensure_pretrained(_run_config(), resumed)
  with open(os.path.join(resumed, "summary.json")) as f:
    summary = json.load(f)
  assert summary["resumed_from_step"] == 2 and summary["steps"] == 6
  unbroken = ckpt_lib.restore_params(os.path.join(workdir, "checkpoints"))
  again = ckpt_lib.restore_params(os.path.join(resumed, "checkpoints"))
  _assert_trees_equal(again, unbroken)  # params, the vq_ema codebook, Adam state, step
  _assert_trees_equal(variables, {"params": unbroken["params"], **unbroken["batch_stats"]})


def test_load_corruption_net_reproduces_the_trained_net(finished_run):
  workdir, summary = finished_run
  net, variables = rcn.load_corruption_net(workdir)
  assert type(net).__name__ == "VQVAE" and net.num_hiddens == 16
  assert set(variables) == {"params", "vq_ema"}
  saved = ckpt_lib.restore_params(os.path.join(workdir, "checkpoints"))
  _assert_trees_equal(variables["params"], saved["params"])
  _assert_trees_equal(variables["vq_ema"], saved["batch_stats"]["vq_ema"])
  # The loaded net reproduces the run's own test PSNR (first 128 test images).
  images = _images(128, "test")
  out = jax.jit(lambda v, x: net.apply(v, x, train=False))(variables, images)
  assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 1
  assert float(cp.psnr(out, images).mean()) == pytest.approx(summary["test_psnr"], rel=1e-5)


def _snapshot(workdir):
  ckpt = os.path.join(workdir, "checkpoints")
  return {p: os.path.getmtime(os.path.join(ckpt, p)) for p in os.listdir(ckpt)} | {
      f: os.path.getmtime(os.path.join(workdir, f)) for f in ("summary.json", "config.json")}


def test_ensure_pretrained_reuses_a_finished_run(finished_run):
  workdir, _ = finished_run
  before = _snapshot(workdir)
  # As the AdA quickstart calls it; bookkeeping fields (logging, data paths) do not matter.
  config = _run_config(log_every_steps=1, checkpoint_every_steps=3)
  net, variables = rcn.ensure_pretrained(config, workdir)
  assert _snapshot(workdir) == before  # nothing trained, saved or rewritten
  assert ckpt_lib.latest_checkpoint_step(os.path.join(workdir, "checkpoints")) == 6
  _assert_trees_equal(variables, rcn.load_corruption_net(workdir)[1])
  assert type(net).__name__ == "VQVAE"


def test_ensure_pretrained_rejects_bad_configs(finished_run):
  workdir, _ = finished_run
  bad = _run_config()
  bad.net = "nope"
  with pytest.raises(ValueError, match="config.net='nope'.*known"):
    rcn.ensure_pretrained(bad, workdir)
  with pytest.raises(ValueError, match="config.dataset"):
    rcn.ensure_pretrained(_run_config(dataset="nope"), workdir)
  with pytest.raises(ValueError, match=r"different config.*learning_rate"):
    rcn.ensure_pretrained(_run_config(learning_rate=1e-2), workdir)
  with pytest.raises(ValueError, match=r"different config.*net_kwargs"):
    rcn.ensure_pretrained(_run_config(**{"net_kwargs.num_hiddens": 32}), workdir)
  with pytest.raises(ValueError, match="another net"):  # pretrain refuses to mix runs
    cp.pretrain(_config("edsr"), workdir)


def test_load_without_a_run_names_the_workdir_and_the_command(tmp_path):
  workdir = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError,
                     match=r"(?s)missing.*-m experiments\.train_corruption_net --config=.*--workdir="):
    rcn.load_corruption_net(workdir)


def test_every_config_builds_its_net():
  for name in corruption_nets.CONFIGS:
    config = importlib.import_module(f"experiments.configs.corruption_nets.{name}").get_config()
    cp.validate_config(config)
    assert config.name == name
    assert cp.build_net(config) is not None
