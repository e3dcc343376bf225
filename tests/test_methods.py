"""Tests of the training methods (adacorr.methods): l_p AT, noise augmentation, RLAT."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adacorr import data as data_lib
from adacorr import models
from adacorr.methods import adversarial_training as at
from adacorr.methods import noise_augmentation as na
from adacorr.methods import rlat
from adacorr.train.step import make_train_step
from adacorr.train.state import TrainState

MEAN, STD = (0.5,) * 3, (0.25,) * 3


def _ce(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@pytest.fixture(scope="module")
def batch():
  source = data_lib.load_split("synthetic", "train")
  images, labels = source.get(np.arange(32))
  return {"image": jnp.asarray(images, jnp.float32) / 255.0,
          "label": jnp.asarray(labels, jnp.int32)}


def _fast_init(model, image_shape=(16, 16, 3), seed=0):
  """He-normal kernels, unit BN scales, zero biases, from numpy: a jitted `model.init`
  takes seconds to compile on CPU (threefry for every parameter shape)."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                          jnp.zeros((1, *image_shape)))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = str(getattr(path[-1], "key", path[-1]))
    if name in ("scale", "var"):
      return jnp.ones(leaf.shape, leaf.dtype)
    if name in ("bias", "mean"):
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.normal(0, np.sqrt(2.0 / fan_in), leaf.shape), leaf.dtype)

  variables = jax.tree_util.tree_map_with_path(fill, shapes)
  return model, variables["params"], variables.get("batch_stats", {})


@pytest.fixture(scope="module")
def cnn():
  return _fast_init(models.SmallCNN(features=(8, 16), dense=32, mean=MEAN, std=STD))


@pytest.fixture(scope="module")
def rlat_loss(resnet):
  """The jitted default RLAT LossFn of the `resnet` fixture (compiled once)."""
  return jax.jit(rlat.make_rlat(resnet[0]))


@pytest.fixture(scope="module")
def resnet():
  """A narrow PreAct ResNet (one block per stage, width 4) with the six marked points."""
  return _fast_init(models.PreActResNet(stage_sizes=(1, 1, 1, 1), width=4, mean=MEAN,
                                        std=STD), seed=1)


_JITTED: dict = {}


def _jit(fn, **kwargs):
  """jax.jit of `fn(model, *arrays, **kwargs)` with the model and kwargs closed over
  (cached, so repeated calls with the same model and kwargs compile once)."""

  def call(model, *args):
    cache_key = (fn, id(model), repr(sorted(kwargs.items())))
    if cache_key not in _JITTED:
      _JITTED[cache_key] = (model, jax.jit(lambda *a: fn(model, *a, **kwargs)))
    return _JITTED[cache_key][1](*args)

  return call


_add_noise = jax.jit(na.add_noise, static_argnames=("kind", "sigmas", "fraction"))


def _train_ce(model, params, batch_stats, images, labels):
  logits, _ = _jit(at.train_apply)(model, params, batch_stats, images, jax.random.PRNGKey(0))
  return _ce(logits, labels)


# ----------------------------------------------------------------------------- RLAT


def test_rlat_multipliers_preact_resnet18_cifar():
  model = models.PreActResNet18()
  mults = rlat.rlat_eps_multipliers(model, (32, 32, 3))
  assert [round(m, 2) for m in mults] == [1.0, 10.67, 7.11, 2.67, 1.07, 0.44]
  # From the real activation shapes: d_l / 3072 / (l + 1).
  shapes = rlat.perturbation_shapes(model, (2, 32, 32, 3))
  assert shapes["stem"].shape == (2, 32, 32, 64) and shapes["stage4"].shape == (2, 4, 4, 512)
  # A subset is indexed by its position among the selected layers (as the reference).
  sub = rlat.rlat_eps_multipliers(model, (32, 32, 3), ["stage4", "stage2"])
  np.testing.assert_allclose(sub, [16 * 16 * 128 / 3072, 4 * 4 * 512 / 3072 / 2])


