"""No silent answers on the evaluation path (issue 26, item 4).

Before these checks each case below returned a plausible number: NaN points passed the
threat-model check (NaN compares false), NaN logits counted as class 0, a NaN or 0-255
radius gave a report row, an empty attack list or 0 steps reported the clean accuracy
as robust accuracy. Every test pins the error (and that it names the argument or the
attack), and, for the radius checks, that nothing was run before the error.
"""

import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import attacks
from adacorr.core import checks
from adacorr.evaluation.lp import check_radii, lp_robustness

X = jnp.full((4, 2, 2, 3), 0.5, jnp.float32)  # D = 12 values per image: sqrt(D) = 3.46
Y = jnp.zeros((4,), jnp.int32)
KEY = jax.random.key(0)
NAN = float("nan")
INF = float("inf")


def _flag_model(x):
  """Class 0 unless pixel [0, 0, 1] is >= 0.75 (then class 1); 3 classes."""
  flag = (x[:, 0, 0, 1] >= 0.75).astype(jnp.float32)
  return jnp.stack([1.0 - flag, flag, 0.0 * flag - 1.0], axis=-1)


def _flip(x, y, keys):
  """Moves pixel [0, 0, 1] to 1: within l_inf 0.5 of X, and fools `_flag_model`."""
  del y, keys
  return x.at[:, 0, 0, 1].set(1.0)


def _identity(x, y, keys):
  del y, keys
  return x


def _nan_points(x, y, keys):
  del y, keys
  return x * jnp.nan


class _Counting:
  """A model that counts its calls (nothing may run before an argument error)."""

  def __init__(self):
    self.calls = 0

  def __call__(self, x):
    self.calls += 1
    return _flag_model(x)


# --------------------------------------------------------------------------- NaN / inf


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_check_threat_model_rejects_non_finite_points_naming_the_attack(bad):
  x_adv = X.at[1, 0, 0, 0].set(bad)
  with pytest.raises(ValueError, match=r"attack 'my_attack' returned NaN or inf values.*rows 1"):
    attacks.check_threat_model(x_adv, X, norm="linf", eps=8 / 255, name="my_attack")
  # The same points without the bad value pass: the check is on finiteness, not on eps.
  attacks.check_threat_model(X, X, norm="linf", eps=8 / 255, name="my_attack")


def test_check_threat_model_rejects_non_finite_clean_images_and_radius():
  with pytest.raises(ValueError, match=r"^x, the clean images.*'a'.*NaN or inf"):
    attacks.check_threat_model(X, X.at[0].set(jnp.nan), norm="l2", eps=0.5, name="a")
  for eps in (NAN, INF):
    with pytest.raises(ValueError, match=r"^eps="):
      attacks.check_threat_model(X, X, norm="linf", eps=eps, name="a")
  with pytest.raises(ValueError, match=r"same shape"):
    attacks.check_threat_model(X[:2], X, norm="linf", eps=0.1, name="a")


def test_nonfinite_summary_counts_and_names_rows():
  v = jnp.zeros((6, 3)).at[2, 1].set(jnp.nan).at[4, 0].set(jnp.inf).at[4, 2].set(-jnp.inf)
  assert checks.nonfinite_summary(v) == "1 NaN and 2 inf of 18 entries, in rows 2, 4"
  assert checks.nonfinite_summary(jnp.zeros((6, 3))) is None
  assert checks.nonfinite_summary(jnp.zeros((6, 3), jnp.int32)) is None
  with pytest.raises(ValueError, match=r"^logits contains NaN or inf values \(1 NaN"):
    checks.check_finite(v, "logits")


@pytest.mark.parametrize("bad", [NAN, INF])
def test_images_with_nan_or_inf_are_rejected(bad):
  x = X.at[2, 1, 1, 0].set(bad)
  with pytest.raises(ValueError, match=r"^x contains NaN or inf values"):
    checks.check_images(x)
  with pytest.raises(ValueError, match=r"^x contains NaN or inf values"):
    attacks.robust_accuracy(_flag_model, x, Y, KEY, [_identity])
  with pytest.raises(ValueError, match=r"^x contains NaN or inf values"):
    attacks.autoattack(_flag_model, x, Y, KEY, norm="linf", eps=0.1, version="custom",
                       attacks={"id": _identity})


