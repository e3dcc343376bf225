"""AutoAttack (issue 15): APGD-T, the ensemble protocol (only still-robust examples are
attacked), threat-model checks, the 'rand' version."""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adacorr import attacks
from tests.tiny_classifier import accuracy as _acc
from tests.tiny_classifier import perturbation_norms as _norms
from tests.tiny_classifier import trained_mlp

apgd_lib = importlib.import_module("adacorr.attacks.apgd")  # the module, not the function

EPS = {"linf": 16 / 255, "l2": 1.0}  # the tiny model is robust at 8/255, not at 16/255


@pytest.fixture(scope="module")
def trained():
  return trained_mlp()


def test_dlr_targeted_and_target_classes_by_hand():
  z = jnp.array([[5.0, 1.0, 3.0, 2.0, 0.0]])
  y, t = jnp.array([0]), jnp.array([2])
  # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) = -(5 - 3) / (5 - (2 + 1) / 2)
  np.testing.assert_allclose(apgd_lib.dlr_targeted(z, y, t), [-2.0 / 3.5], rtol=1e-6)
  np.testing.assert_array_equal(apgd_lib.target_classes(z, 2), [2])  # the runner-up
  np.testing.assert_array_equal(apgd_lib.target_classes(z, 4), [1])
  with pytest.raises(ValueError, match="4 classes"):
    apgd_lib.dlr_targeted(z[:, :3], y, t)


def test_oscillation_rule_is_the_references_less_or_equal():
  # 3 of 4 steps raised the loss, rho = 0.75: the reference halves the step (t <= k * k3).
  assert bool(apgd_lib.oscillates(3.0, 4.0, 0.75))
  assert not bool(apgd_lib.oscillates(4.0, 4.0, 0.75))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_targeted_lowers_accuracy_inside_the_ball(trained, norm):
  logits_fn, x, y = trained
  fn = jax.jit(functools.partial(attacks.apgd_targeted, logits_fn, norm=norm, eps=EPS[norm],
                                 num_steps=10, num_targets=3))
  xa = fn(x, y, jax.random.key(0))
  assert np.all(_norms(xa - x, norm) <= EPS[norm] * (1 + 1e-5) + 1e-7)
  assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
  assert _acc(logits_fn, xa, y) < _acc(logits_fn, x, y) - 0.1


def test_apgd_targeted_per_example_independence(trained):
  logits_fn, x, y = trained
  one = lambda v: jax.lax.map(lambda xi: logits_fn(xi[None])[0], v)
  fn = jax.jit(functools.partial(attacks.apgd_targeted, one, norm="linf", eps=EPS["linf"],
                                 num_steps=4, num_targets=2))
  x, y = x[:6], y[:6]
  keys = jax.random.split(jax.random.key(3), 6)
  batch = np.asarray(fn(x, y, keys))
  for i in (0, 3, 5):
    np.testing.assert_allclose(batch[i:i + 1], fn(x[i:i + 1], y[i:i + 1], keys[i:i + 1]),
                               atol=1e-6)
  perm = np.array([5, 2, 0, 4, 1, 3])
  np.testing.assert_allclose(fn(x[perm], y[perm], keys[perm]), batch[perm], atol=1e-6)


def test_apgd_targeted_bad_arguments(trained):
  logits_fn, x, y = trained
  with pytest.raises(ValueError, match="num_targets"):
    attacks.apgd_targeted(logits_fn, x[:2], y[:2], jax.random.key(0), eps=0.1,
                          num_targets=10)
  with pytest.raises(ValueError, match="target_ranks"):
    attacks.apgd_targeted(logits_fn, x[:2], y[:2], jax.random.key(0), eps=0.1,
                          target_ranks=(1,))


def _counting(flip_rows, calls, name):
  """An attack that fools the examples whose first pixel value is in `flip_rows` (by
  moving them onto another example's image is not allowed: it returns x, and the model
  below reads the flag from pixel [0, 0, 1])."""

  def attack(x, y, keys):
    calls.append((name, int(x.shape[0]), np.asarray(x[:, 0, 0, 0]).round(3).tolist()))
    ids = np.asarray(jnp.round(x[:, 0, 0, 0] * 100)).astype(int)
    hit = jnp.asarray(np.isin(ids, flip_rows))[:, None, None, None]
    return jnp.where(hit, x.at[:, 0, 0, 1].set(1.0), x)

  return attack


def _flag_model(x):
  """Class 0 unless pixel [0, 0, 1] is 1 (then class 1); 4 classes."""
  flag = x[:, 0, 0, 1]
  return jnp.stack([1.0 - flag, flag, 0 * flag - 1, 0 * flag - 1], axis=-1)