def test_rlat_imagenet_multipliers_match_the_reference_formula():
  """ImageNet-100 (224x224): the reference's PreActResNet18_I perturbs the input, conv1's
  output (7x7, stride 2, padding 1 -> 110x110x64, before BN-ReLU-max pool), and the four
  stage outputs (max pool -> 55: 55x55x64, 28x28x128, 14x14x256, 7x7x512);
  eps_l / eps = (d_l / d_input) / (l + 1), d_input = 224 * 224 * 3."""
  from adacorr.models import PreActResNet18, ResNet50  # pylint: disable=import-outside-toplevel
  d0 = 224 * 224 * 3
  dims = [d0, 110 * 110 * 64, 55 * 55 * 64, 28 * 28 * 128, 14 * 14 * 256, 7 * 7 * 512]
  reference = [d / d0 / (l + 1) for l, d in enumerate(dims)]
  model = PreActResNet18(num_classes=100, stem="imagenet")
  np.testing.assert_allclose(rlat.rlat_eps_multipliers(model, (224, 224, 3)), reference,
                             rtol=1e-12)
  # torchvision ResNet-50 (padding 3): its stem point is the conv output too (112x112x64).
  mults = rlat.rlat_eps_multipliers(ResNet50(num_classes=100), (224, 224, 3))
  np.testing.assert_allclose(mults[:2], [1.0, 112 * 112 * 64 / d0 / 2], rtol=1e-12)
  with pytest.raises(ValueError, match="stem"):
    rlat.rlat_eps_multipliers(PreActResNet18(stem="vit"), (32, 32, 3))


@pytest.mark.parametrize("norm,linf_bound,layers", [
    ("l2", "global", None), ("linf", "layer", None), ("linf", "layer", ("stem", "stage1")),
    ("linf", "global", ("stem", "stage1"))])
def test_rlat_delta_norms_equal_eps_l(resnet, batch, norm, linf_bound, layers):
  """l2: ||delta_l|| = eps_l. linf: |delta_l| = eps_l per entry ('layer', ours before), or
  min(eps_l, eps) ('global', the default: the reference clamps every layer to the global
  [-eps, eps] after its eps_l * sign(g) step). With the layers (stem, stage1) of the
  width-4 test net on 16x16x3 inputs, eps_l / eps = (1024 / 768) / 1 = 4/3 (capped by
  'global') and (1024 / 768) / 2 = 2/3 (not capped)."""
  model, params, stats = resnet
  eps = 0.08
  deltas, clean = _jit(rlat.rlat_deltas, eps=eps, norm=norm, linf_bound=linf_bound,
                       layers=layers)(model, params, stats, batch, jax.random.PRNGKey(2))
  names = layers or model.FEATURE_POINTS
  mults = rlat.rlat_eps_multipliers(model, (16, 16, 3), layers)
  if layers:
    np.testing.assert_allclose(mults, [4 / 3, 2 / 3], rtol=1e-12)
  assert set(deltas) == set(names)
  shapes = rlat.perturbation_shapes(model, batch["image"].shape)
  for mult, name in zip(mults, names):
    d = np.asarray(deltas[name])
    assert d.shape == shapes[name].shape
    if norm == "l2":
      norms = np.sqrt((d.astype(np.float64) ** 2).reshape(d.shape[0], -1).sum(1))
      np.testing.assert_allclose(norms, eps * mult, rtol=1e-5)
    else:
      nonzero = d != 0
      assert nonzero.mean() > 0.5
      bound = eps * mult if linf_bound == "layer" else min(eps * mult, eps)
      np.testing.assert_allclose(np.abs(d[nonzero]), bound, rtol=1e-6)
  assert np.isfinite(float(clean["loss"]))


def test_rlat_loss_at_least_clean_ce(resnet, batch, rlat_loss):
  model, params, stats = resnet
  loss, aux = rlat_loss(params, stats, batch, jax.random.PRNGKey(3))
  clean = _train_ce(model, params, stats, batch["image"], batch["label"])
  assert float(loss) > float(clean)
  np.testing.assert_allclose(float(aux["metrics"]["clean_loss"]), float(clean), rtol=1e-5)
  assert 0 < float(aux["metrics"]["perturbation_norm"]) <= 0.08 + 1e-6
  for k in ("accuracy", "clean_accuracy"):
    assert 0.0 <= float(aux["metrics"][k]) <= 1.0


