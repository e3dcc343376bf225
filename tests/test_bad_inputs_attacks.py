"""Bad inputs to the attacks, as a new user would give them (issue 27): each gets a clear
error naming the argument, the value and what is expected (or a warning where the input
is legal but suspicious), before any computation.

One case per parameter: the exception type and a fragment of its message, or the
warning's fragment. The model is a linear map (no compilation before the error), so the
whole file runs in seconds. Where a case was silent or a confusing crash before issue 27,
its comment says what happened.
"""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import attacks, evaluation
from adacorr.attacks import lp
from adacorr.core import checks, radius

X = jnp.full((2, 4, 4, 3), 0.5, jnp.float32)  # D = 48 values per image: sqrt(D) = 6.93
Y = jnp.array([0, 1])
KEY = jax.random.PRNGKey(0)
_W = jnp.arange(30.0).reshape(3, 10) / 30.0


def lin(x):
  """(B, H, W, 3) -> (B, 10) logits."""
  return jnp.mean(x, axis=(1, 2)) @ _W


def feats(x):
  return [x]


def _identity(x, y, k):
  del y, k
  return x


class _Conv(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(10)(nn.Conv(4, (3, 3))(x).mean(axis=(1, 2)))


_CONV = _Conv()
_VARS = _CONV.init(KEY, X)


def conv_logits(x):
  return _CONV.apply(_VARS, x)


def _call(fn, kw, defaults):
  a = dict(logits_fn=lin, x=X, y=Y, key=KEY)
  for name in list(kw):
    if name in a:
      a[name] = kw.pop(name)
  return fn(a["logits_fn"], a["x"], a["y"], a["key"], **{**defaults, **kw})


def pgd(**kw):
  return _call(attacks.pgd, kw, dict(norm="linf", eps=0.1, step_size=0.05, num_steps=1))


def apgd(**kw):
  return _call(attacks.apgd, kw, dict(norm="linf", eps=0.1, num_steps=1))


def square(**kw):
  return _call(attacks.square, kw, dict(norm="linf", eps=0.1, num_queries=2))


def fab(**kw):
  return _call(attacks.fab, kw, dict(norm="linf", eps=0.1, num_steps=1, num_targets=2))


def autoattack(**kw):
  return _call(attacks.autoattack, kw,
               dict(norm="linf", eps=0.1, version="custom", attacks={"id": _identity}))


def robust_accuracy(**kw):
  a = dict(logits_fn=lin, x=X, y=Y, key=KEY, attacks=[_identity])
  for name in list(kw):
    if name in a:
      a[name] = kw.pop(name)
  return attacks.robust_accuracy(a["logits_fn"], a["x"], a["y"], a["key"], a["attacks"], **kw)


def lpa(**kw):
  return _call(lambda f, x, y, k, **o: attacks.lpa(f, feats, x, y, k, **o), kw,
               dict(bound=0.5, num_steps=1, lambda_steps=1))


def ppgd(**kw):
  return _call(lambda f, x, y, k, **o: attacks.ppgd(f, feats, x, y, k, **o), kw,
               dict(bound=0.5, num_steps=1))


def fast_lpa(**kw):
  return _call(lambda f, x, y, k, **o: attacks.fast_lpa(f, feats, x, y, k, **o), kw,
               dict(bound=0.5, num_steps=1))


E, P = ValueError, pytest.param

ERRORS = [
    # --- the cases
    # before: pgd / apgd ran on an empty batch; FAB and PPGD: ZeroDivisionError "integer
    # modulo by zero"
    P(lambda: pgd(x=X[:0], y=Y[:0]), E, r"^x is an empty batch \(shape \(0, 4, 4, 3\)\)",
      id="pgd-empty-batch"),
    P(lambda: apgd(x=X[:0], y=Y[:0]), E, r"^x is an empty batch", id="apgd-empty-batch"),
    P(lambda: fab(x=X[:0], y=Y[:0]), E, r"^x is an empty batch", id="fab-empty-batch"),
    P(lambda: autoattack(x=X[:0], y=Y[:0]), E, r"^x is an empty batch",
      id="autoattack-empty-batch"),
    # before: flax's ScopeParamShapeError / ScopeCollectionNotFound naming no argument
    P(lambda: pgd(logits_fn=conv_logits, x=jnp.full((2, 3, 4, 4), 0.5)), E,
      r"^logits_fn failed on x of shape \(2, 3, 4, 4\).*ScopeParamShapeError.*is x NHWC",
      id="pgd-nchw-images"),
    P(lambda: pgd(logits_fn=conv_logits, x=jnp.full((2, 4, 4, 1), 0.5)), E,
      r"^logits_fn failed on x of shape \(2, 4, 4, 1\).*model's channel count",
      id="pgd-wrong-channel-count"),
    P(lambda: pgd(logits_fn=lambda x: _CONV.apply(_VARS["params"], x)), E,
      r"^logits_fn failed.*ScopeCollectionNotFound.*\{'params': \.\.\.\}",
      id="pgd-variables-without-params"),
    P(lambda: autoattack(logits_fn=lambda x: _CONV.apply(_VARS["params"], x)), E,
      r"^logits_fn failed.*ScopeCollectionNotFound", id="autoattack-variables-without-params"),
    # before: numpy UFuncTypeError for text eps (accepted now, see below); bad text:
    P(lambda: pgd(eps="eight"), E, r"^eps='eight' is not a number or a fraction like '8/255'",
      id="pgd-eps-not-a-number"),
    P(lambda: apgd(eps="8/0"), E, r"^eps='8/0' is not a number", id="apgd-eps-divides-by-0"),
    P(lambda: autoattack(eps="8"), E, r"^eps=8 is larger than 1.*did you mean eps=8/255",
      id="autoattack-eps-text-0-255"),
    P(lambda: autoattack(version="custom", attacks="apgd-ce"), E,
      r"^attacks='apgd-ce' must be a list", id="autoattack-attacks-a-string"),
    # before: the lambda's TypeError "takes 1 positional argument but 2 were given"
    P(lambda: autoattack(version="rand", attacks=None, num_steps=1, eot_iter=1), E,
      r"^version='rand' is for randomised models: it calls logits_fn\(x, keys\).*TypeError",
      id="autoattack-rand-with-a-deterministic-model"),
    # before: TypeError 'str' object is not callable, after all the work
    P(lambda: autoattack(log="print"), E, r"^log='print' must be None or a function",
      id="autoattack-log-a-string"),
    # --- more bad inputs
    P(lambda: pgd(y=jnp.array([0, 10])), E, r"^y must lie in \[0, 10\)", id="pgd-label-K"),
    P(lambda: pgd(y=jnp.array([0.0, 1.0])), E, r"^y must be integer class labels",
      id="pgd-float-labels"),
    P(lambda: pgd(y=jnp.array([0, 1, 2])), E, r"^y must have shape \(B,\) = \(2,\)",
      id="pgd-label-batch-mismatch"),
    P(lambda: pgd(key=jax.random.split(KEY, 3)), E, r"^key must be one key .* got shape \(3, 2\)",
      id="pgd-key-batch-mismatch"),
    P(lambda: pgd(key=0), E, r"^key must be a PRNG key", id="pgd-key-an-int"),
    P(lambda: pgd(num_steps=-1), E, r"^num_steps=-1 must be a non-negative Python int",
      id="pgd-negative-steps"),
    P(lambda: pgd(num_steps=2.0), E, r"^num_steps=2.0 must be", id="pgd-float-steps"),
    P(lambda: pgd(step_size=float("nan")), E, r"^step_size=nan must be non-negative",
      id="pgd-step-size-nan"),
    # before: silent; 0 * inf = NaN where the gradient's sign is 0
    P(lambda: pgd(step_size=float("inf")), E, r"^step_size=inf must be finite",
      id="pgd-step-size-inf"),
    # before: numpy UFuncTypeError
    P(lambda: pgd(step_size="0.01"), E, r"^step_size='0.01' must be a non-negative number",
      id="pgd-step-size-text"),
    P(lambda: pgd(norm="l1"), E, r"^norm='l1' is not a supported norm", id="pgd-norm-l1"),
    P(lambda: pgd(norm="Linf"), E, r"^norm='Linf' is not a supported norm", id="pgd-norm-case"),
    P(lambda: pgd(eps=-0.1), E, r"^eps=-0.1 must be non-negative", id="pgd-eps-negative"),
    P(lambda: pgd(eps=float("nan")), E, r"^eps=nan must be non-negative \(and not NaN\)",
      id="pgd-eps-nan"),
    P(lambda: pgd(eps=float("inf")), E, r"^eps=inf must be finite", id="pgd-eps-inf"),
    # before: silent, eps=True ran as eps=1
    P(lambda: pgd(eps=True), E, r"^eps=True is a bool, not a radius", id="pgd-eps-a-bool"),
    P(lambda: pgd(eps=None), E, r"^eps is required", id="pgd-eps-none"),
    # before: jax's "max got incompatible shapes for broadcasting"
    P(lambda: pgd(eps=jnp.array([0.1, 0.2, 0.3])), E,
      r"^eps must be one radius or one per example, shape \(\) or \(2,\), got shape \(3,\)",
      id="pgd-eps-wrong-batch"),
    P(lambda: pgd(x=X * 3), E, r"^x must lie in \[0, 1\]; got values in \[1.5, 1.5\]",
      id="pgd-x-above-1"),
    P(lambda: pgd(x=X * 255), E, r"0-255 images must be divided by 255", id="pgd-x-0-255"),
    P(lambda: pgd(x=X[0]), E, r"^x must be a rank-4 NHWC batch.*got shape \(4, 4, 3\)",
      id="pgd-x-rank-3"),
    P(lambda: pgd(x=jnp.ones((2, 4, 4, 3), jnp.uint8)), E, r"^x must be floating point",
      id="pgd-x-uint8"),
    # before: TypeError "Cannot determine dtype of [[[[0.5, ..."
    P(lambda: pgd(x=np.asarray(X).tolist()), E, r"^x must be an array of images .* got list",
      id="pgd-x-a-list"),
    P(lambda: pgd(loss="xent"), E, r"^loss='xent' is not a supported loss", id="pgd-loss"),
    P(lambda: pgd(restarts=0), E, r"^restarts=0 must be a Python int >= 1", id="pgd-restarts-0"),
    P(lambda: pgd(logits_fn=lambda x: x[:, 0]), E,
      r"^logits_fn must return logits of shape \(B, K\)", id="pgd-logits-rank-3"),
    # before: silent; integer "logits" have no gradient, the attack did nothing
    P(lambda: pgd(logits_fn=lambda x: jnp.round(lin(x) * 10).astype(jnp.int32)), E,
      r"^logits_fn must return floating point logits, got dtype int32",
      id="pgd-integer-logits"),
    P(lambda: pgd(logits_fn="resnet18"), E, r"^logits_fn must be a function",
      id="pgd-logits-fn-a-string"),
    # before: the lambda's TypeError "missing 1 required positional argument"
    P(lambda: pgd(logits_fn=lambda variables, x: lin(x)), E,
      r"^logits_fn failed on x .*TypeError.*bind the variables first",
      id="pgd-logits-fn-takes-variables"),
    # before: silent; the string 'no' is true, so the attack started at random
    P(lambda: pgd(random_init="no"), E, r"^random_init='no' must be a bool",
      id="pgd-random-init-a-string"),
    # before: silent (truthy ints and strings were read as flags)
    P(lambda: pgd(targeted=1), E, r"^targeted=1 must be a bool", id="pgd-targeted-an-int"),
    P(lambda: apgd(rho=2.0), E, r"^rho must be in \[0, 1\].*rho=2.0", id="apgd-rho-2"),
    # before: TypeError "'<=' not supported between instances of 'float' and 'str'"
    P(lambda: apgd(rho="0.75"), E, r"^rho='0.75' must be a Python number in \[0, 1\]",
      id="apgd-rho-text"),
    P(lambda: apgd(eot_iter=0), E, r"^eot_iter=0 must be a Python int >= 1", id="apgd-eot-0"),
    P(lambda: apgd(logits_fn=lambda x: lin(x)[:, :2], loss="dlr"), E,
      r"^loss='dlr' needs at least 3 classes", id="apgd-dlr-two-classes"),
    P(lambda: apgd(key=None), E, r"^key is required", id="apgd-no-key"),
    P(lambda: square(p_init=0.0), E, r"^p_init=0.0 must be > 0", id="square-p-init-0"),
    P(lambda: square(num_queries=0), E, r"^num_queries=0 must be", id="square-no-queries"),
    # before: silent
    P(lambda: square(targeted="yes"), E, r"^targeted='yes' must be a Python bool",
      id="square-targeted-a-string"),
    P(lambda: fab(num_targets=10), E, r"^num_targets=10 must be an int in \[1, 9\]",
      id="fab-too-many-targets"),
    P(lambda: fab(key=None, restarts=2), E, r"^key is required \(FAB with restarts > 1",
      id="fab-restarts-without-key"),
    # before: jax's TypeError "Error interpreting argument to <function minimum ...>"
    P(lambda: fab(alpha_max="0.1"), E, r"^alpha_max='0.1' must be a number",
      id="fab-alpha-max-text"),
    P(lambda: attacks.fgsm(lin, X, Y, eps=-1.0), E, r"^eps=-1.0 must be non-negative",
      id="fgsm-eps-negative"),
    # before: silent (broadcast (3,) radii over the pixels)
    P(lambda: attacks.random_init(KEY, X, norm="linf", eps=jnp.ones(3)), E,
      r"^eps must be one radius or one per example", id="random-init-eps-wrong-batch"),
    # before: silent, batch_size=2.5 ran as 2
    P(lambda: robust_accuracy(batch_size=2.5), E, r"^batch_size=2.5 must be",
      id="robust-accuracy-batch-size-float"),
    P(lambda: robust_accuracy(batch_size=0), E, r"^batch_size=0 must be",
      id="robust-accuracy-batch-size-0"),
    # before: silent; a label >= K counted as a misclassified example
    P(lambda: robust_accuracy(y=jnp.array([0, 10])), E, r"^y must lie in \[0, 10\)",
      id="robust-accuracy-label-K"),
    # before: jax's "split accepts a single key" from deep inside
    P(lambda: robust_accuracy(key=jax.random.split(KEY, 2)), E, r"^key must be ONE PRNG key",
      id="robust-accuracy-key-array"),
    P(lambda: robust_accuracy(attacks=_identity), E, r"got a single callable",
      id="robust-accuracy-one-attack-unwrapped"),
    # text radii are parsed now (before: "must be one concrete real number"); bad text:
    P(lambda: robust_accuracy(threat_model=("linf", "8/0")), E,
      r"^threat_model eps='8/0' is not a number", id="robust-accuracy-threat-model-text"),
    # before: silent, a label >= K counted as misclassified
    P(lambda: autoattack(y=jnp.array([0, 10])), E, r"^y must lie in \[0, 10\)",
      id="autoattack-label-K"),
    P(lambda: autoattack(key=jax.random.split(KEY, 2)), E, r"^key must be ONE PRNG key",
      id="autoattack-key-array"),
    P(lambda: autoattack(batch_size=0), E, r"^batch_size=0 must be", id="autoattack-batch-0"),
    P(lambda: autoattack(version="fast", attacks=None, num_targets=0), E,
      r"^num_targets=0 must be an int in \[1, 9\]", id="autoattack-no-targets"),
    P(lambda: autoattack(version="custom", attacks=["pgd"]), E,
      r"^attacks='pgd' is not one of", id="autoattack-unknown-component"),
    P(lambda: autoattack(eps=0.0), E, r"^eps=0 evaluates clean accuracy",
      id="autoattack-eps-0"),
    # before: TypeError "'NoneType' object is not callable"
    P(lambda: autoattack(logits_fn=None), E, r"^logits_fn must be a function",
      id="autoattack-no-model"),
    # before: silent (an infinite LPIPS bound: no threat model)
    P(lambda: ppgd(bound=float("inf")), E, r"^bound=inf must be finite", id="ppgd-bound-inf"),
    P(lambda: ppgd(bound=-0.1), E, r"^bound=-0.1 must be non-negative", id="ppgd-bound-negative"),
    # before: numpy UFuncTypeError
    P(lambda: ppgd(bound="half"), E, r"^bound='half' is not a number", id="ppgd-bound-text"),
    P(lambda: ppgd(x=X[:0], y=Y[:0]), E, r"^x is an empty batch", id="ppgd-empty-batch"),
    # before: silent (a negative standard deviation flips the noise)
    P(lambda: fast_lpa(init_std=-1.0), E, r"^init_std=-1.0 must be non-negative",
      id="fast-lpa-init-std-negative"),
    # before: silent
    P(lambda: fast_lpa(decay_step_size="no"), E, r"^decay_step_size='no' must be a bool",
      id="fast-lpa-flag-a-string"),
    # before: AttributeError / TypeError "'str' object is not callable" from inside
    P(lambda: attacks.lpa(lin, "alexnet", X, Y, KEY, bound=0.5, num_steps=1), E,
      r"^features_fn must be None \(self-bounded\) or a function", id="lpa-features-fn-a-name"),
    # before: unchecked until the projection's loop
    P(lambda: lpa(projection_steps=-1), E, r"^projection_steps=-1 must be",
      id="lpa-projection-steps-negative"),
    P(lambda: lpa(num_steps=0), E, r"^num_steps=0 must be", id="lpa-no-steps"),
]


@pytest.mark.parametrize("make,exc,match", ERRORS)
def test_bad_input_is_a_clear_error(make, exc, match):
  with pytest.raises(exc, match=match):
    make()


BAD_Y = jnp.array([0, 10])  # after the radius's warning, an error: nothing is computed

WARNINGS = [
    P(lambda: pgd(eps=8.0, num_steps=0, random_init=False),
      r"^eps=8.0 is larger than 1.*did you mean eps=8/255", id="pgd-linf-eps-0-255"),
    # before: silent (the evaluation path already warned)
    P(lambda: pgd(norm="l2", eps=7.0, num_steps=0, random_init=False),
      r"^the l2 radius 7 is at least sqrt\(D\) = 6.928 \(D = 48.*so the attack is unconstrained",
      id="pgd-l2-eps-allows-every-image"),
    P(lambda: pgd(norm="l2", eps="49/7", y=BAD_Y), r"^the l2 radius 7 is at least sqrt\(D\)",
      id="pgd-l2-text-eps-allows-every-image"),
    P(lambda: apgd(norm="l2", eps=10.0, y=BAD_Y), r"^the l2 radius 10 is at least sqrt\(D\)",
      id="apgd-l2-eps-allows-every-image"),
    P(lambda: attacks.fgm(lin, X, BAD_Y, eps=100.0), r"^the l2 radius 100 is at least sqrt\(D\)",
      id="fgm-l2-eps-allows-every-image"),
    P(lambda: fab(norm="l2", eps=10.0, y=BAD_Y), r"^the l2 radius 10 is at least",
      id="fab-l2-eps-allows-every-image"),
    P(lambda: square(norm="l2", eps=jnp.array([1.0, 8.0]), y=BAD_Y),
      r"^the l2 radius 8 is at least", id="square-l2-per-example-eps-allows-every-image"),
    P(lambda: autoattack(norm="l2", eps="7"), r"^the l2 radius 7 is at least sqrt\(D\).*robust "
      r"accuracy is meaningless", id="autoattack-l2-eps-allows-every-image"),
]


@pytest.mark.parametrize("make,match", WARNINGS)
def test_suspicious_input_warns(make, match):
  with pytest.warns(UserWarning, match=match):
    try:
      make()
    except ValueError as e:  # the cases with BAD_Y: the warning came first
      assert str(e).startswith("y must lie in [0, 10)"), e


def test_model_errors_are_chained_with_the_original():
  with pytest.raises(ValueError) as info:
    pgd(logits_fn=conv_logits, x=jnp.full((2, 3, 4, 4), 0.5))
  assert type(info.value.__cause__).__name__ == "ScopeParamShapeError"
  with pytest.raises(ValueError) as info:
    autoattack(version="rand", attacks=None, num_steps=1, eot_iter=1)
  assert isinstance(info.value.__cause__, TypeError)


def test_radii_are_parsed_in_one_place_for_every_entry_point():
  """'8/255', '0.03' and numbers: the same value through the attacks, the threat-model
  checks and the evaluators (`core.radius.parse_radius`, re-exported by evaluation)."""
  assert evaluation.parse_radius is radius.parse_radius
  assert evaluation.radius.parse_radius is radius.parse_radius
  for text, value in (("8/255", 8 / 255), ("0.03", 0.03), (" 8 / 255 ", 8 / 255),
                      (0.03, 0.03), (np.float32(0.5), 0.5), (1, 1.0)):
    assert radius.parse_radius(text) == pytest.approx(value)
    assert checks.check_radius_for_evaluation(text, "linf") == pytest.approx(value)
    assert float(lp.check_radius(text, "linf")) == pytest.approx(value)
  kw = dict(norm="linf", step_size=0.05, num_steps=1, random_init=False)
  want = attacks.pgd(lin, X, Y, KEY, eps=8 / 255, **kw)
  for eps in ("8/255", np.float32(8 / 255)):
    np.testing.assert_allclose(attacks.pgd(lin, X, Y, KEY, eps=eps, **kw), want, atol=1e-7)
  np.testing.assert_allclose(attacks.project(X + 0.5, X, norm="linf", eps="0.03"), X + 0.03,
                             atol=1e-7)
  start = attacks.random_init(KEY, X, norm="linf", eps="8/255")
  assert float(jnp.max(jnp.abs(start - X))) <= 8 / 255 + 1e-7
  out = autoattack(eps="8/255")
  assert out["eps"] == pytest.approx(8 / 255)
  assert robust_accuracy(threat_model=("l2", "0.5"))["num_examples"] == 2


def test_per_example_radii_work_in_pgd_and_apgd():
  """eps (B,) was documented but crashed in the random start (broadcasting)."""
  eps = jnp.array([0.0, 0.1])
  for out in (pgd(eps=eps, num_steps=2), apgd(eps=eps, num_steps=2)):
    dist = jnp.max(jnp.abs(out - X).reshape(2, -1), axis=1)
    assert float(dist[0]) == 0.0 and float(dist[1]) <= 0.1 + 1e-6


def test_no_warning_for_ordinary_radii():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    pgd(norm="l2", eps=0.5, num_steps=0, random_init=False)
    pgd(eps=8 / 255, num_steps=0, random_init=False)
