"""AugMix (+JSD), RobustAugMix and the AugMix combinations (AdA + AugMix, AugMix (+JSD) +
RLAT) as training methods (`adacorr.methods.augmix`, `make_ada(augmix=)`,
`make_rlat(augmix=)`).

The objectives' wiring is checked with AugMix replaced by known functions (identity,
negative): with identical views the JSD is 0 and each combination reduces to its
method without AugMix; with different views the loss is CE + 12 * JSD recomputed in
numpy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import methods
from adacorr.methods import augmix as augmix_method
from adacorr.methods import rlat
from adacorr.models import PreActResNet, SmallCNN
from flat_init import flat_init, uniform

MEAN, STD = (0.5,) * 3, (0.25,) * 3


@pytest.fixture(scope="module")
def batch():
  return {"image": uniform(1, (8, 16, 16, 3)), "label": jnp.arange(8, dtype=jnp.int32) % 10}


@pytest.fixture(scope="module")
def cnn():
  model = SmallCNN(num_classes=10, features=(4, 8), dense=16, mean=MEAN, std=STD)
  return model, flat_init(model, (1, 16, 16, 3), seed=0)


@pytest.fixture(scope="module")
def resnet():
  model = PreActResNet(stage_sizes=(1, 1, 1, 1), width=4, mean=MEAN, std=STD)
  return model, flat_init(model, (1, 16, 16, 3), seed=2, bn_bias=0.1)


def _np_ce(logits, labels):
  logits = np.asarray(logits, np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  return -np.mean(logp[np.arange(len(labels)), labels])


def _np_jsd(*logits):
  ps = []
  for z in logits:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    ps.append(e / e.sum(-1, keepdims=True))
  m = np.clip(sum(ps) / 3, 1e-7, 1)
  return np.mean([np.sum(p * (np.log(p) - np.log(m)), -1).mean() for p in ps])


def _run(loss_fn, variables, batch, seed=3):
  loss, aux = jax.jit(loss_fn)(variables["params"], variables["batch_stats"], batch,
                               jax.random.key(seed))
  return float(loss), jax.device_get(aux["metrics"])


@pytest.fixture
def fake_augmix(monkeypatch):
  """Replaces AugMix inside the methods by `fn(images) ` (a key-free known function)."""
  def use(fn):
    monkeypatch.setattr(augmix_method, "augmix", lambda images, key, **kw: fn(images))
  return use


def _logits(model, variables, x):
  """Train-mode logits of `x` (BatchNorm on the batch `x`)."""
  logits, _ = methods.adversarial_training.train_apply(
      model, variables["params"], variables["batch_stats"], x, jax.random.key(0))
  return np.asarray(logits)


def test_augmix_jsd_loss_is_ce_plus_12_jsd_of_the_three_views(cnn, batch, fake_augmix):
  model, variables = cnn
  fake_augmix(lambda x: 1.0 - x)
  loss, metrics = _run(methods.make_augmix(model), variables, batch)
  x, y = batch["image"], np.asarray(batch["label"])
  logits = _logits(model, variables, jnp.concatenate([x, 1.0 - x, 1.0 - x]))
  clean, aug = logits[:8], logits[8:16]
  expected_jsd = _np_jsd(clean, aug, aug)
  assert expected_jsd > 1e-4
  np.testing.assert_allclose(metrics["jsd"], expected_jsd, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(loss, _np_ce(clean, y) + 12.0 * expected_jsd, rtol=1e-4)


def test_augmix_with_identical_views_is_nominal_training(cnn, batch, fake_augmix):
  model, variables = cnn
  fake_augmix(lambda x: x)
  loss, metrics = _run(methods.make_augmix(model), variables, batch)
  assert abs(float(metrics["jsd"])) < 1e-6
  np.testing.assert_allclose(
      loss, _np_ce(_logits(model, variables, batch["image"]), np.asarray(batch["label"])),
      rtol=1e-4)
  # Without JSD the classifier trains on the AugMix images only.
  fake_augmix(lambda x: 1.0 - x)
  loss, _ = _run(methods.make_augmix(model, jsd=False), variables, batch)
  np.testing.assert_allclose(
      loss, _np_ce(_logits(model, variables, 1.0 - batch["image"]),
                   np.asarray(batch["label"])), rtol=1e-4)


def test_real_augmix_jsd_is_positive_and_trains(cnn, batch):
  model, variables = cnn
  loss_fn = methods.make_augmix(model, severity=3)
  grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  (loss, aux), grads = grad_fn(variables["params"], variables["batch_stats"], batch,
                               jax.random.key(0))
  assert np.isfinite(float(loss)) and float(aux["metrics"]["jsd"]) > 0
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_robust_augmix_adversarial_view_is_in_the_l2_ball_and_raises_the_jsd(
    cnn, batch, fake_augmix):
  model, variables = cnn
  fake_augmix(lambda x: x)
  loss, metrics = _run(methods.make_robust_augmix(model, eps=0.5, num_steps=3), variables,
                       batch)
  assert 0.0 < float(metrics["perturbation_norm"]) <= 0.5 + 1e-4
  assert float(metrics["jsd"]) > 1e-6  # only the adversarial view differs
  # With eps 0 the adversarial view is the clean image: nominal training.
  loss0, metrics0 = _run(methods.make_robust_augmix(model, eps=0.0, num_steps=1,
                                                    random_init=False), variables, batch)
  assert abs(float(metrics0["jsd"])) < 1e-6
  ce = _np_ce(_logits(model, variables, batch["image"]), np.asarray(batch["label"]))
  np.testing.assert_allclose(loss0, ce, rtol=1e-4)


def test_rlat_with_identical_augmix_views_equals_plain_rlat(resnet, batch, fake_augmix):
  model, variables = resnet
  fake_augmix(lambda x: x)
  plain, _ = _run(rlat.make_rlat(model, eps=0.08), variables, batch)
  jsd_loss, metrics = _run(rlat.make_rlat(model, eps=0.08, augmix=dict(jsd=True)), variables,
                           batch)
  assert abs(float(metrics["jsd"])) < 1e-5
  np.testing.assert_allclose(jsd_loss, plain, rtol=1e-4)
  single, _ = _run(rlat.make_rlat(model, eps=0.08, augmix=dict(jsd=False)), variables, batch)
  np.testing.assert_allclose(single, plain, rtol=1e-4)


def test_rlat_augmix_jsd_perturbs_all_views_and_adds_the_jsd(resnet, batch, fake_augmix):
  model, variables = resnet
  fake_augmix(lambda x: 1.0 - x)
  loss, metrics = _run(rlat.make_rlat(model, eps=0.08, augmix=dict(jsd=True)), variables,
                       batch)
  assert float(metrics["jsd"]) > 1e-4 and float(metrics["perturbation_norm"]) > 0
  # eps 0: exactly the AugMix + JSD loss on the same views.
  loss0, _ = _run(rlat.make_rlat(model, eps=0.0, augmix=dict(jsd=True)), variables, batch)
  ref, _ = _run(methods.make_augmix(model, jsd=True), variables, batch)
  np.testing.assert_allclose(loss0, ref, rtol=1e-4)
  assert loss > loss0  # the perturbation raises the loss


def test_ada_with_augmix_is_the_last_stage(cnn, batch, fake_augmix):
  model, variables = cnn
  backbone = methods.Backbone("scale", lambda p, x: jnp.clip(x * p["a"], 0.0, 1.0),
                              {"a": jnp.float32(0.7)})
  kw = dict(backbones=[backbone], nu=0.1, num_steps=1, chunk_size="none")
  fake_augmix(lambda x: x)
  plain, m_plain = _run(methods.make_ada(model, **kw), variables, batch)
  with_jsd, m_jsd = _run(methods.make_ada(model, augmix=dict(jsd=True), **kw), variables, batch)
  assert abs(float(m_jsd["jsd"])) < 1e-6
  np.testing.assert_allclose(with_jsd, plain, rtol=1e-4)
  np.testing.assert_allclose(m_jsd["ssim"], m_plain["ssim"], rtol=1e-6)
  fake_augmix(lambda x: 1.0 - x)
  flipped, _ = _run(methods.make_ada(model, augmix=dict(jsd=False), **kw), variables, batch)
  assert abs(flipped - plain) > 1e-3  # AugMix's output is what the classifier sees


def test_bad_augmix_arguments_raise_named_errors(cnn):
  model, _ = cnn
  with pytest.raises(ValueError, match="severity"):
    methods.make_augmix(model, severity=0)
  with pytest.raises(ValueError, match="width"):
    methods.make_augmix(model, width=0)
  with pytest.raises(ValueError, match="depth"):
    methods.make_augmix(model, depth=0)
  with pytest.raises(ValueError, match="alpha"):
    methods.make_augmix(model, alpha=0.0)
  with pytest.raises(ValueError, match="jsd_weight"):
    methods.make_augmix(model, jsd_weight=-1.0)
  with pytest.raises(ValueError, match="unknown keys"):
    methods.check_augmix_kwargs(dict(sevrity=3))
  with pytest.raises(ValueError, match="eps"):
    methods.make_robust_augmix(model, eps=-1.0)


# ---- RobustAugMix's attack: BatchNorm mode and PGD start (the first author's code) ----

RAM_ATTACK = dict(eps=0.5, num_steps=3, step_size=2.5 * 0.5 / 3)


def _far_stats(variables):
  """`variables` with BatchNorm running statistics far from any batch's (mean +1, var x9):
  eval-mode and train-mode BatchNorm then give very different features."""
  stats = jax.tree_util.tree_map_with_path(
      lambda path, v: v + 1.0 if path[-1].key == "mean" else 9.0 * v, variables["batch_stats"])
  return dict(variables, batch_stats=stats)


def _mid_batch(batch):
  """The batch with images in [0.25, 0.75]: a start of norm eps 0.5 is never clipped."""
  return dict(batch, image=0.25 + 0.5 * batch["image"])


def _ram_attack(model, variables, **kw):
  """`(x, y, key) -> robust_augmix_attack(...)`, jitted once."""
  return jax.jit(lambda x, y, key: augmix_method.robust_augmix_attack(
      model, variables["params"], variables["batch_stats"], x, y, key,
      dropout_key=jax.random.key(9), **RAM_ATTACK, **kw))


def _eval_mode_attack(model, variables, x, y, key, random_start, order="project_clip"):
  """The attack written out with BatchNorm on the running statistics (`train=False`)."""
  def logits_fn(images):
    return model.apply(variables, images, train=False)
  return jax.jit(lambda x, y, key: methods.input_attack(
      logits_fn, x, y, key, norm="l2", random_init=True, random_start=random_start,
      random_radius="example", order=order, **RAM_ATTACK))(x, y, key)


def test_robust_augmix_attack_runs_batchnorm_in_eval_mode_by_default(cnn, batch):
  """The author's code wraps its PGD in `model.eval()`: the attack's forward passes use
  the running statistics, so an example's attack ignores the rest of the batch."""
  model, variables = cnn
  variables = _far_stats(variables)
  x, y, key = batch["image"], batch["label"], jax.random.key(4)
  default_fn = _ram_attack(model, variables)
  train_fn = _ram_attack(model, variables, attack_bn_mode="train")
  default = np.asarray(default_fn(x, y, key))
  np.testing.assert_allclose(default, _eval_mode_attack(model, variables, x, y, key, "sphere"),
                             atol=1e-6)
  train = np.asarray(train_fn(x, y, key))
  assert np.max(np.abs(default - train)) > 0.05  # the BN mode changes the attack
  # Replace examples 1..7: example 0's attack stays in eval mode, moves in train mode.
  x2 = x.at[1:].set(1.0 - x[1:])
  np.testing.assert_allclose(np.asarray(default_fn(x2, y, key))[0], default[0], atol=1e-6)
  assert np.max(np.abs(np.asarray(train_fn(x2, y, key))[0] - train[0])) > 1e-3