def test_rlat_param_gradient_holds_deltas_constant(resnet, batch):
  model, params, stats = resnet
  key = jax.random.PRNGKey(4)
  loss_fn = rlat.make_rlat(model)
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, stats, batch, key)[0]))(params)
  deltas, _ = _jit(rlat.rlat_deltas)(model, params, stats, batch, key)

  def manual(p):
    # Fixed deltas: input clipped to [0, 1], the rest through 'perturbations'.
    x = jnp.clip(batch["image"] + deltas["input"], 0.0, 1.0)
    perts = {k: v for k, v in deltas.items() if k != "input"}
    perts["input"] = jnp.zeros_like(x)
    logits, _ = model.apply({"params": p, "batch_stats": stats, "perturbations": perts}, x,
                            train=True, mutable=["batch_stats"])
    return _ce(logits, batch["label"])

  expected = jax.jit(jax.grad(manual))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               grads, expected)


def test_rlat_batch_stats_chain_the_attack_and_the_perturbed_pass(resnet, batch, rlat_loss):
  """Default `attack_bn_stats='update'` (the reference's PyTorch passes both update the
  running statistics): the perturbed pass starts from the statistics the attack's clean
  train-mode pass left. 'discard' (ours before): from the incoming statistics."""
  model, params, stats = resnet
  key = jax.random.PRNGKey(5)
  _, aux = rlat_loss(params, stats, batch, key)
  deltas, _ = _jit(rlat.rlat_deltas)(model, params, stats, batch, key)
  _, clean_stats = _jit(at.train_apply)(model, params, stats, batch["image"], key)
  _, chained, _ = _jit(rlat.perturbed_apply)(model, params, clean_stats, batch["image"],
                                             deltas, key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               aux["batch_stats"], chained)
  _, aux_discard = jax.jit(rlat.make_rlat(model, attack_bn_stats="discard"))(
      params, stats, batch, key)
  _, single, _ = _jit(rlat.perturbed_apply)(model, params, stats, batch["image"], deltas,
                                            key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               aux_discard["batch_stats"], single)
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), aux["batch_stats"],
                      aux_discard["batch_stats"])
  assert max(jax.tree.leaves(diff)) > 1e-4
  with pytest.raises(ValueError, match="attack_bn_stats"):
    rlat.make_rlat(model, attack_bn_stats="keep")
  with pytest.raises(ValueError, match="linf_bound"):
    rlat.make_rlat(model, linf_bound="none")


def test_rlat_layer_subset(resnet, batch):
  model, params, stats = resnet
  key = jax.random.PRNGKey(6)
  deltas, _ = _jit(rlat.rlat_deltas, layers=["stage2", "stem"])(model, params, stats, batch,
                                                                  key)
  assert set(deltas) == {"stem", "stage2"}
  mults = rlat.rlat_eps_multipliers(model, (16, 16, 3), ["stem", "stage2"])
  for mult, name in zip(mults, ["stem", "stage2"]):
    norms = jnp.sqrt(jnp.sum(deltas[name] ** 2, axis=(1, 2, 3)))
    np.testing.assert_allclose(norms, 0.08 * mult, rtol=1e-5)
  loss_sub, aux_sub = jax.jit(rlat.make_rlat(model, layers=["stem", "stage2"]))(
      params, stats, batch, key)
  assert float(aux_sub["metrics"]["perturbation_norm"]) == 0.0  # input untouched
  assert float(loss_sub) > float(aux_sub["metrics"]["clean_loss"])
  # Input only: equivalent to the l2 image perturbation of norm eps (before clipping).
  d_in, _ = _jit(rlat.rlat_deltas, layers=["input"], eps=0.3)(model, params, stats, batch, key)
  np.testing.assert_allclose(jnp.sqrt(jnp.sum(d_in["input"] ** 2, axis=(1, 2, 3))), 0.3,
                             rtol=1e-5)


def test_rlat_fraction(resnet, batch):
  model, params, stats = resnet
  deltas, _ = _jit(rlat.rlat_deltas, fraction=0.25)(model, params, stats, batch,
                                                     jax.random.PRNGKey(7))
  for d in deltas.values():
    norms = np.asarray(jnp.sqrt(jnp.sum(d.reshape(d.shape[0], -1) ** 2, axis=1)))
    assert (norms[:8] > 0).all() and (norms[8:] == 0).all()


