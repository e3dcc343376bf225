"""Perceptual Adversarial Training (`adacorr.methods.pat`): what is attacked, in which mode,
what the loss and its gradient are computed on, and the externally bounded path."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import optax

from adacorr import attacks, methods, perceptual
from adacorr import data as data_lib
from adacorr.models import SmallCNN
from adacorr import run
from adacorr.run import load_classifier
from adacorr.train import checkpoint, create_train_state, loop

KEY = jax.random.key(5)
FD = "finite_difference"  # make_pat's default derivative (paper Alg. 3 and the reference)


def _ce(model, params, batch_stats, x, y):
  logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                          mutable=["batch_stats"])
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


@pytest.fixture(scope="module")
def self_bounded():
  """A tiny classifier, a batch with exactly 5 of 8 examples classified correctly, and the
  PAT loss, metrics and parameter gradient of one jitted call."""
  model = SmallCNN(num_classes=3, features=(4, 8), dense=16, mean=(0.5,), std=(0.25,))
  x = jax.random.uniform(jax.random.key(0), (8, 12, 12, 1))
  variables = jax.jit(lambda k: model.init(k, x[:1]))(jax.random.key(1))
  pred = jnp.argmax(model.apply(variables, x, train=False), -1)
  y = jnp.where(jnp.arange(8) < 5, pred, (pred + 1) % 3).astype(jnp.int32)
  loss_fn = methods.make_pat(model, bound=0.5, num_steps=2)
  (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      variables["params"], variables["batch_stats"], {"image": x, "label": y}, KEY)
  return dict(model=model, variables=variables, x=x, y=y, loss=loss, aux=aux, grads=grads)


def test_pat_attacks_only_correctly_classified_examples(self_bounded):
  m = self_bounded["aux"]["metrics"]
  assert np.isfinite(float(self_bounded["loss"]))
  np.testing.assert_allclose(float(m["clean_accuracy"]), 5 / 8)
  np.testing.assert_allclose(float(m["attacked_fraction"]), 5 / 8)
  assert 0.0 < float(m["lpips"]) < 2.0


def test_pat_loss_and_gradient_are_train_mode_cross_entropy_on_the_attacked_batch(
    self_bounded):
  """Loss = CE of the train-mode model on x_train (the eval-mode Fast-LPA result for the
  correctly classified examples, the clean image for the others), and the parameter
  gradient is that of CE at the FIXED x_train: none flows through the attack."""
  s = self_bounded
  model, variables, x, y = s["model"], s["variables"], s["x"], s["y"]
  attack_key, _ = jax.random.split(KEY)
  fl = perceptual.features_and_logits_fn(model, variables)
  x_adv = jax.jit(lambda a: attacks.fast_lpa(fl, None, a, y, attack_key, bound=0.5,
                                             num_steps=2, derivative=FD))(x)
  correct = jnp.argmax(model.apply(variables, x, train=False), -1) == y
  x_train = jnp.where(correct[:, None, None, None], x_adv, x)
  stats = variables["batch_stats"]
  expected, expected_grads = jax.jit(jax.value_and_grad(
      lambda p: _ce(model, p, stats, x_train, y)))(variables["params"])
  np.testing.assert_allclose(float(s["loss"]), float(expected), rtol=1e-4)
  for a, b in zip(jax.tree.leaves(s["grads"]), jax.tree.leaves(expected_grads)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=1e-5)
  # The attack raised the training loss over the clean batch.
  assert float(s["loss"]) > float(_ce(model, variables["params"], stats, x, y))


def test_pat_passes_the_schedule_convention_to_fast_lpa(self_bounded):
  """convention='reference' (the code's t = 0..T-1 schedule) reaches Fast-LPA: the loss is
  CE at that attack's batch, and differs from the default (the paper's t = 1..T)."""
  s = self_bounded
  model, variables, x, y = s["model"], s["variables"], s["x"], s["y"]
  loss_fn = methods.make_pat(model, bound=0.5, num_steps=2, convention="reference")
  loss, _ = jax.jit(loss_fn)(variables["params"], variables["batch_stats"],
                             {"image": x, "label": y}, KEY)
  attack_key, _ = jax.random.split(KEY)
  fl = perceptual.features_and_logits_fn(model, variables)
  x_adv = jax.jit(lambda a: attacks.fast_lpa(fl, None, a, y, attack_key, bound=0.5,
                                             num_steps=2, convention="reference",
                                             derivative=FD))(x)
  correct = jnp.argmax(model.apply(variables, x, train=False), -1) == y
  x_train = jnp.where(correct[:, None, None, None], x_adv, x)
  expected = _ce(model, variables["params"], variables["batch_stats"], x_train, y)
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-4)
  assert abs(float(loss) - float(s["loss"])) > 1e-3
  with pytest.raises(ValueError, match="convention"):
    methods.make_pat(model, convention="code")


def test_pat_step_length_is_the_finite_difference_by_default_and_jvp_an_option(
    self_bounded):
  """Fast-LPA's m = d(x_adv, x_adv + h Delta) / h with h = 0.1 (the paper's Algorithm 3,
  the reference's `FastLagrangePerceptualAttack`) by default; `derivative='jvp'` (ours
  before) is the exact ||J Delta|| and gives another attack, hence another loss."""
  s = self_bounded
  model, variables, x, y = s["model"], s["variables"], s["x"], s["y"]
  loss_fn = methods.make_pat(model, bound=0.5, num_steps=2, derivative="jvp")
  loss, _ = jax.jit(loss_fn)(variables["params"], variables["batch_stats"],
                             {"image": x, "label": y}, KEY)
  attack_key, _ = jax.random.split(KEY)
  fl = perceptual.features_and_logits_fn(model, variables)
  x_adv = jax.jit(lambda a: attacks.fast_lpa(fl, None, a, y, attack_key, bound=0.5,
                                             num_steps=2, derivative="jvp"))(x)
  correct = jnp.argmax(model.apply(variables, x, train=False), -1) == y
  x_train = jnp.where(correct[:, None, None, None], x_adv, x)
  expected = _ce(model, variables["params"], variables["batch_stats"], x_train, y)
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-4)
  assert abs(float(loss) - float(s["loss"])) > 1e-3  # 1.2695 (jvp) vs 1.2561 (default)


def test_pat_externally_bounded_by_a_trained_workdir(tmp_path):
  """lpips_model=<workdir> loads that trained classifier's LPIPS layers (a SmallCNN on the
  16x16x3 synthetic set, standing in for a CifarAlexNet run); its distance is the metric."""
  from tests.configs import tiny_synthetic
  config = tiny_synthetic.get_config()
  workdir = tmp_path / "lpips_net"
  # A workdir as `train_and_evaluate` writes it: config.json and an orbax TrainState.
  net = loop.build_model(config, data_lib.DATASETS[config.dataset])
  state = create_train_state(net, optax.sgd(0.1), jax.random.key(8), (16, 16, 3))
  ckpt = checkpoint.Checkpointer(str(workdir / "checkpoints"), async_save=False)
  ckpt.save(0, state)
  ckpt.close()
  (workdir / "config.json").write_text(config.to_json_best_effort())
  workdir = str(workdir)
  _, net_vars, net_config, step = load_classifier(workdir)
  assert net_config.model == "small_cnn" and step == 0
  np.testing.assert_allclose(jax.tree.leaves(net_vars["params"])[0],
                             jax.tree.leaves(state.params)[0])
  feats = run.load_lpips_network(workdir)
  x = jax.random.uniform(jax.random.key(3), (4, 16, 16, 3))
  model = SmallCNN(num_classes=10, features=(4,), dense=8, mean=(0.5,) * 3, std=(0.25,) * 3)
  variables = jax.jit(lambda k: model.init(k, x[:1]))(jax.random.key(4))
  # The run layer resolves the config's workdir into the LPIPS network's features_fn.
  loss_fn = run.make_method(model, ml_collections.ConfigDict(dict(
      method="pat", method_kwargs=dict(bound=1.0, num_steps=2, lpips_model=workdir,
                                       only_attack_correct=False))))
  loss, aux = jax.jit(loss_fn)(variables["params"], variables["batch_stats"],
                               {"image": x, "label": jnp.arange(4, dtype=jnp.int32)}, KEY)
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(float(aux["metrics"]["attacked_fraction"]), 1.0)
  attack_key, _ = jax.random.split(KEY)
  dist = jax.jit(lambda a: perceptual.lpips_distance(feats, a, attacks.fast_lpa(
      perceptual.model_logits_fn(model, variables), feats, a, jnp.arange(4), attack_key,
      bound=1.0, num_steps=2, derivative=FD)))(x)
  np.testing.assert_allclose(float(aux["metrics"]["lpips"]), float(jnp.mean(dist)), rtol=1e-3)


def test_pat_config_overrides_and_bad_arguments():
  model = SmallCNN(num_classes=3, features=(4, 8), dense=16, mean=(0.5,), std=(0.25,))
  config = ml_collections.ConfigDict({"method_kwargs": {"bound": -1.0}})
  with pytest.raises(ValueError, match="bound"):
    run.make_method(model, ml_collections.ConfigDict(dict(method="pat", **config)))
  with pytest.raises(ValueError, match="nope"):
    methods.make_pat(model, lpips_layers=["nope"])
  with pytest.raises(ValueError, match="num_steps"):
    methods.make_pat(model, num_steps=0)
  with pytest.raises(FileNotFoundError):
    run.make_method(model, ml_collections.ConfigDict(dict(
        method="pat", method_kwargs=dict(lpips_model="/nonexistent/run"))))
  with pytest.raises(ValueError, match="bonud"):  # a misspelt key names itself
    run.make_method(model, ml_collections.ConfigDict(dict(
        method="pat", method_kwargs=dict(bonud=0.5))))
  assert methods.FACTORIES["pat"] is methods.make_pat