def test_robust_augmix_loss_uses_the_eval_mode_attack_and_keeps_the_old_one_as_option(
    cnn, batch, fake_augmix):
  model, variables = cnn
  variables = _far_stats(variables)
  fake_augmix(lambda x: x)
  x, y = batch["image"], np.asarray(batch["label"])
  seed = 3
  _, attack_key, attack_dropout, dropout_key = jax.random.split(jax.random.key(seed), 4)

  views_pass = jax.jit(lambda x_adv: methods.adversarial_training.train_apply(
      model, variables["params"], variables["batch_stats"], jnp.concatenate([x, x, x_adv]),
      dropout_key))

  def expected(x_adv):
    logits, stats = views_pass(x_adv)
    logits = np.asarray(logits)
    return _np_ce(logits[:8], y) + 12.0 * _np_jsd(logits[:8], logits[8:16], logits[16:]), stats

  def run(**kw):
    loss_fn = methods.make_robust_augmix(model, eps=0.5, num_steps=3, **kw)
    loss, aux = jax.jit(loss_fn)(variables["params"], variables["batch_stats"], batch,
                                 jax.random.key(seed))
    return float(loss), aux["batch_stats"]

  # Default: eval-mode BatchNorm, start on the sphere (the author's code).
  eval_loss, eval_stats = expected(_eval_mode_attack(model, variables, x, y, attack_key,
                                                     "sphere"))
  loss, stats = run(bn_views="pooled")
  np.testing.assert_allclose(loss, eval_loss, rtol=1e-4)
  # Only the training pass over the three views updates the running statistics.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               stats, eval_stats)
  # The earlier attack: train-mode BatchNorm (updates discarded), radius U(0, eps).
  def train_logits(images):
    return methods.adversarial_training.train_apply(
        model, variables["params"], variables["batch_stats"], images, attack_dropout)[0]
  x_old = jax.jit(lambda x, y, key: methods.input_attack(
      train_logits, x, y, key, norm="l2", random_init=True, random_radius="example",
      **RAM_ATTACK))(x, y, attack_key)
  old_loss, old_stats = expected(x_old)
  loss, stats = run(attack_bn_mode="train", random_start="ball", bn_views="pooled",
                    attack_order="clip_project")
  np.testing.assert_allclose(loss, old_loss, rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               stats, old_stats)
  assert abs(eval_loss - old_loss) > 1e-2 * abs(old_loss)