def test_rlat_bad_input(resnet, cnn):
  model = resnet[0]
  with pytest.raises(ValueError, match="conv9"):
    rlat.make_rlat(model, layers=["stem", "conv9"])
  with pytest.raises(ValueError, match="FEATURE_POINTS"):
    rlat.make_rlat(cnn[0])
  with pytest.raises(ValueError, match="eps"):
    rlat.make_rlat(model, eps=-0.1)
  with pytest.raises(ValueError, match="norm"):
    rlat.make_rlat(model, norm="l1")
  with pytest.raises(ValueError, match="fraction"):
    rlat.make_rlat(model, fraction=1.5)


# ----------------------------------------------------------------------------- AT


@pytest.mark.parametrize("factory,kwargs", [
    (at.make_linf_at, {}), (at.make_linf_at, {"eps": 8 / 255}),
    (at.make_l2_at, {}), (at.make_l2_at, {"eps": 0.5})])
def test_at_loss_at_least_clean_ce(cnn, batch, factory, kwargs):
  model, params, stats = cnn
  loss, aux = jax.jit(factory(model, **kwargs))(params, stats, batch, jax.random.PRNGKey(0))
  clean = _train_ce(model, params, stats, batch["image"], batch["label"])
  assert float(loss) > float(clean)
  assert 0.0 <= float(aux["metrics"]["accuracy"]) <= 1.0


def test_at_linf_perturbation_within_eps(cnn, batch):
  model, params, stats = cnn
  eps = 4 / 255
  x = batch["image"]
  x_adv = _jit(at.adversarial_batch, norm="linf", eps=eps, step_size=eps)(
      model, params, stats, batch, jax.random.PRNGKey(1))
  d = np.asarray(x_adv - x)
  assert np.abs(d).max() <= eps + 1e-6
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  # FGSM: every pixel not at the image boundary moved by exactly eps.
  interior = (np.asarray(x) >= eps) & (np.asarray(x) <= 1 - eps)
  moved = np.abs(d[interior])
  assert (np.isclose(moved, eps, atol=1e-6) | (moved == 0)).all()
  assert np.isclose(moved, eps, atol=1e-6).mean() > 0.9
  # PGD-3 with a random start stays in the ball too.
  x_pgd = _jit(at.adversarial_batch, norm="linf", eps=eps, step_size=eps / 4, num_steps=3,
               random_init=True)(model, params, stats, batch, jax.random.PRNGKey(1))
  assert float(jnp.max(jnp.abs(x_pgd - x))) <= eps + 1e-6
  assert float(jnp.max(jnp.abs(x_pgd - x_adv))) > 0


def test_at_l2_perturbation_projected(cnn, batch):
  model, params, stats = cnn
  x = batch["image"]
  x_adv = _jit(at.adversarial_batch, norm="l2", eps=0.1, step_size=0.5)(
      model, params, stats, batch, jax.random.PRNGKey(1))
  norms = np.asarray(jnp.sqrt(jnp.sum((x_adv - x) ** 2, axis=(1, 2, 3))))
  # Step 0.5 then projection onto the 0.1-ball: every perturbation has norm exactly 0.1.
  np.testing.assert_allclose(norms, 0.1, rtol=1e-5)
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_at_fraction_half(cnn, batch):
  model, params, stats = cnn
  x = batch["image"]
  x_adv = _jit(at.adversarial_batch, norm="linf", eps=2 / 255, step_size=2 / 255,
               fraction=0.5)(model, params, stats, batch, jax.random.PRNGKey(1))
  changed = np.asarray(jnp.any(x_adv != x, axis=(1, 2, 3)))
  assert changed[:16].all() and not changed[16:].any()


def test_at_batch_stats_discard_keeps_only_the_training_pass(cnn, batch):
  model, params, stats = cnn
  key = jax.random.PRNGKey(2)
  loss_fn = at.make_linf_at(model, eps=8 / 255, attack_bn_stats="discard")
  loss, aux = jax.jit(loss_fn)(params, stats, batch, key)
  attack_key, dropout_key = jax.random.split(key)
  x_adv = _jit(at.adversarial_batch, norm="linf", eps=8 / 255, step_size=8 / 255)(
      model, params, stats, batch, attack_key)
  logits, expected = _jit(at.train_apply)(model, params, stats, x_adv, dropout_key)
  np.testing.assert_allclose(float(loss), float(_ce(logits, batch["label"])), rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               aux["batch_stats"], expected)