def test_only_still_robust_examples_are_attacked():
  n = 8
  x = jnp.zeros((n, 2, 2, 3)).at[:, 0, 0, 0].set(jnp.arange(n) / 100.0)
  y = jnp.zeros((n,), jnp.int32)
  calls = []
  out = attacks.autoattack(
      _flag_model, x, y, jax.random.key(0), norm="linf", eps=1.0, version="custom",
      attacks={"a": _counting([1, 2], calls, "a"), "b": _counting([3, 6], calls, "b"),
               "c": _counting([], calls, "c")})
  attacked = {name: sorted(round(v * 100) for v in vals[:size]) for name, size, vals in calls}
  assert [c[0] for c in calls] == ["a", "b", "c"]
  assert attacked["a"] == list(range(8))  # all 8 correct clean
  # b sees the 6 still robust (padded to 8 with copies of the first: counted once here)
  assert out["num_attacked"] == {"a": 8, "b": 6, "c": 4}
  assert out["per_attack"] == {"a": 0.75, "b": 0.5, "c": 0.5}
  assert out["robust_accuracy"] == 0.5
  np.testing.assert_array_equal(out["robust"], [1, 0, 0, 0, 1, 1, 0, 1])
  fooled = np.flatnonzero(~out["robust"])
  assert np.all(out["x_adv"][fooled, 0, 0, 1] == 1.0)  # the fooling points are returned


def test_threat_model_violation_raises_naming_the_attack():
  x = jnp.full((4, 2, 2, 3), 0.5)
  y = jnp.zeros((4,), jnp.int32)
  zeros = lambda a, b, k: jnp.zeros_like(a)
  with pytest.raises(ValueError, match="'zeros'.*outside the threat model"):
    attacks.autoattack(_flag_model, x, y, jax.random.key(0), norm="linf", eps=0.1,
                       version="custom", attacks={"zeros": zeros})
  with pytest.raises(ValueError, match="version"):
    attacks.autoattack(_flag_model, x, y, jax.random.key(0), norm="linf", eps=0.1,
                       version="strong")
  with pytest.raises(ValueError, match="custom"):
    attacks.autoattack(_flag_model, x, y, jax.random.key(0), norm="linf", eps=0.1,
                       version="standard", attacks=["square"])



