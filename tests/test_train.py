"""Training engine: schedules, optimizer, train/eval steps, checkpoints, the loop."""

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adacorr import methods
from adacorr.train import checkpoint as ckpt_lib
from adacorr.train import loop
from adacorr.train import optim
from adacorr.train import state as state_lib
from adacorr.train import step as step_lib
from adacorr.train.metric_writer import read_metrics
from tests.configs import tiny_synthetic


class _Tiny(nn.Module):
  """Conv + BatchNorm + dense: enough to exercise batch_stats and weight decay."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x).mean(axis=(1, 2))
    return nn.Dense(3)(x)


def _batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, n).astype(np.int32)
  images = rng.uniform(0, 0.3, (n, 8, 8, 1)).astype(np.float32)
  images += 0.3 * labels[:, None, None, None]  # class-dependent brightness
  return {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


def _config(**overrides):
  config = tiny_synthetic.get_config()
  config.update(overrides)
  return config


# --- schedules and optimizer -------------------------------------------------------

def test_linear_scaling_rule():
  assert optim.scaled_learning_rate(0.1, 1024) == pytest.approx(0.4)
  assert optim.scaled_learning_rate(0.1, 128) == pytest.approx(0.1)  # never below base


def test_cosine_schedule_warms_up_then_decays_to_zero():
  config = _config(learning_rate=0.4, scale_learning_rate=False, warmup_epochs=1.0)
  schedule = optim.make_schedule(config, steps_per_epoch=10, num_steps=100)
  assert float(schedule(0)) == pytest.approx(0.0)
  assert float(schedule(5)) == pytest.approx(0.2)
  assert float(schedule(10)) == pytest.approx(0.4)
  assert float(schedule(55)) == pytest.approx(0.2, rel=1e-4)
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)
  values = [float(schedule(s)) for s in range(10, 101)]
  assert all(a >= b for a, b in zip(values, values[1:]))


def test_piecewise_schedule_drops_at_fractions_of_training():
  config = _config(learning_rate=0.1, scale_learning_rate=False, schedule="piecewise",
                   warmup_epochs=0.0, piecewise_boundaries=(0.34, 0.67), piecewise_factor=0.1)
  schedule = optim.make_schedule(config, steps_per_epoch=10, num_steps=100)
  assert float(schedule(33)) == pytest.approx(0.1)
  assert float(schedule(34)) == pytest.approx(0.01)
  assert float(schedule(66)) == pytest.approx(0.01)
  assert float(schedule(67)) == pytest.approx(0.001)


def test_unknown_schedule_raises_named_error():
  with pytest.raises(ValueError, match="schedule"):
    optim.make_schedule(_config(schedule="linear"), steps_per_epoch=10, num_steps=100)


def test_weight_decay_is_coupled_l2_and_maskable():
  params = {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}}
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  config = _config(momentum=0.0, nesterov=False, weight_decay=0.5)
  for which, bias_step in (("all", -0.05), ("kernels", 0.0)):
    config.weight_decay_on = which
    tx = optim.make_optimizer(config, optax.constant_schedule(0.1))
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    # SGD on the L2 term: -lr * wd * w = -0.1 * 0.5 * 1.
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -0.05)
    np.testing.assert_allclose(updates["Dense_0"]["bias"], bias_step)


# --- steps --------------------------------------------------------------------------

def _tiny_state(lr=0.1):
  model = _Tiny()
  tx = optax.sgd(lr, momentum=0.9, nesterov=True)
  state = state_lib.create_train_state(model, tx, jax.random.PRNGKey(0), (8, 8, 1))
  return model, tx, state


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
  model, tx, state = _tiny_state()
  train_step = jax.jit(step_lib.make_train_step(methods.make_nominal(model), tx))
  batch = _batch()
  losses = []
  for _ in range(30):
    state, metrics = train_step(state, batch)
    losses.append(float(metrics["loss"]))
  assert int(state.step) == 30
  assert losses[-1] < 0.5 * losses[0]
  # BatchNorm statistics moved away from their initial values.
  assert not np.allclose(state.batch_stats["BatchNorm_0"]["mean"], 0.0)


def test_non_finite_loss_leaves_the_state_unchanged():
  model, tx, state = _tiny_state()

  def nan_loss(params, batch_stats, batch, key):
    loss, aux = methods.make_nominal(model)(params, batch_stats, batch, key)
    return loss * jnp.nan, aux

  train_step = jax.jit(step_lib.make_train_step(nan_loss, tx))
  new_state, metrics = train_step(state, _batch())
  assert float(metrics["finite"]) == 0.0
  assert int(new_state.step) == int(state.step)
  for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_step_randomness_depends_only_on_seed_and_step():
  """The augmentation key of a step is fold_in(rng, step): same state -> same batch."""
  model, tx, state = _tiny_state()
  seen = []

  def augment(images, key):
    seen.append(key)
    return images + 0.01 * jax.random.normal(key, images.shape)

  train_step = step_lib.make_train_step(methods.make_nominal(model), tx,
                                        augment_fn=augment)
  s1, m1 = train_step(state, _batch())
  s2, m2 = train_step(state, _batch())
  np.testing.assert_array_equal(seen[0], seen[1])
  assert float(m1["loss"]) == float(m2["loss"])
  s3, _ = train_step(s1, _batch())
  assert not np.array_equal(seen[2], seen[0])


def test_eval_step_masks_padding():
  model, _, state = _tiny_state()
  eval_step = jax.jit(step_lib.make_eval_step(model))
  batch = _batch(8)
  full = eval_step(state.variables, batch)
  half = eval_step(state.variables, dict(batch, mask=jnp.array([1.0] * 4 + [0.0] * 4)))
  first = eval_step(state.variables, jax.tree.map(lambda x: x[:4], batch))
  assert float(full["count"]) == 8 and float(half["count"]) == 4
  np.testing.assert_allclose(half["loss"], first["loss"], rtol=1e-5)
  np.testing.assert_allclose(half["correct"], first["correct"])


# --- checkpoints --------------------------------------------------------------------

def test_checkpoint_round_trip_and_keep_last_k(tmp_path):
  _, _, state = _tiny_state()
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2)
  for step in (1, 2, 3):
    checkpointer.save(step, state.replace(step=jnp.asarray(step, jnp.int32)))
  checkpointer.wait_until_finished()
  assert checkpointer.all_steps() == [2, 3]
  restored = checkpointer.restore(state)
  assert int(restored.step) == 3
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state.replace(step=3))):
    np.testing.assert_array_equal(a, b)
  checkpointer.close()


def test_interrupted_save_is_never_loaded(tmp_path):
  """A save killed midway leaves only orbax's temporary directory, which is ignored."""
  _, _, state = _tiny_state()
  directory = tmp_path / "ckpt"
  checkpointer = ckpt_lib.Checkpointer(str(directory), max_to_keep=3)
  checkpointer.save(5, state.replace(step=jnp.asarray(5, jnp.int32)))
  checkpointer.close()
  # What a SIGKILL during the save of step 9 leaves behind: a half-written temp dir.
  partial = directory / "9.orbax-checkpoint-tmp-1234567890"
  shutil.copytree(directory / "5", partial)
  for f in list(partial.rglob("*"))[::2]:
    if f.is_file():
      f.write_bytes(b"truncated")
  reopened = ckpt_lib.Checkpointer(str(directory), max_to_keep=3)
  assert reopened.latest_step() == 5
  assert int(reopened.restore(state).step) == 5
  reopened.close()


