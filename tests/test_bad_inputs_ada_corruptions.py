"""Bad inputs to AdA and the corruptions, as a new user would pass them (issue 27).

Entry points: `attacks.ada`, `methods.make_ada` / `methods.ada_stage`,
`run.load_backbone` (the AdA backbones), `corruptions.corrupt` and the corruption
functions. One case per parameter, each with its outcome: an error type and a fragment
of its message, a warning (legal but suspicious input: the call still returns valid
images), or 'ok' (accepted, valid images). The comment after a case says what it did
before the issue-27 changes, where that was something else than the error it raises now
("silent" = ran without a word, giving the result named).

Everything raises before anything is compiled, except the warning and 'ok' cases (tiny
shapes, one compile each).
"""

import functools
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import attacks, corruptions, methods, run
from adacorr.corruptions import weather

KEY = jax.random.key(0)


class OneConv(nn.Module):
  """A corruption net whose output is NOT clipped: a bare 3x3 conv (leaves [0, 1])."""

  @nn.compact
  def __call__(self, x):
    return nn.Conv(x.shape[-1], (3, 3))(x)


class Linear(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


@functools.cache
def _setup():
  """(apply, params, logits_fn, x (2, 8, 8, 3), y (2,)): a tiny AdA problem."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(2, 8, 8, 3)), jnp.float32)
  y = jnp.array([0, 2])
  net, clf = OneConv(), Linear()
  # The params drawn by hand (net.init would compile: seconds on a busy CPU).
  phi = {"Conv_0": {"kernel": jnp.asarray(rng.normal(0, 0.3, (3, 3, 3, 3)), jnp.float32),
                    "bias": jnp.asarray(rng.normal(0, 0.3, (3,)), jnp.float32)}}
  theta = {"Dense_0": {"kernel": jnp.asarray(rng.normal(0, 0.1, (192, 3)), jnp.float32),
                       "bias": jnp.zeros((3,), jnp.float32)}}
  apply = lambda p, imgs: net.apply({"params": p}, imgs)
  logits_fn = lambda imgs: clf.apply({"params": theta}, imgs)
  return apply, phi, logits_fn, x, y


def _ada(**change):
  """`attacks.ada` on the tiny problem with some arguments changed."""
  apply, phi, logits_fn, x, y = _setup()
  args = dict(corruption_apply=apply, corruption_params=phi, logits_fn=logits_fn, x=x, y=y,
              key=KEY)
  kwargs = dict(nu=0.015, num_steps=1)
  for k, v in change.items():
    (args if k in args else kwargs)[k] = v(args) if callable(v) and k in (
        "x", "y", "corruption_params") else v
  return attacks.ada(args["corruption_apply"], args["corruption_params"], args["logits_fn"],
                     args["x"], args["y"], args["key"], **kwargs)


def _corrupt(images=None, name="contrast", severity=1, key=KEY, **kwargs):
  if images is None:
    images = np.random.default_rng(4).uniform(size=(2, 8, 8, 3)).astype(np.float32)
  return corruptions.corrupt(images, name, severity, key, **kwargs)


def _backbone(**change):
  _, phi, _, _, _ = _setup()
  apply = _setup()[0]
  return methods.Backbone(**dict(dict(name="conv", apply=apply, params=phi), **change))


def _make_ada(**kwargs):
  kwargs.setdefault("backbones", [_backbone()])
  return methods.make_ada(Linear(), **kwargs)


def _spec(**change):
  spec = dict(net="unet", init="random")
  spec.update(change)
  return spec


def _traced_severity():
  return jax.jit(lambda s: _corrupt(severity=s))(3)


def _x_with(fn):
  return lambda args: fn(args["x"])


OK, WARN = "ok", "warn"

CASES = [
    # ------------------------------------------------------------- attacks.ada: nu
    ("ada_nu_inf", lambda: _ada(nu=float("inf")), ValueError, "must be finite"),
    # was: silent, all-NaN images
    ("ada_nu_15", lambda: _ada(nu=15), ValueError, "1500%"),
    # was: silent, images in [-45, 44]
    ("ada_nu_1", lambda: _ada(nu=1.0), ValueError, "nu >= 1"),  # was: silent
    ("ada_nu_0", lambda: _ada(nu=0.0), ValueError, "must be > 0"),
    ("ada_nu_negative", lambda: _ada(nu=-0.1), ValueError, "must be > 0"),
    ("ada_nu_nan", lambda: _ada(nu=float("nan")), ValueError, "not NaN"),
    ("ada_nu_string", lambda: _ada(nu="0.015"), ValueError, "nu='0.015' is a string"),
    ("ada_nu_none", lambda: _ada(nu=None), ValueError, "nu is required"),
    ("ada_nu_bool", lambda: _ada(nu=True), ValueError, "is a bool"),
    ("ada_nu_per_example", lambda: _ada(nu=jnp.array([0.01, 0.02])), ValueError,
     "one number"),  # was: TypeError from a broadcast deep inside
    ("ada_nu_0.5_warns", lambda: jax.jit(lambda: _ada(nu=0.5))(), WARN,
     "more than 2.5x"),  # was: silent. (Under jit: one compile instead of many eager ops.)
    # ------------------------------------------------------- attacks.ada: the functions
    ("ada_functions_swapped",
     lambda: _ada(corruption_apply=_setup()[2], logits_fn=_setup()[0]), ValueError,
     "did you swap corruption_apply and logits_fn"),
    # was: TypeError: <lambda>() missing 1 required positional argument
    ("ada_params_and_apply_swapped",
     lambda: _ada(corruption_apply=_setup()[1], corruption_params=lambda a: _setup()[0]),
     ValueError, "the order is ada(corruption_apply"),
    # was: TypeError: Cannot determine dtype of <function>
    ("ada_logits_fn_none", lambda: _ada(logits_fn=None), ValueError,
     "logits_fn must be a function"),
    ("ada_logits_fn_rank1", lambda: _ada(logits_fn=lambda i: jnp.sum(i, (1, 2, 3))),
     ValueError, "(B, K)"),
    ("ada_apply_changes_shape", lambda: _ada(corruption_apply=lambda p, i: i[:, ::2]),
     ValueError, "to the same shape"),
    ("ada_apply_gives_nan", lambda: _ada(corruption_apply=lambda p, i: jnp.log(
        i - 2.0) + 0 * jnp.sum(jax.tree.leaves(p)[0]), num_steps=0), ValueError,
     "AdA produced NaN or inf images"),  # was: silent, NaN images
    # ------------------------------------------------------------ attacks.ada: images
    ("ada_x_uint8", lambda: _ada(x=_x_with(lambda x: (np.asarray(x) * 255).astype(np.uint8))),
     ValueError, "floating point in [0, 1]"),
    ("ada_x_0_255", lambda: _ada(x=_x_with(lambda x: x * 255)), ValueError,
     "divided by 255"),
    ("ada_x_nchw", lambda: _ada(x=_x_with(lambda x: jnp.transpose(x, (0, 3, 1, 2)))),
     ValueError, "looks like NCHW"),
    # was: 'corruption_apply failed on corruption_params' (flax ScopeParamShapeError)
    ("ada_x_rank3", lambda: _ada(x=_x_with(lambda x: x[0])), ValueError, "rank-4"),
    ("ada_x_empty", lambda: _ada(x=_x_with(lambda x: x[:0]), y=lambda a: a["y"][:0]),
     ValueError, "empty batch"),
    ("ada_x_nan", lambda: _ada(x=_x_with(lambda x: x.at[0, 0, 0, 0].set(jnp.nan))),
     ValueError, "NaN"),
    ("ada_x_other_size", lambda: _ada(x=_x_with(lambda x: jnp.tile(x, (1, 2, 2, 1)))),
     ValueError, "logits_fn failed on x of shape (2, 16, 16, 3)"),
    # ------------------------------------------------------ attacks.ada: labels, keys
    ("ada_y_float", lambda: _ada(y=lambda a: a["y"].astype(jnp.float32)), ValueError,
     "integer class labels"),
    ("ada_y_one_hot", lambda: _ada(y=lambda a: jax.nn.one_hot(a["y"], 3).astype(jnp.int32)),
     ValueError, "must have shape (B,)"),
    ("ada_y_out_of_range", lambda: _ada(y=lambda a: jnp.array([0, 7])), ValueError,
     "[0, 3)"),
    ("ada_y_too_few", lambda: _ada(y=lambda a: a["y"][:1]), ValueError, "shape (B,)"),
    ("ada_key_batch_mismatch", lambda: _ada(key=jax.random.split(KEY, 3)), ValueError,
     "one per example"),
    ("ada_key_int", lambda: _ada(key=0), ValueError, "PRNG key"),
    ("ada_key_none", lambda: _ada(key=None), ValueError, "key is required"),
    # -------------------------------------------------------- attacks.ada: the params
    ("ada_params_empty", lambda: _ada(corruption_params=lambda a: {}), ValueError,
     "has no arrays"),
    ("ada_params_nan",
     lambda: _ada(corruption_params=lambda a: jax.tree.map(lambda p: p * jnp.nan, _setup()[1])),
     ValueError, "contains NaN or inf"),  # was: silent, all-NaN images
    ("ada_params_int",
     lambda: _ada(corruption_params=lambda a: jax.tree.map(
         lambda p: p.astype(jnp.int32), _setup()[1])), ValueError, "floating point"),
    ("ada_params_of_another_net",
     lambda: _ada(corruption_params=lambda a: jax.tree.map(lambda p: p[..., :1], _setup()[1])),
     ValueError, "corruption_apply failed on corruption_params"),
    # ----------------------------------------------------- attacks.ada: other settings
    ("ada_num_steps_negative", lambda: _ada(num_steps=-1), ValueError, "num_steps=-1"),
    ("ada_num_steps_float", lambda: _ada(num_steps=2.5), ValueError, "num_steps=2.5"),
    ("ada_num_steps_string", lambda: _ada(num_steps="3"), ValueError, "num_steps='3'"),
    ("ada_step_size_inf", lambda: _ada(step_size=float("inf")), ValueError,
     "finite number >= 0"),  # was: silent, all-NaN images
    ("ada_step_size_negative", lambda: _ada(step_size=-0.1), ValueError, "finite number >= 0"),
    ("ada_step_size_string", lambda: _ada(step_size="0.1"), ValueError, "is a string"),
    ("ada_chunk_size_0", lambda: _ada(chunk_size=0), ValueError, "chunk_size=0"),
    ("ada_chunk_size_float", lambda: _ada(chunk_size=2.0), ValueError, "chunk_size=2.0"),
    ("ada_chunk_size_upper", lambda: _ada(chunk_size="AUTO"), ValueError, "chunk_size='AUTO'"),
    ("ada_chunk_loop", lambda: _ada(chunk_size=1, chunk_loop="scan"), ValueError,
     "chunk_loop='scan'"),
    ("ada_blocks", lambda: _ada(blocks="layers"), ValueError, "blocks='layers'"),
    ("ada_memory_budget_string", lambda: _ada(chunk_size="auto", memory_budget="1GB"),
     ValueError, "memory_budget='1GB' is a string"),
    ("ada_memory_budget_negative", lambda: _ada(chunk_size="auto", memory_budget=-1),
     ValueError, "memory_budget=-1"),
    ("ada_return_deltas_string", lambda: _ada(return_deltas="no"), ValueError,
     "return_deltas='no' must be a bool"),  # was: silent, a tuple ('no' is truthy)
    # (The unclipped net itself, which gave images in [-0.95, 0.74]: clipped to [0, 1]
    # now, in test_properties_ada_corruptions.py.)
    # ---------------------------------------------------------- corruptions.corrupt
    ("corrupt_severity_0", lambda: _corrupt(severity=0), ValueError, "severity=0"),
    ("corrupt_severity_6", lambda: _corrupt(severity=6), ValueError, "severity=6"),
    ("corrupt_severity_string", lambda: _corrupt(severity="3"), ValueError,
     "int('3') if it came from text"),
    ("corrupt_severity_float", lambda: _corrupt(severity=3.0), ValueError,
     "got float"),  # was: silent, severity 3
    ("corrupt_severity_bool", lambda: _corrupt(severity=True), ValueError, "severity=True"),
    ("corrupt_severity_traced", _traced_severity, ValueError,
     "severity is a traced value; it must be a static Python int"),
    # was: TracerBoolConversionError
    ("corrupt_severity_numpy_int", lambda: _corrupt(severity=np.int64(3)), OK, None),
    ("corrupt_name_unknown", lambda: _corrupt(name="gaussian"), ValueError,
     "Did you mean 'gaussian_noise' or 'gaussian_blur'?"),
    ("corrupt_name_tfds", lambda: _corrupt(name="frosted_glass_blur"), ValueError,
     "Did you mean 'glass_blur'?"),
    ("corrupt_name_case", lambda: _corrupt(name="Fog"), ValueError, "Did you mean 'fog'?"),
    ("corrupt_name_none", lambda: _corrupt(name=None), ValueError, "name=None"),
    ("corrupt_params_table", lambda: _corrupt(params="ImageNet"), ValueError,
     "params='ImageNet'"),
    ("corrupt_nchw", lambda: _corrupt(jnp.full((2, 3, 8, 8), 0.5)), ValueError,
     "looks like NCHW"),  # was: 'must be NHWC with 1 or 3 channels'
    ("corrupt_uint8", lambda: _corrupt(np.zeros((1, 8, 8, 3), np.uint8)), ValueError,
     "floating point in [0, 1]"),
    ("corrupt_0_255", lambda: _corrupt(jnp.full((1, 8, 8, 3), 200.0)), ValueError,
     "divided by 255"),
    ("corrupt_rank3", lambda: _corrupt(jnp.full((8, 8, 3), 0.5)), ValueError, "rank-4"),
    ("corrupt_rgba", lambda: _corrupt(jnp.full((1, 8, 8, 4), 0.5)), ValueError,
     "1 or 3 channels"),
    ("corrupt_empty", lambda: _corrupt(jnp.zeros((0, 8, 8, 3))), ValueError, "empty batch"),
    ("corrupt_nan", lambda: _corrupt(jnp.full((1, 8, 8, 3), jnp.nan)), ValueError, "NaN"),
    ("corrupt_key_batch_mismatch", lambda: _corrupt(key=jax.random.split(KEY, 3)),
     ValueError, "one per example"),
    ("corrupt_key_none_random", lambda: _corrupt(name="fog", key=None), ValueError,
     "key is required"),
    ("corrupt_key_int", lambda: _corrupt(key=0), ValueError, "PRNG key"),
    ("corrupt_list_ok", lambda: _corrupt(np.full((1, 4, 4, 3), 0.5).tolist()), OK, None),
    ("corrupt_imagenet_7x7_warns", lambda: _corrupt(jnp.full((1, 7, 7, 3), 0.5),
                                                    params="imagenet"), WARN,
     "calibrated for 224 x 224"),  # was: silent
    ("corrupt_imagenet_28x28_warns", lambda: _corrupt(jnp.full((1, 28, 28, 3), 0.5),
                                                      params="imagenet"), WARN,
     "calibrated for 224 x 224"),  # was: silent
    ("corrupt_cifar10_130x130_warns", lambda: _corrupt(jnp.full((1, 130, 130, 3), 0.5)),
     WARN, "calibrated for 32 x 32"),  # was: silent
    # (elastic_transform on 1 x 1 and 2 x 2 images, which gave NaN: finite now, in
    # test_properties_ada_corruptions.py::test_degenerate_sizes_stay_finite.)
    ("corrupt_fog_imagenet_1x1", lambda: _corrupt(jnp.full((1, 1, 1, 3), 0.5), name="fog",
                                                  params="imagenet"), WARN,
     "calibrated for 224 x 224"),  # was: AssertionError: 1
    ("plasma_fractal_mapsize", lambda: weather.plasma_fractal(KEY, 24, 2.0), ValueError,
     "power of 2"),  # was: AssertionError: 24
    # -------------------------------------------------- methods.make_ada / ada_stage
    ("make_ada_nu_text", lambda: _make_ada(nu="abc"), ValueError, "nu='abc' is a string"),
    # was: could not convert string to float: 'abc'
    ("make_ada_nu_inf", lambda: _make_ada(nu=float("inf")), ValueError, "must be finite"),
    ("make_ada_num_steps_float", lambda: _make_ada(num_steps=2.7), ValueError,
     "num_steps=2.7"),  # was: silent, 2 steps
    ("make_ada_ssim_percent", lambda: _make_ada(ssim_threshold=30), ValueError,
     "not a percent"),  # was: silent until the first training step
    ("make_ada_ssim_text", lambda: _make_ada(ssim_threshold="0.3"), ValueError,
     "ssim_threshold='0.3' is a string"),
    ("make_ada_backbone_spec_dict", lambda: _make_ada(backbones=[dict(net="unet")]),
     TypeError, "not a Backbone"),
    ("make_ada_one_backbone_not_list", lambda: _make_ada(backbones=_backbone()), ValueError,
     "wrap one backbone in a list"),
    ("make_ada_backbone_nu_text", lambda: _make_ada(backbones=[_backbone(nu="x")]),
     ValueError, "backbones[0] ('conv').nu='x'"),
    ("make_ada_backbone_params_empty", lambda: _make_ada(backbones=[_backbone(params={})]),
     ValueError, "params has no arrays"),  # was: silent until the first training step
    ("make_ada_backbone_apply_not_callable",
     lambda: _make_ada(backbones=[_backbone(apply="edsr")]), ValueError,
     "apply must be a function"),
    ("make_ada_memory_budget", lambda: _make_ada(memory_budget=-1), ValueError,
     "memory_budget=-1"),
    ("make_ada_chunk_size_float", lambda: _make_ada(chunk_size=2.5), ValueError,
     "chunk_size=2.5"),  # was: silent, 2
    ("make_ada_post_augment", lambda: _make_ada(post_augment="augmix"), ValueError,
     "post_augment must be None or a function"),
    ("ada_stage_no_backbones", lambda: methods.ada_stage([]), ValueError, "non-empty"),
    ("ada_stage_spec_dict", lambda: methods.ada_stage([dict(net="unet")]), TypeError,
     "not a Backbone"),  # was: AttributeError: 'dict' object has no attribute 'nu'
    ("ada_stage_nu_warns", lambda: methods.ada_stage([_backbone()], nu=0.3), WARN,
     "nu=0.3"),
    # ------------------------------------------------------------ run.load_backbone
    ("load_backbone_string", lambda: run.load_backbone("edsr"), ValueError,
     "must be a dict"),  # was: 'dictionary update sequence element #0 has length 1'
    ("load_backbone_typo", lambda: run.load_backbone(_spec(num_step=3), image_shape=(8, 8, 3)),
     ValueError, "did you mean 'num_steps'?"),  # was: silent, the key ignored
    ("load_backbone_init", lambda: run.load_backbone(_spec(init="zeros"), image_shape=(8, 8, 3)),
     ValueError, "init='zeros'"),
    ("load_backbone_two_sources",
     lambda: run.load_backbone(_spec(torch_weights="/x.pt"), image_shape=(8, 8, 3)),
     ValueError, "several weight sources"),  # was: silent, the other source ignored
    ("load_backbone_nu_text", lambda: run.load_backbone(_spec(nu="0.015"),
                                                        image_shape=(8, 8, 3)),
     ValueError, "nu='0.015' is a string"),  # was: silent until training
    ("load_backbone_nu_2", lambda: run.load_backbone(_spec(nu=2.0), image_shape=(8, 8, 3)),
     ValueError, "200%"),  # was: silent
    ("load_backbone_num_steps", lambda: run.load_backbone(_spec(num_steps=-1),
                                                          image_shape=(8, 8, 3)),
     ValueError, "num_steps=-1"),
    ("load_backbone_unknown_net", lambda: run.load_backbone(_spec(net="resnet"),
                                                            image_shape=(8, 8, 3)),
     ValueError, "not a known corruption net"),
    ("load_backbone_image_shape_chw", lambda: run.load_backbone(_spec(), image_shape=(3, 8, 8)),
     ValueError, "looks like (C, H, W)"),  # was: 'height and width divisible by 4'
    ("load_backbone_image_shape_2d", lambda: run.load_backbone(_spec(), image_shape=(8, 8)),
     ValueError, "must be (H, W, C)"),
    ("load_backbone_image_shape_batch",
     lambda: run.load_backbone(_spec(), image_shape=(1, 8, 8, 3)), ValueError,
     "no batch axis"),
    ("load_backbone_net_kwargs", lambda: run.load_backbone(_spec(net_kwargs=dict(nope=1)),
                                                           image_shape=(8, 8, 3)),
     ValueError, "do not fit the 'unet' net"),  # was: TypeError: UNet.__init__() ...
    ("load_backbone_torch_weights_missing",
     lambda: run.load_backbone(dict(net="edsr", torch_weights="/nonexistent/edsr.pt")),
     FileNotFoundError, "does not exist"),
]


@pytest.mark.parametrize("call,outcome,fragment", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input(call, outcome, fragment):
  if outcome in (OK, WARN):
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      out = call()
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if outcome == WARN:
      assert any(fragment in m for m in messages), messages
    if hasattr(out, "shape"):  # the images are valid either way
      values = np.asarray(out, np.float32)
      assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
    return
  with pytest.raises(outcome) as info:
    call()
  assert fragment in str(info.value), str(info.value)


def test_case_ids_are_unique():
  assert len({c[0] for c in CASES}) == len(CASES)