def test_at_batch_stats_default_chains_every_attack_pass(cnn, batch):
  """Default `attack_bn_stats='update'`: as in the reference (PyTorch, `model.train()`),
  each of the attack's train-mode passes updates the running statistics, in order, and the
  training pass starts from them. PGD-2: pass 1 at x, pass 2 at the first iterate (= the
  1-step attack's result), then the training pass at the final images."""
  model, params, stats = cnn
  key = jax.random.PRNGKey(2)
  eps, step = 8 / 255, 4 / 255
  loss, aux = jax.jit(at.make_linf_at(model, eps=eps, step_size=step, num_steps=2))(
      params, stats, batch, key)
  attack_key, dropout_key = jax.random.split(key)
  inner_dropout = jax.random.split(attack_key)[1]        # adversarial_batch's split
  x1 = _jit(at.adversarial_batch, norm="linf", eps=eps, step_size=step)(
      model, params, stats, batch, attack_key)
  x2 = _jit(at.adversarial_batch, norm="linf", eps=eps, step_size=step, num_steps=2)(
      model, params, stats, batch, attack_key)
  _, s1 = _jit(at.train_apply)(model, params, stats, batch["image"], inner_dropout)
  _, s2 = _jit(at.train_apply)(model, params, s1, x1, inner_dropout)
  logits, expected = _jit(at.train_apply)(model, params, s2, x2, dropout_key)
  np.testing.assert_allclose(float(loss), float(_ce(logits, batch["label"])), rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               aux["batch_stats"], expected)
  # adversarial_batch(return_batch_stats=True) returns the same images and s2.
  x_ret, s_ret = _jit(at.adversarial_batch, norm="linf", eps=eps, step_size=step,
                      num_steps=2, return_batch_stats=True)(
      model, params, stats, batch, attack_key)
  np.testing.assert_allclose(np.asarray(x_ret), np.asarray(x2), atol=1e-7)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), s_ret, s2)
  # ... and differs from the training pass alone ('discard', ours before).
  _, single = _jit(at.train_apply)(model, params, stats, x2, dropout_key)
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), aux["batch_stats"], single)
  assert max(jax.tree.leaves(diff)) > 1e-4
  with pytest.raises(ValueError, match="attack_bn_stats"):
    at.make_l2_at(model, attack_bn_stats="both")


def _l2_start_norms(**kw):
  """Per-example l2 norms of `input_attack`'s random start (step size 0; x = 0.5 keeps
  clipping and the eps-ball projection out of it)."""
  x = jnp.full((8, 4, 4, 3), 0.5)
  y = jnp.zeros(8, jnp.int32)
  x_adv = at.input_attack(lambda im: im.reshape(8, -1)[:, :3], x, y, jax.random.PRNGKey(4),
                          norm="l2", eps=0.5, step_size=0.0, random_init=True, **kw)
  return np.sqrt(np.sum(np.square(np.asarray(x_adv - x, np.float64)).reshape(8, -1), 1))


def test_at_l2_random_start_radius_is_one_per_batch_by_default():
  """The reference's l2 random start (`utils.attack_pgd_training`, `rs=True`): a Gaussian
  direction per example, ONE radius `np.random.uniform(0, eps)` for the batch; ours
  before ('example'): a radius per example."""
  batch_norms = _l2_start_norms()
  assert 0.0 < batch_norms[0] <= 0.5
  np.testing.assert_allclose(batch_norms, batch_norms[0], rtol=1e-5)
  example = _l2_start_norms(random_radius="example")
  assert np.all(example <= 0.5 + 1e-6) and example.std() > 0.02
  with pytest.raises(ValueError, match="random_radius"):
    _l2_start_norms(random_radius="pixel")
  with pytest.raises(ValueError, match="order"):
    _l2_start_norms(order="clip")