def test_robust_augmix_runs_three_train_mode_passes_by_default(cnn, batch, fake_augmix):
  # The author's trainer: model(clean), model(aug), model(adv), each train-mode, so each
  # view is normalised with its own batch statistics and the running statistics are
  # updated three times in that order. Here the AugMix view is 1 - x (far from x in
  # mean), so pooled and per-view statistics differ.
  model, variables = cnn
  fake_augmix(lambda x: 1.0 - x)
  x, y = batch["image"], np.asarray(batch["label"])
  seed = 3
  _, attack_key, _, dropout_key = jax.random.split(jax.random.key(seed), 4)
  x_adv = _eval_mode_attack(model, variables, x, y, attack_key, "sphere")
  train_apply = jax.jit(lambda stats, images, k: methods.adversarial_training.train_apply(
      model, variables["params"], stats, images, k))
  stats, logits = variables["batch_stats"], []
  for view, k in zip([x, 1.0 - x, x_adv], jax.random.split(dropout_key, 3)):
    out, stats = train_apply(stats, view, k)
    logits.append(np.asarray(out))
  expected = _np_ce(logits[0], y) + 12.0 * _np_jsd(*logits)
  loss_fn = methods.make_robust_augmix(model, eps=0.5, num_steps=3)
  loss, aux = jax.jit(loss_fn)(variables["params"], variables["batch_stats"], batch,
                               jax.random.key(seed))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               aux["batch_stats"], stats)
  pooled_fn = methods.make_robust_augmix(model, eps=0.5, num_steps=3, bn_views="pooled")
  pooled, pooled_aux = jax.jit(pooled_fn)(variables["params"], variables["batch_stats"],
                                          batch, jax.random.key(seed))
  assert abs(float(pooled) - float(loss)) > 1e-3 * abs(float(loss))
  diff = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                      pooled_aux["batch_stats"], aux["batch_stats"])
  assert max(jax.tree.leaves(diff)) > 1e-3
  with pytest.raises(ValueError, match="bn_views"):
    methods.make_robust_augmix(model, bn_views="both")