def test_robust_accuracy_rejects_nan_logits_on_the_clean_images():
  model = lambda x: _flag_model(x).at[1, 0].set(jnp.nan)  # argmax would say class 0
  with pytest.raises(ValueError, match=r"logits_fn returned NaN/inf logits on the clean "
                                       r"images x\[0:4\] \(1 NaN and 0 inf.*rows 1\)"):
    attacks.robust_accuracy(model, X, Y, KEY, [_identity])
  with pytest.raises(ValueError, match=r"on the clean images x\[2:4\]"):  # second batch
    attacks.robust_accuracy(lambda x: _flag_model(x) / (x[:, :1, 0, 0] - 0.25),
                            X.at[2:].set(0.25), Y, KEY, [_identity], batch_size=2)


def test_robust_accuracy_rejects_nan_logits_on_an_attacks_points_naming_it():
  model = lambda x: jnp.where(x[:, :1, 0, 1] > 0.9, jnp.nan, _flag_model(x))
  clean = attacks.robust_accuracy(model, X, Y, KEY, {"identity": _identity})
  assert clean["clean_accuracy"] == 1.0 and clean["robust_accuracy"] == 1.0
  with pytest.raises(ValueError, match=r"NaN/inf logits on the points of attack 'flip'"):
    attacks.robust_accuracy(model, X, Y, KEY, {"identity": _identity, "flip": _flip},
                            threat_model=("linf", 0.5))


@pytest.mark.parametrize("threat_model", [None, ("linf", 8 / 255)])
def test_an_attack_returning_nan_raises_naming_it(threat_model):
  # The model maps NaN to finite logits: only the check on the points can catch it.
  model = lambda x: _flag_model(jnp.nan_to_num(x))
  with pytest.raises(ValueError, match=r"attack '_nan_points' returned NaN or inf values"):
    attacks.robust_accuracy(model, X, Y, KEY, [_identity, _nan_points],
                            threat_model=threat_model)


def test_a_custom_autoattack_component_returning_nan_raises_naming_it():
  with pytest.raises(ValueError, match=r"attack 'mine' returned NaN or inf values"):
    attacks.autoattack(_flag_model, X, Y, KEY, norm="linf", eps=8 / 255, version="custom",
                       attacks={"mine": _nan_points})


# --------------------------------------------------------------------------- radii


@pytest.mark.parametrize("eps,match", [
    (0, r"^eps=0 evaluates clean accuracy, not robustness"),
    (0.0, r"^eps=0 evaluates clean accuracy"),
    (-0.1, r"^eps=-0.1 is negative"),
    (NAN, r"^eps=nan must be a finite number"),
    (INF, r"^eps=inf must be a finite number"),
    (8, r"^eps=8 is larger than 1 .*0-255.*did you mean eps=8/255"),
    (None, r"^eps is required"),
    ("8/0", r"^eps='8/0' is not a number or a fraction"),  # text is parsed (core.radius)
    ("8", r"^eps=8 is larger than 1"),
    (True, r"^eps must be one concrete real number"),
])
def test_check_radius_for_evaluation_errors(eps, match):
  with pytest.raises(ValueError, match=match):
    checks.check_radius_for_evaluation(eps, "linf", "eps")


def test_check_radius_for_evaluation_accepts_and_returns_a_float():
  for eps in (8 / 255, np.float32(0.5), jnp.float32(1.0), 1):
    value = checks.check_radius_for_evaluation(eps, "linf")
    assert type(value) is float and value == pytest.approx(float(eps))
  assert checks.check_radius_for_evaluation(8.0, "l2") == 8.0  # l2 > 1 is common
  with pytest.raises(ValueError, match=r"norm='l1'"):
    checks.check_radius_for_evaluation(0.1, "l1")


def test_l2_radius_covering_every_image_warns():
  with pytest.warns(UserWarning, match=r"the l2 radius 3.5 is at least sqrt\(D\) = 3.464 \(D = 12"):
    checks.check_radius_for_evaluation(3.5, "l2", image_shape=X.shape)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    checks.check_radius_for_evaluation(3.4, "l2", image_shape=X.shape)  # just below
    checks.check_radius_for_evaluation(3.5, "l2")  # shape unknown: no check


@pytest.mark.parametrize("eps,match", [
    (8, r"eps=8 is larger than 1"), (0.0, r"eps=0 evaluates clean accuracy"),
    (NAN, r"eps=nan must be a finite"), (INF, r"eps=inf must be a finite"),
    (-1 / 255, r"eps=-0.0039\d* is negative")])