def test_at_no_param_gradient_through_attack(cnn, batch):
  model, params, stats = cnn
  key = jax.random.PRNGKey(3)
  loss_fn = at.make_l2_at(model, eps=0.5)
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, stats, batch, key)[0]))(params)
  attack_key, dropout_key = jax.random.split(key)
  x_adv = _jit(at.adversarial_batch, norm="l2", eps=0.5, step_size=0.5)(
      model, params, stats, batch, attack_key)
  expected = jax.jit(jax.grad(lambda p: _ce(at.train_apply(model, p, stats, x_adv, dropout_key)[0],
                                    batch["label"])))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               grads, expected)


def test_at_bad_input(cnn):
  model = cnn[0]
  with pytest.raises(ValueError, match="eps"):
    at.make_linf_at(model, eps=-1.0)
  with pytest.raises(ValueError, match="norm"):
    at.make_adversarial_training(model, norm="l3")
  with pytest.raises(ValueError, match="num_steps"):
    at.make_linf_at(model, num_steps=0)
  with pytest.raises(ValueError, match="fraction"):
    at.make_l2_at(model, fraction=-0.5)


# ----------------------------------------------------------------------------- noise


def _members(values, allowed) -> bool:
  values = np.asarray(values, np.float64)
  return bool(np.isclose(values[:, None], np.asarray(allowed)[None], rtol=1e-6).any(1).all())


def test_gaussian_noise_statistics():
  x = jnp.full((32, 16, 16, 3), 0.5)
  noisy, sigma = _add_noise(x, jax.random.PRNGKey(0), sigmas=(0.1,), fraction=0.5)
  r = np.asarray(noisy - x).reshape(32, -1)
  np.testing.assert_allclose(r[:16].std(1), 0.1, rtol=0.1)
  np.testing.assert_allclose(r[:16].std(), 0.1, rtol=0.02)
  assert abs(r[:16].mean()) < 0.005
  assert (r[16:] == 0).all()
  np.testing.assert_allclose(np.asarray(sigma), [0.1] * 16 + [0.0] * 16, rtol=1e-6)
  # 100% with sigma 0.05.
  noisy, _ = _add_noise(x, jax.random.PRNGKey(0), sigmas=(0.05,), fraction=1.0)
  np.testing.assert_allclose(np.asarray(noisy - x).std(), 0.05, rtol=0.02)
  # Clipped to [0, 1].
  noisy, _ = _add_noise(jnp.full((4, 8, 8, 3), 0.95), jax.random.PRNGKey(0), sigmas=(0.2,))
  assert float(noisy.max()) == 1.0 and float(noisy.min()) >= 0.0


def test_gnt_mult_sigmas_from_set():
  x = jnp.full((64, 16, 16, 3), 0.5)
  noisy, sigma = _add_noise(x, jax.random.PRNGKey(1), sigmas=na.GNT_MULT_SIGMAS,
                              fraction=1.0)
  sigma = np.asarray(sigma)
  assert _members(sigma, na.GNT_MULT_SIGMAS)
  assert len(np.unique(sigma)) >= 4  # drawn per image
  r = np.asarray(noisy - x).reshape(64, -1)
  small = sigma <= 0.12  # (larger ones are clipped at 0.5 / sigma standard deviations)
  np.testing.assert_allclose(r[small].std(1), sigma[small], rtol=0.1)
  assert (r[sigma >= 0.26].std(1) > 0.18).all()


def test_speckle_proportional_to_x():
  # Half the pixels 0 (no change), half 0.2 (residual std 0.2 * sigma, never clipped).
  x = jnp.concatenate([jnp.zeros((16, 8, 16, 3)), jnp.full((16, 8, 16, 3), 0.2)], axis=1)
  noisy, sigma = _add_noise(x, jax.random.PRNGKey(2), kind="speckle", sigmas=(0.15,))
  r = np.asarray(noisy - x)
  assert (r[:, :8] == 0).all()
  np.testing.assert_allclose(r[:, 8:].std(), 0.2 * 0.15, rtol=0.03)
  _, sig = _add_noise(x, jax.random.PRNGKey(2), kind="speckle", sigmas=na.SPECKLE_SIGMAS,
                        fraction=1.0)
  assert _members(sig, na.SPECKLE_SIGMAS)