def _start(norm, eps, shape=(8, 16, 16, 3), **kw):
  """Per-example l_p norms of the PGD start: `input_attack` with step size 0 returns
  clip(x + delta_0) projected onto the ball; x = 0.5 keeps clipping out."""
  x = jnp.full(shape, 0.5)
  y = jnp.zeros(shape[0], jnp.int32)
  w = uniform(5, (int(np.prod(shape[1:])), 10)) - 0.5

  def logits_fn(images):
    return images.reshape(images.shape[0], -1) @ w

  x_adv = methods.input_attack(logits_fn, x, y, jax.random.key(6), norm=norm, eps=eps,
                               step_size=0.0, num_steps=1, random_init=True, **kw)
  delta = np.asarray(x_adv - x, np.float64).reshape(shape[0], -1)
  return np.abs(delta).max(-1) if norm == "linf" else np.linalg.norm(delta, axis=-1)


@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 8 / 255)])
def test_input_attack_sphere_start_lies_on_the_eps_sphere_and_ball_start_inside(norm, eps):
  np.testing.assert_allclose(_start(norm, eps, random_start="sphere"), eps, rtol=1e-5)
  ball = _start(norm, eps, random_start="ball", random_radius="example")
  assert np.all(ball <= eps * (1 + 1e-5))
  if norm == "l2":  # radius U(0, eps) per example: spread inside the ball
    assert ball.min() < 0.7 * eps and ball.std() > 0.05 * eps
  # `random_start` is additive: l_p AT's calls (without it) keep the ball start (with
  # the reference's one radius per batch for l2).
  np.testing.assert_array_equal(_start(norm, eps), _start(norm, eps, random_start="ball"))