def test_autoattack_radius_errors_before_anything_runs(eps, match):
  model = _Counting()
  with pytest.raises(ValueError, match=r"^" + match):
    attacks.autoattack(model, X, Y, KEY, norm="linf", eps=eps, version="custom",
                       attacks={"id": _identity})
  with pytest.raises(ValueError, match=r"^" + match):
    attacks.autoattack(model, X, Y, KEY, norm="linf", eps=eps)  # the standard components
  assert model.calls == 0


def test_autoattack_l2_radius_covering_every_image_warns_and_still_runs():
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("default")  # the default: one warning per text and line
    out = attacks.autoattack(_flag_model, X, Y, KEY, norm="l2", eps=4.0, version="custom",
                             attacks={"flip": _flip})
  assert out["clean_accuracy"] == 1.0 and out["robust_accuracy"] == 0.0
  shown = [str(w.message) for w in caught if "sqrt(D)" in str(w.message)]
  assert len(shown) == 1 and shown[0].startswith("the l2 radius 4 is at least"), shown


@pytest.mark.parametrize("threat_model,match", [
    (("linf", 8), r"^threat_model eps=8 is larger than 1"),
    (("linf", NAN), r"^threat_model eps=nan must be a finite"),
    (("l2", 0.0), r"^threat_model eps=0 evaluates clean accuracy"),
    (("l1", 0.1), r"^threat_model norm='l1'"),
    ("linf", r"^threat_model='linf' must be a pair"),
])
def test_robust_accuracy_threat_model_errors_before_anything_runs(threat_model, match):
  model = _Counting()
  with pytest.raises(ValueError, match=match):
    attacks.robust_accuracy(model, X, Y, KEY, [_identity], threat_model=threat_model)
  assert model.calls == 0


def test_low_level_attacks_keep_eps_0_and_the_warning_but_reject_inf():
  kw = dict(norm="linf", step_size=0.01, num_steps=1)
  np.testing.assert_array_equal(attacks.pgd(_flag_model, X, Y, KEY, eps=0.0, **kw), X)
  with pytest.warns(UserWarning, match=r"eps=8.0 is larger than 1"):
    attacks.pgd(_flag_model, X, Y, KEY, eps=8.0, **kw)
  for eps in (INF, NAN):
    with pytest.raises(ValueError, match=r"^eps="):
      attacks.pgd(_flag_model, X, Y, KEY, eps=eps, **kw)
    with pytest.raises(ValueError, match=r"^eps="):
      attacks.apgd(_flag_model, X, Y, KEY, norm="linf", eps=eps, num_steps=1)


@pytest.mark.parametrize("radii,match", [
    ({"linf": ["8"]}, r"radii\['linf'\]=8 is larger than 1.*did you mean radii\['linf'\]=8/255"),
    ({"linf": ["8/255", "nan"]}, r"radii\['linf'\]=nan must be a finite number"),
    ({"l2": [0]}, r"radii\['l2'\]=0 evaluates clean accuracy"),
    ({"l2": ["-0.5"]}, r"radii\['l2'\]=-0.5 is negative"),
    ({"linf": ["inf"]}, r"radii\['linf'\]=inf must be a finite"),
    ({"linf": ["8/0"]}, r"radii\['linf'\]: text='8/0' is not a number"),
    ({}, r"radii=\{\} must be a non-empty mapping"),
    ({"linf": []}, r"radii\['linf'\] is empty"),
    ({"linf": "8/255"}, r"radii\['linf'\]='8/255' must be a list of radii"),
    ({"l1": ["0.1"]}, r"radii key='l1'"),
])
def test_lp_robustness_radius_errors_before_anything_runs(radii, match):
  model = _Counting()
  with pytest.raises(ValueError, match=match):
    lp_robustness(model, X, Y, radii=radii, pgd_steps=1, apgd_steps=0, autoattack="none",
                  masking_steps=0)
  assert model.calls == 0


def test_check_radii_parses_in_order():
  assert check_radii({"linf": ["8/255", 0.5], "l2": ("1.5",)}) == {
      "linf": [8 / 255, 0.5], "l2": [1.5]}