def test_restore_without_checkpoint_raises(tmp_path):
  with pytest.raises(FileNotFoundError, match="No complete checkpoint"):
    ckpt_lib.Checkpointer(str(tmp_path / "empty")).restore({"a": jnp.zeros(2)})


# --- the loop -----------------------------------------------------------------------

def test_loop_trains_logs_checkpoints_and_summarises(tmp_path):
  workdir = str(tmp_path / "run")
  summary = loop.train_and_evaluate(_config(), workdir)
  assert summary["steps"] == 24 and summary["resumed_from_step"] == 0
  assert summary["test_examples"] == 256
  assert summary["test_accuracy"] > 0.2  # 10 classes: chance is 0.1
  records = read_metrics(workdir)
  train = [r for r in records if r["split"] == "train"]
  assert [r["step"] for r in train] == list(range(4, 25, 4))
  assert train[-1]["loss"] < train[0]["loss"]
  assert [r["step"] for r in records if r["split"] == "test"] == [12, 24]
  assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                if d.isdigit()) == [20, 24]
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f)["test_accuracy"] == summary["test_accuracy"]
  # Rerunning a finished run resumes at the end: nothing to train, same result.
  again = loop.train_and_evaluate(_config(), workdir)
  assert again["resumed_from_step"] == 24
  assert again["test_accuracy"] == pytest.approx(summary["test_accuracy"])


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / "run")

  def make_loss_fn(model, config):
    base = methods.make_nominal(model)

    def loss_fn(params, batch_stats, batch, key):
      loss, aux = base(params, batch_stats, batch, key)
      # Becomes NaN once the loss is low enough (after some steps of training).
      return jnp.where(loss < 2.25, jnp.nan, loss), aux

    return loss_fn

  with pytest.raises(loop.NonFiniteLossError, match="last good checkpoint is step") as info:
    loop.train_and_evaluate(_config(learning_rate=0.2), workdir, make_loss_fn=make_loss_fn)
  bad_step = int(str(info.value).split("at step ")[1].split()[0])
  steps = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints")).all_steps()
  assert steps and max(steps) < bad_step < 24
  params = ckpt_lib.restore_params(os.path.join(workdir, "checkpoints"))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_unknown_method_and_dataset_raise_named_errors(tmp_path):
  with pytest.raises(ValueError, match="config.method"):
    loop.train_and_evaluate(_config(method="nope"), str(tmp_path / "a"))
  with pytest.raises(ValueError, match="config.dataset"):
    loop.train_and_evaluate(_config(dataset="nope"), str(tmp_path / "b"))


def test_batch_not_divisible_by_devices_is_rejected(tmp_path):
  with pytest.raises(ValueError, match="global_batch_size"):
    loop.train_and_evaluate(_config(global_batch_size=0), str(tmp_path / "c"))