@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_standard_version_on_a_trained_model(trained, norm):
  logits_fn, x, y = trained
  x, y = x[:32], y[:32]
  logs = []
  out = attacks.autoattack(logits_fn, x, y, jax.random.key(0), norm=norm, eps=EPS[norm],
                           num_steps=5, num_queries=40, num_targets=3, log=logs.append)
  assert list(out["per_attack"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
  acc = list(out["per_attack"].values())
  assert acc == sorted(acc, reverse=True) and acc[-1] == out["robust_accuracy"]
  assert out["robust_accuracy"] < out["clean_accuracy"] - 0.1
  # Later components run only on what the earlier ones left (APGD-T: 3 targets).
  n = out["num_attacked"]
  assert n["apgd-ce"] == round(32 * out["clean_accuracy"])
  assert n["fab-t"] == round(32 * out["per_attack"]["apgd-t"])
  assert n["square"] == round(32 * out["per_attack"]["fab-t"])
  assert n["apgd-t"] <= 3 * round(32 * out["per_attack"]["apgd-ce"])
  fooled = ~out["robust"]
  xa = jnp.asarray(out["x_adv"])
  assert np.all(_norms(xa - x, norm) <= EPS[norm] * (1 + 1e-5) + 1e-7)
  pred = np.asarray(jnp.argmax(logits_fn(xa), -1))
  assert np.all((pred != np.asarray(y))[fooled])  # every non-robust point is a real example
  assert len(logs) == 5 and "apgd-t" in logs[2]


def test_rand_version_averages_a_randomised_model(trained):
  logits_fn, x, y = trained
  x, y = x[:16], y[:16]

  def noisy(v, keys):  # a randomised model: Gaussian input noise per example
    noise = jax.vmap(lambda k, vi: 0.02 * jax.random.normal(k, vi.shape))(keys, v)
    return logits_fn(jnp.clip(v + noise, 0, 1))

  out = attacks.autoattack(noisy, x, y, jax.random.key(1), norm="linf", eps=EPS["linf"],
                           version="rand", num_steps=5, eot_iter=3)
  assert list(out["per_attack"]) == ["apgd-ce", "apgd-dlr"]
  assert out["robust_accuracy"] < out["clean_accuracy"]
  assert np.all(_norms(jnp.asarray(out["x_adv"]) - x, "linf") <= EPS["linf"] + 1e-6)


def _row(norm, eps, worst, **attacks_acc):
  return {"norm": norm, "eps": eps, "clean": 0.9, **attacks_acc, "worst_case": worst}


def test_masking_flags_by_hand():
  from adacorr.evaluation import masking_flags  # pylint: disable=import-outside-toplevel
  healthy = [_row("linf", "1/255", 0.6, **{"PGD-20": 0.65, "PGD-100": 0.645}),
             _row("linf", "8/255", 0.1), _row("l2", "0.5", 0.0), _row("l2", "1.0", 0.0)]
  assert masking_flags(healthy) == []
  flat = [_row("linf", "8/255", 0.5), _row("linf", "2/255", 0.5)]  # sorted by radius
  (flag,) = masking_flags(flat)
  assert "does not fall from eps 2/255" in flag
  square = [_row("l2", "0.5", 0.3, **{"AA/apgd-ce": 0.4, "AA/fab-t": 0.35,
                                      "AA/square": 0.3})]
  (flag,) = masking_flags(square)
  assert "Square" in flag and "5.0%" in flag
  pgd = [_row("linf", "2/255", 0.3, **{"PGD-20": 0.45, "PGD-100": 0.42})]
  (flag,) = masking_flags(pgd)
  assert "PGD-100 is stronger than PGD-20 by 3.0 points" in flag


def test_standard_radii_include_robustbench():
  from adacorr.evaluation import standard_radii  # pylint: disable=import-outside-toplevel
  assert "8/255" in standard_radii("cifar10")["linf"]
  assert "0.5" in standard_radii("cifar10")["l2"]
  assert "4/255" in standard_radii("imagenet100")["linf"]
  assert standard_radii("fashion_mnist") == {"linf": ("8/255", "0.1"), "l2": ("0.5", "1.5")}


def test_traced_logits_fn_shares_one_compilation_between_models(trained):
  """A `traced_logits_fn` makes the variables an argument of the jitted components: a
  second model of the same architecture reuses the first one's compilation, and the
  result equals the one with the variables closed over (compiled per model)."""
  from tests.tiny_classifier import MLP  # pylint: disable=import-outside-toplevel
  from adacorr.data.datasets import DATASETS  # pylint: disable=import-outside-toplevel
  aa = importlib.import_module("adacorr.attacks.autoattack")
  _, x, y = trained
  x, y = x[:16], y[:16]
  info = DATASETS["synthetic"]
  model = MLP(mean=tuple(info.mean), std=tuple(info.std))
  apply = jax.jit(lambda v, z: model.apply(v, z))
  keys = jax.random.split(jax.random.key(3), x.shape[0])
  variables = [model.init(jax.random.key(s), x[:1]) for s in (1, 2)]
  sizes, outs = [], []
  for v in variables:
    before = aa._apgd._cache_size()
    traced = attacks.component_attacks(attacks.traced_logits_fn(apply, v), norm="linf",
                                       eps=EPS["linf"], names=("apgd-ce",), num_steps=3)
    xa = traced["apgd-ce"](x, y, keys)
    sizes.append(aa._apgd._cache_size() - before)
    closed = attacks.component_attacks(lambda z, v=v: model.apply(v, z), norm="linf",
                                       eps=EPS["linf"], names=("apgd-ce",), num_steps=3)
    np.testing.assert_allclose(np.asarray(xa), np.asarray(closed["apgd-ce"](x, y, keys)),
                               atol=1e-6)
    outs.append(np.asarray(xa))
  assert sizes == [1, 0]  # the second model compiled nothing
  assert not np.array_equal(outs[0], outs[1])  # and did attack its own variables


def test_lp_robustness_without_separate_apgd_and_with_fewer_targets(trained):
  """apgd_steps=0 leaves PGD and AutoAttack (whose APGD-CE / APGD-T stand for APGD-CE /
  DLR); aa_targets reaches APGD-T (10 targets do not exist for 10 classes)."""
  from adacorr import evaluation  # pylint: disable=import-outside-toplevel
  logits_fn, x, y = trained
  kw = dict(radii={"linf": [EPS["linf"]]}, pgd_steps=3, apgd_steps=0, autoattack="fast",
            aa_steps=3, masking_steps=0)
  (row,) = evaluation.lp_robustness(logits_fn, x[:32], y[:32], aa_targets=2, **kw)
  assert "APGD-CE" not in row and "APGD-DLR" not in row
  assert {"PGD-3", "AutoAttack", "AA/apgd-ce", "AA/apgd-t", "worst_case"} <= set(row)
  assert row["worst_case"] <= min(row["PGD-3"], row["AutoAttack"]) < row["clean"]
  with pytest.raises(ValueError, match="num_targets"):
    evaluation.lp_robustness(logits_fn, x[:32], y[:32], aa_targets=10, **kw)