def test_evaluate_cli_rejects_bad_radii_before_loading_anything(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  for flag, message in (("--linf_eps=8/255,8", "--linf_eps: radii['linf']=8 is larger than 1"),
                        ("--l2_eps=nan", "--l2_eps: radii['l2']=nan must be a finite")):
    # The workdir does not exist: the radius error comes first.
    result = subprocess.run(
        [sys.executable, "-m", "experiments.evaluate", f"--workdir={tmp_path / 'none'}", flag],
        env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr, result.stdout + result.stderr


# --------------------------------------------------------------------------- counts, lists


@pytest.mark.parametrize("kw,match", [
    (dict(num_steps=0), r"^num_steps=0 must be a >= 1 Python int"),
    (dict(num_queries=0), r"^num_queries=0 must be a >= 1"),
    (dict(eot_iter=0, version="rand"), r"^eot_iter=0 must be a >= 1"),
    (dict(num_steps=2.5), r"^num_steps=2.5"),
    (dict(version="custom", attacks=[]), r"^attacks=\[\]: version='custom' needs"),
    (dict(version="custom", attacks={}), r"^attacks=\{\}: version='custom' needs"),
    (dict(version="custom", attacks="apgd-ce"),
     r"^attacks='apgd-ce' must be a list of component names \(e.g. attacks=\['apgd-ce'\]\)"),
    (dict(attacks="square"), r"^attacks='square' must be a list"),
    (dict(version="custom", attacks=["apgd-ce", "apgd-ce"]), r"names a component twice"),
])
def test_autoattack_argument_errors_before_anything_runs(kw, match):
  model = _Counting()
  with pytest.raises(ValueError, match=match):
    attacks.autoattack(model, X, Y, KEY, norm="linf", eps=8 / 255, **kw)
  assert model.calls == 0


@pytest.mark.parametrize("bad,match", [
    ([], r"^attacks=\[\] is empty"), ({}, r"^attacks=\{\} is empty"),
    ((), r"^attacks=\(\) is empty"),
    (_identity, r"^attacks must be a list .* got a single callable"),
    ("pgd", r"^attacks must be a list"),
    ([_identity, 3], r"^attacks\[1\]=3 is not an attack"),
    ({"a": None}, r"^attacks\['a'\]=None is not an attack"),
])
def test_robust_accuracy_needs_attacks(bad, match):
  model = _Counting()
  with pytest.raises(ValueError, match=match):
    attacks.robust_accuracy(model, X, Y, KEY, bad)
  assert model.calls == 0


def test_empty_batches_are_a_clear_error():
  x0, y0 = jnp.zeros((0, 2, 2, 3)), jnp.zeros((0,), jnp.int32)
  with pytest.raises(ValueError, match=r"^x is an empty batch"):
    attacks.robust_accuracy(_flag_model, x0, y0, KEY, [_identity])
  with pytest.raises(ValueError, match=r"^x is an empty batch"):
    attacks.autoattack(_flag_model, x0, y0, KEY, norm="linf", eps=8 / 255)
  with pytest.raises(ValueError, match=r"^x is an empty batch"):
    lp_robustness(_flag_model, x0, y0, radii={"linf": ["8/255"]}, autoattack="none")


@pytest.mark.parametrize("kw,match", [
    (dict(aa_steps=0), r"^aa_steps=0"), (dict(square_queries=0), r"^square_queries=0"),
    (dict(batch_size=0), r"^batch_size=0"), (dict(pgd_steps=0), r"^pgd_steps=0")])
def test_lp_robustness_counts(kw, match):
  model = _Counting()
  with pytest.raises(ValueError, match=match):
    lp_robustness(model, X, Y, radii={"linf": ["8/255"]}, **kw)
  assert model.calls == 0


def test_valid_evaluation_still_runs_and_counts_the_flip():
  """The checks let a valid call through: `_flip` fools every example within l_inf 0.5."""
  r = attacks.robust_accuracy(_flag_model, X, Y, KEY, {"id": _identity, "flip": _flip},
                              threat_model=("linf", np.float32(0.5)))
  assert r["clean_accuracy"] == 1.0 and r["robust_accuracy"] == 0.0
  assert r["per_attack"] == {"id": 1.0, "flip": 0.0}
  out = attacks.autoattack(_flag_model, X, Y, KEY, norm="linf", eps=jnp.float32(0.5),
                           version="custom", attacks={"flip": _flip})
  assert out["robust_accuracy"] == 0.0 and isinstance(out["eps"], float)