def test_robust_augmix_pgd_starts_on_the_eps_sphere_by_default(cnn, batch, fake_augmix):
  """Step size 0: the adversarial view is the start. The author's start is on the
  eps-sphere (every example at norm eps); `random_start='ball'` (ours before) inside."""
  model, variables = cnn
  fake_augmix(lambda x: x)
  mid = _mid_batch(batch)
  kw = dict(eps=0.5, num_steps=1, step_size=0.0)
  default = methods.make_robust_augmix(model, **kw)
  _, metrics = _run(default, variables, mid)
  np.testing.assert_allclose(metrics["perturbation_norm"], 0.5, rtol=1e-5)
  # Near the pixel range's ends the start is clipped: its norm is at most eps.
  _, metrics = _run(default, variables, batch)
  assert 0.3 < float(metrics["perturbation_norm"]) <= 0.5 + 1e-5
  _, metrics = _run(methods.make_robust_augmix(model, random_start="ball", **kw), variables,
                    mid)
  assert float(metrics["perturbation_norm"]) < 0.4


def _author_pgd_l2(logits_fn, x, y, key, *, eps, step_size, num_steps):
  """martinez-hub/robustaugmix `attacks/pgd.py::pgd_l2_attack`, transcribed: a Gaussian
  start projected onto the l2 eps-ball (here drawn as `input_attack`'s 'sphere' start),
  clipped; each step `adv + step * g / ||g||` (g w.r.t. the image), projection of
  `adv - x` onto the ball (`clamp_min(1e-12)`, factor `min(eps / ||.||, 1)`), then clip."""
  def l2(v):
    return jnp.sqrt(jnp.sum(v ** 2, axis=(1, 2, 3), keepdims=True))

  d = jax.random.normal(jax.random.split(key)[0], x.shape, x.dtype)
  d = d * eps / jnp.maximum(l2(d), 1e-12)
  adv = jnp.clip(x + d, 0.0, 1.0)

  def ce(a):
    logp = jax.nn.log_softmax(logits_fn(a))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1))

  for _ in range(num_steps):
    g = jax.grad(ce)(adv)
    adv = adv + step_size * g / jnp.maximum(l2(g), 1e-12)
    delta = adv - x
    delta = delta * jnp.minimum(eps / jnp.maximum(l2(delta), 1e-12), 1.0)
    adv = jnp.clip(x + delta, 0.0, 1.0)
  return adv


def test_robust_augmix_pgd_projects_then_clips_like_the_author_by_default(cnn, batch):
  """The author's `pgd_l2_attack` projects onto the eps-ball and THEN clips to [0, 1],
  stepping from the clipped start with the gradient w.r.t. the image: the default
  (`attack_order='project_clip'`). 'clip_project' (l_p AT's order, ours before) ends
  elsewhere where pixels clip (eps 0.5 over 768 pixels of uniform images)."""
  model, variables = cnn
  x, y, key = batch["image"], batch["label"], jax.random.key(4)

  def logits_fn(images):
    return model.apply(variables, images, train=False)

  expected = jax.jit(lambda x, y, key: _author_pgd_l2(logits_fn, x, y, key, **RAM_ATTACK))(
      x, y, key)
  default = np.asarray(_ram_attack(model, variables)(x, y, key))
  np.testing.assert_allclose(default, np.asarray(expected), atol=2e-6)
  old = np.asarray(_ram_attack(model, variables, attack_order="clip_project")(x, y, key))
  assert np.max(np.abs(old - default)) > 1e-3
  norms = np.sqrt(np.sum(np.square(default - np.asarray(x)), axis=(1, 2, 3)))
  assert np.all(norms <= 0.5 + 1e-5) and default.min() >= 0.0 and default.max() <= 1.0


def test_robust_augmix_bad_attack_options_raise_named_errors(cnn):
  model, _ = cnn
  with pytest.raises(ValueError, match="random_start"):
    methods.make_robust_augmix(model, random_start="uniform")
  with pytest.raises(ValueError, match="attack_bn_mode"):
    methods.make_robust_augmix(model, attack_bn_mode="test")
  with pytest.raises(ValueError, match="attack_order"):
    methods.make_robust_augmix(model, attack_order="clip")
  with pytest.raises(ValueError, match="random_start"):
    methods.input_attack(lambda im: im, jnp.zeros((1, 2, 2, 1)), jnp.zeros(1, jnp.int32),
                         jax.random.key(0), norm="l2", eps=0.5, step_size=0.1,
                         random_init=True, random_start="shell")