def test_noise_deterministic_and_per_example_keys(batch):
  x = batch["image"]
  a, _ = _add_noise(x, jax.random.PRNGKey(3), sigmas=na.GNT_MULT_SIGMAS, fraction=1.0)
  b, _ = _add_noise(x, jax.random.PRNGKey(3), sigmas=na.GNT_MULT_SIGMAS, fraction=1.0)
  c, _ = _add_noise(x, jax.random.PRNGKey(4), sigmas=na.GNT_MULT_SIGMAS, fraction=1.0)
  np.testing.assert_array_equal(a, b)
  assert float(jnp.max(jnp.abs(a - c))) > 0
  # Example i's noise comes from split(key, B)[i]: the first 8 of a batch of 32 get the
  # same noise as a batch of those 8 alone; different examples get different noise.
  half, _ = _add_noise(x[:8], jax.random.PRNGKey(3), sigmas=na.GNT_MULT_SIGMAS,
                         fraction=1.0)
  np.testing.assert_allclose(half, a[:8], rtol=0, atol=1e-7)
  r = a - x
  assert float(jnp.max(jnp.abs(r[0] - r[1]))) > 0.01  # examples get different noise


def test_noise_bad_input(cnn):
  model = cnn[0]
  with pytest.raises(ValueError, match="sigma"):
    na.make_gaussian_augmentation(model, sigma=-0.1)
  with pytest.raises(ValueError, match="kind"):
    na.make_noise_augmentation(model, kind="poisson")
  with pytest.raises(ValueError, match="fraction"):
    na.make_speckle(model, fraction=2.0)


# ----------------------------------------------------------------------------- train step


@pytest.mark.parametrize("name", ["linf_at", "l2_at", "gaussian_augmentation", "gnt_mult",
                                  "speckle", "rlat"])
def test_factory_trains_under_jit(name, batch, cnn, resnet):
  import ml_collections
  model = (resnet if name == "rlat" else cnn)[0]
  from adacorr import run
  config = ml_collections.ConfigDict({"method": name, "method_kwargs": {"fraction": 1.0}})
  loss_fn = run.make_method(model, config)
  tx = optax.sgd(0.05, momentum=0.9)
  _, params, stats = resnet if name == "rlat" else cnn
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
                     opt_state=tx.init(params), rng=jax.random.PRNGKey(0))
  step = jax.jit(make_train_step(loss_fn, tx))
  # The loss of step 0's key at the initial and at the trained parameters (resetting
  # `step` to 0 reuses the step's key; the returned loss is before the update).
  _, first = step(state, batch)
  for _ in range(4):
    state, metrics = step(state, batch)
    assert float(metrics["finite"]) == 1.0
  assert {"loss", "accuracy", "grad_norm"} <= set(metrics)
  _, last = step(state.replace(step=jnp.zeros((), jnp.int32)), batch)
  assert float(last["loss"]) < float(first["loss"])


def test_at_fgsm_step_matches_attacks_fgsm(cnn, batch):
  attacks = pytest.importorskip("adacorr.attacks")
  model, params, stats = cnn
  eps = 4 / 255

  def both(p, s, x, y):
    logits_fn = lambda images: at.train_apply(model, p, s, images, jax.random.PRNGKey(0))[0]
    return (at.input_attack(logits_fn, x, y, norm="linf", eps=eps, step_size=eps),
            attacks.fgsm(logits_fn, x, y, eps=eps))

  ours, theirs = jax.jit(both)(params, stats, batch["image"], batch["label"])
  np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_imagenet100_rlat_config_builds_the_reference_model():
  import importlib  # pylint: disable=import-outside-toplevel
  from adacorr import data as data_lib  # pylint: disable=import-outside-toplevel
  from adacorr.train import loop  # pylint: disable=import-outside-toplevel
  config = importlib.import_module("experiments.configs.imagenet100_rlat").get_config()
  model = loop.build_model(config, data_lib.DATASETS[config.dataset])
  assert model.stem == "imagenet" and config.method_kwargs.eps == 0.02
  # At the 128x128 training crops: conv1 (7, stride 2, padding 1) -> 62x62x64.
  mults = rlat.rlat_eps_multipliers(model, (128, 128, 3))
  np.testing.assert_allclose(mults[1], 62 * 62 * 64 / (128 * 128 * 3) / 2, rtol=1e-12)
