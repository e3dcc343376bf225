"""The AdA training method (`adacorr.methods.ada`): pipeline stages, AdA(All) shares,
backbone specs, and the loss function in a train step."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adacorr import attacks
from adacorr import run
from adacorr import methods
from adacorr.methods import ada as ada_method
from adacorr.models import SmallCNN


def _scale_backbone(name="scale"):
  return methods.Backbone(name, lambda p, x: jnp.clip(x * p["a"], 0.0, 1.0),
                          {"a": jnp.float32(0.5)})


def _shift_backbone(name="shift"):
  return methods.Backbone(name, lambda p, x: jnp.clip(x + p["b"], 0.0, 1.0),
                          {"b": jnp.float32(0.25)})


def _clf():
  model = SmallCNN(num_classes=4, features=(4, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
  return model, variables


def test_split_sizes_are_equal_shares():
  assert methods.split_sizes(10, 4) == [3, 3, 2, 2]
  assert methods.split_sizes(8, 2) == [4, 4]
  assert sum(methods.split_sizes(7, 3)) == 7


def test_ada_all_gives_each_backbone_its_share():
  model, variables = _clf()
  x = jax.random.uniform(jax.random.key(1), (6, 8, 8, 3), minval=0.2, maxval=0.6)
  y = jnp.zeros((6,), jnp.int32)
  stage = methods.ada_stage([_scale_backbone(), _shift_backbone()], nu=1e-6, num_steps=0,
                            ssim_threshold=None)
  logits_fn = lambda imgs: model.apply(variables, imgs, train=False)
  out, metrics = stage(logits_fn, x, y, jax.random.key(2))
  np.testing.assert_allclose(out[:3], x[:3] * 0.5, atol=1e-5)
  np.testing.assert_allclose(out[3:], x[3:] + 0.25, atol=1e-5)
  assert set(metrics) == {"ssim", "ssim_before_line_search"}


@pytest.mark.filterwarnings("ignore:nu=0.5 is a relative weight perturbation")
@pytest.mark.parametrize("strict", [False, True])
def test_stage_line_search_keeps_ssim_above_threshold(strict):
  model, variables = _clf()
  x = jax.image.resize(jax.random.uniform(jax.random.key(3), (6, 4, 4, 3)), (6, 16, 16, 3),
                       "bilinear")
  y = jnp.arange(6) % 4
  darken = methods.Backbone("darken", lambda p, imgs: jnp.clip(imgs * p["a"] + p["b"], 0, 1),
                            {"a": jnp.float32(0.05), "b": jnp.float32(0.9)})
  stage = methods.ada_stage([darken], nu=0.5, num_steps=2, ssim_threshold=0.6,
                            ssim_strict=strict)
  model16 = SmallCNN(num_classes=4, features=(4, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
  v16 = model16.init(jax.random.key(0), x[:1], train=False)
  out, metrics = stage(lambda imgs: model16.apply(v16, imgs, train=False), x, y,
                       jax.random.key(4))
  # strict: every output obeys the threshold; App. F (default): its quadratic fit may land
  # a little below (up to ~0.02 on our measurements).
  slack = 1e-5 if strict else 0.03
  assert float(metrics["ssim_before_line_search"]) < 0.6 - slack < float(metrics["ssim"])
  assert float(metrics["line_search_fraction"]) > 0
  assert np.all(np.asarray(attacks.ssim(x, out)) >= 0.6 - slack)


@pytest.mark.filterwarnings("ignore:nu=0.9 is a relative weight perturbation")
def test_per_backbone_overrides_reach_the_attack():
  model, variables = _clf()
  x = jax.random.uniform(jax.random.key(5), (4, 8, 8, 3), minval=0.2, maxval=0.6)
  y = jnp.zeros((4,), jnp.int32)
  logits_fn = lambda imgs: model.apply(variables, imgs, train=False)
  tight = methods.Backbone("tight", _shift_backbone().apply, {"b": jnp.float32(0.25)},
                           nu=1e-3)
  out, _ = methods.ada_stage([tight], nu=0.9, num_steps=3, ssim_threshold=None)(
      logits_fn, x, y, jax.random.key(6))
  # |delta_b| <= 1e-3 * 0.25: the output is within 2.5e-4 of the unperturbed shift.
  np.testing.assert_allclose(out, x + 0.25, atol=2.6e-4)


def test_bad_stage_arguments_raise():
  with pytest.raises(ValueError, match="backbones"):
    methods.ada_stage([])
  with pytest.raises(ValueError, match="nu"):
    methods.ada_stage([_scale_backbone()], nu=0.0)
  with pytest.raises(ValueError, match="num_steps"):
    methods.ada_stage([_scale_backbone()], num_steps=-2)
  with pytest.raises(ValueError, match="nu"):
    methods.ada_stage([methods.Backbone("b", _scale_backbone().apply, {"a": 1.0}, nu=-1.0)])


def test_load_backbone_specs():
  b = run.load_backbone(dict(net="unet", init="random"), image_shape=(16, 16, 3))
  assert b.name == "unet"
  x = jax.random.uniform(jax.random.key(7), (2, 16, 16, 3))
  out = b.apply(b.params, x)
  assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
  b2 = run.load_backbone(dict(net="vqvae", name="vq", init="random", nu=0.02,
                                  net_kwargs=dict(num_hiddens=16, num_residual_hiddens=8,
                                                  embedding_dim=8, num_embeddings=16)),
                             image_shape=(16, 16, 1))
  assert b2.name == "vq" and b2.nu == 0.02
  # The VQ-VAE's codebook is held fixed, only 'params' are perturbable blocks.
  assert "vq_ema" not in b2.params
  assert b2.apply(b2.params, x[..., :1]).shape == (2, 16, 16, 1)
  with pytest.raises(ValueError, match="net"):
    run.load_backbone(dict(init="random"), image_shape=(16, 16, 3))
  with pytest.raises(ValueError, match="corruption net"):
    run.load_backbone(dict(net="nope", init="random"), image_shape=(16, 16, 3))
  with pytest.raises(ValueError, match="names no weights"):
    run.load_backbone(dict(net="edsr"))
  with pytest.raises(FileNotFoundError):
    run.load_backbone(dict(net="edsr", workdir="/nonexistent/adacorr_run"))


def test_ada_loss_fn_trains_on_ada_images_without_gradient_through_the_attack():
  config = ml_collections.ConfigDict(dict(
      dataset="synthetic", seed=0,
      method_kwargs=dict(backbones=(dict(net="edsr", init="random",
                                         net_kwargs=dict(num_blocks=1, features=8)),),
                         nu=0.05, num_steps=2, chunk_size="none")))
  model = SmallCNN(num_classes=10, features=(4, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
  config.method = "ada"
  loss_fn = run.make_method(model, config)
  batch = {"image": jax.random.uniform(jax.random.key(1), (4, 16, 16, 3)),
           "label": jnp.arange(4, dtype=jnp.int32)}
  grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  (loss, aux), grads = grad_fn(variables["params"], variables["batch_stats"], batch,
                               jax.random.key(2))
  assert np.isfinite(float(loss))
  assert {"accuracy", "ssim", "ssim_before_line_search", "line_search_fraction"} <= set(
      aux["metrics"])
  # App. F's line search (default) may land a little below t = 0.3 (its fit underfits).
  assert 0.3 - 0.03 <= float(aux["metrics"]["ssim"]) <= 1.0
  # The gradient equals that of plain CE on the (constant) AdA images.
  stage = methods.ada_stage(
      [run.load_backbone(config.method_kwargs.backbones[0], image_shape=(16, 16, 3))],
      nu=0.05, num_steps=2, chunk_size=None)
  ada_key = jax.random.split(jax.random.key(2), 3)[0]
  frozen = lambda imgs: model.apply(variables, imgs, train=False)
  x_ada, _ = stage(frozen, batch["image"], batch["label"], ada_key)

  dropout_key = jax.random.split(jax.random.key(2), 3)[2]

  def plain(params):  # train-mode CE on the AdA images, as constants
    logits, _ = ada_method.train_apply(model, params, variables["batch_stats"], x_ada,
                                       dropout_key)
    return ada_method.cross_entropy(logits, batch["label"])

  expected = jax.grad(plain)(variables["params"])
  for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    np.testing.assert_allclose(g, e, atol=1e-5)


def test_chunk_size_auto_none_and_digits():
  assert ada_method.resolve_chunk_size("auto") == "auto"  # resolved by attacks.ada
  assert ada_method.resolve_chunk_size("none") is None
  assert ada_method.resolve_chunk_size(None) is None
  assert ada_method.resolve_chunk_size("8") == 8 and ada_method.resolve_chunk_size(4) == 4
  with pytest.raises(ValueError, match="chunk_size"):
    ada_method.resolve_chunk_size("eight")


def test_chunk_size_per_device(monkeypatch):
  """'N/device': N examples per device (the paper: 8 on CIFAR-10, 1 on ImageNet)."""
  monkeypatch.setattr(jax, "device_count", lambda: 8)
  assert ada_method.resolve_chunk_size("1/device") == 8
  assert ada_method.resolve_chunk_size("8/Device") == 64
  for bad in ("0/device", "x/device", "1/host", "-1"):
    with pytest.raises(ValueError, match="chunk_size"):
      ada_method.resolve_chunk_size(bad)
