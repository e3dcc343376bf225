"""`adacorr.evaluate`: any JAX model's robustness in one call (adacorr/evaluation/robustness.py)."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adacorr
from adacorr import attacks, corruptions as corruptions_lib, data, evaluation
from adacorr.data import corrupted
from tests.tiny_classifier import trained_mlp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = {"progress": False, "log": None}


@pytest.fixture(scope="module")
def mlp():
  return trained_mlp(24)


def test_readme_example_runs_as_written(tmp_path, monkeypatch):
  readme = open(os.path.join(ROOT, "README.md")).read()
  section = readme.split("## Evaluate your own model", 1)[1]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  monkeypatch.chdir(tmp_path)
  scope = {}
  exec(compile(code, "README.md", "exec"), scope)  # pylint: disable=exec-used
  saved = json.load(open(tmp_path / "eval_my_model" / "result.json"))
  assert set(saved["autoattack_acc"]) == {"linf 8/255", "l2 0.5"}
  # The README's call is AutoAttack standard at full budget, and is labelled so.
  assert set(saved["autoattack_attack"].values()) == {"AutoAttack"}
  assert saved["clean_acc"] == 1.0  # labels are the model's predictions
  for acc in saved["autoattack_acc"].values():
    assert 0.0 <= acc <= saved["clean_acc"]
  assert set(saved["corruptions"]["accuracy"]) == {"gaussian_noise", "fog"}
  for f in ("result.md", "corruptions.png", "reliability.png"):
    assert (tmp_path / "eval_my_model" / f).stat().st_size > 0
  assert isinstance(scope["result"], adacorr.Robustness)


def test_eight_devices_equal_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "eval_sharding_worker.py")],
                        env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert [l for l in proc.stdout.splitlines() if l.startswith("OK")], proc.stdout


def test_generated_in_memory_equals_a_stored_set(mlp, tmp_path):
  # The in-memory corruptions use the stored sets' per-example keys and 256 levels, so a
  # set written by data.corrupted.build_corrupted gives the same accuracies.
  logits_fn, x, y = mlp
  names = ["gaussian_noise", "contrast"]
  source = data.ArraySource(np.asarray(jnp.round(x * 255)).astype(np.uint8), np.asarray(y), 10)
  corrupted.build_corrupted(source, str(tmp_path), corruptions=names, seed=5, progress=False)
  stored = {(n, s): corrupted.load_corrupted(str(tmp_path), n, s).get(np.arange(len(y)))[0]
            for n in names for s in corruptions_lib.SEVERITIES}
  kw = dict(threat_models=None, key=jax.random.key(0), **QUIET)
  gen = evaluation.evaluate(logits_fn, x, y, corruptions=names, corruption_seed=5, **kw)
  pub = evaluation.evaluate(logits_fn, x, y, corruptions=stored, **kw)
  assert gen.corruptions["accuracy"] == pub.corruptions["accuracy"]
  assert gen.corruptions["source"] == "generated" and pub.corruptions["source"] == "published"
  # The sets compared are corrupted (not the clean images), differently per severity.
  clean_u8 = source.get(np.arange(len(y)))[0]
  assert not np.array_equal(stored[("contrast", 5)], clean_u8)
  assert not np.array_equal(stored[("gaussian_noise", 1)], stored[("gaussian_noise", 5)])


def test_cifar10c_directory_layout(mlp, tmp_path):
  logits_fn, x, y = mlp
  sets = {}
  for name in ("fog", "pixelate"):
    blocks = [np.asarray(jnp.round(255 * corruptions_lib.corrupt(
        x, name, s, jax.random.key(s)))).astype(np.uint8) for s in corruptions_lib.SEVERITIES]
    np.save(tmp_path / f"{name}.npy", np.concatenate(blocks))
    sets.update({(name, s): blocks[s - 1] for s in corruptions_lib.SEVERITIES})
  np.save(tmp_path / "labels.npy", np.tile(np.asarray(y), 5))
  kw = dict(threat_models=None, key=jax.random.key(0), **QUIET)
  from_dir = evaluation.evaluate(logits_fn, x, y, corruptions=str(tmp_path), **kw)
  from_map = evaluation.evaluate(logits_fn, x, y, corruptions=sets, **kw)
  assert from_dir.corruptions["accuracy"] == from_map.corruptions["accuracy"]
  assert list(from_dir.corruptions["accuracy"]) == ["fog", "pixelate"]
  loaded, labels = evaluation.load_cifar10c(str(tmp_path), ["fog"], num_examples=5)
  np.testing.assert_array_equal(loaded[("fog", 3)], sets[("fog", 3)][:5])
  np.testing.assert_array_equal(labels, np.asarray(y)[:5])
  with pytest.raises(ValueError, match="labels.npy does not match"):
    evaluation.evaluate(logits_fn, x, (y + 1) % 10, corruptions=str(tmp_path), **kw)
  with pytest.raises(ValueError, match="not a CIFAR-10-C directory .*nor ImageNet-C"):
    evaluation.evaluate(logits_fn, x, y, corruptions=str(tmp_path / "nothing"), **kw)


def test_mce_and_relative_mce_by_hand(mlp):
  # Every benchmark corruption given as a published set: severity s of corruption i is
  # the clean images for i + s even, a black image otherwise; the accuracies are then known
  # without the code under test: clean accuracy or the black image's.
  logits_fn, x, y = mlp
  kw = dict(threat_models=None, key=jax.random.key(0), **QUIET)
  black = jnp.zeros_like(x)
  clean_acc = float(jnp.mean(jnp.argmax(logits_fn(x), -1) == y))
  black_acc = float(jnp.mean(jnp.argmax(logits_fn(black), -1) == y))
  sets, expected = {}, {}
  for i, name in enumerate(corruptions_lib.BENCHMARK_CORRUPTIONS):
    for s in corruptions_lib.SEVERITIES:
      sets[(name, s)] = x if (i + s) % 2 == 0 else black
    expected[name] = [clean_acc if (i + s) % 2 == 0 else black_acc
                      for s in corruptions_lib.SEVERITIES]
  r = evaluation.evaluate(logits_fn, x, y, corruptions=sets, **kw)
  for name in expected:
    assert r.corruptions["accuracy"][name] == pytest.approx(expected[name])
  err = {n: 1 - np.mean(a) for n, a in expected.items()}
  assert r.corruptions["mce"] == pytest.approx(100 * np.mean(list(err.values())))
  assert r.corruptions["relative_mce"] is None
  # Against a baseline with error 0.5 clean and 0.75 on every corruption:
  # CE_c = 100 E_c / 0.75, relative CE_c = 100 (E_c - E_clean) / (0.75 - 0.5).
  base = {"name": "base", "clean_accuracy": 0.5,
          "accuracy": {n: [0.25] * 5 for n in corruptions_lib.BENCHMARK_CORRUPTIONS}}
  r = evaluation.evaluate(logits_fn, x, y, corruptions=sets, baseline=base, **kw)
  assert r.corruptions["mce"] == pytest.approx(
      np.mean([100 * e / 0.75 for e in err.values()]))
  assert r.corruptions["relative_mce"] == pytest.approx(
      np.mean([100 * (e - (1 - clean_acc)) / 0.25 for e in err.values()]))
  assert r.corruptions["mce_baseline"] == "relative to base"
  assert r.to_dict()["corruptions_mce"] == r.corruptions["mce"]


def test_reduced_attacks_say_what_they_are(mlp):
  assert attacks.autoattack_label("standard") == "AutoAttack"
  assert attacks.autoattack_label("fast", num_steps=20, num_targets=1) == \
      "APGD-CE+APGD-T(1) 20 it"
  assert attacks.autoattack_label("standard", num_queries=100) == \
      "APGD-CE+APGD-T(9)+FAB-T(9)+Square(100 q) 100 it"
  logits_fn, x, y = mlp
  r = evaluation.evaluate(logits_fn, x[:8], y[:8], key=jax.random.key(1),
                          threat_models={"linf": ["16/255"]}, autoattack="fast",
                          aa_steps=5, aa_targets=1, **QUIET)
  label = "APGD-CE+APGD-T(1) 5 it"
  assert r.autoattack[0]["attack"] == label
  assert r.to_dict()["autoattack_attack"] == {"linf 16/255": label}
  assert f"| {label} linf 16/255 |" in r.to_markdown()
  assert "| AutoAttack " not in r.to_markdown()


@pytest.mark.parametrize("threat_models,match", [
    ({"linf": ["8"]}, "larger than 1"),
    ({"l2": ["100"]}, "allows every image"),
    ({"linf": [float("nan")]}, "finite"),
    ({"l2": ["inf"]}, "finite"),
    ({"linf": [0]}, "> 0"),
    ({"linf": ["-1/255"]}, "> 0"),
    ({"l1": ["1"]}, "norm"),
])
def test_bad_radii_raise_before_any_attack(mlp, threat_models, match):
  logits_fn, x, y = mlp
  if match == "allows every image":  # a legal but useless radius: a warning, then the attack runs
    with pytest.warns(UserWarning, match=match):
      evaluation.evaluate(logits_fn, x[:2], y[:2], key=jax.random.key(0), autoattack="custom",
                          aa_components=["apgd-ce"], aa_steps=1, threat_models=threat_models,
                          **QUIET)
    return
  with pytest.raises(ValueError, match=match):
    evaluation.evaluate(logits_fn, x, y, key=jax.random.key(0),
                        threat_models=threat_models, **QUIET)


def test_bad_inputs_raise(mlp):
  logits_fn, x, y = mlp
  kw = dict(key=jax.random.key(0), threat_models=None, **QUIET)
  with pytest.raises(ValueError, match="NaN or inf logits"):
    evaluation.evaluate(lambda v: logits_fn(v) * jnp.nan, x, y, **kw)
  with pytest.raises(ValueError, match="aa_components"):
    evaluation.evaluate(logits_fn, x, y, key=jax.random.key(0), autoattack="custom", **QUIET)
  with pytest.raises(ValueError, match="corruptions"):
    evaluation.evaluate(logits_fn, x, y, corruptions=["gaussian_nois"], **kw)
  with pytest.raises(ValueError, match="images"):
    evaluation.evaluate(logits_fn, x * 2, y, **kw)
  with pytest.raises(ValueError, match="needs every severity"):
    evaluation.evaluate(logits_fn, x, y, corruptions={("fog", 1): x}, **kw)
  with pytest.raises(ValueError, match="baseline"):
    evaluation.evaluate(logits_fn, x, y, corruptions=["fog"], baseline="resnet", **kw)


def test_imagenet_c_folders(tmp_path):
  # A two-class ImageNet-C layout <name>/<severity>/<wnid>/<file>.JPEG of 16x16 JPEGs; the
  # labels are the WordNet ids' sorted indices, the order WordNet id then file name.
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  wnids, per_class = ["n02", "n01"], 3
  for s in corruptions_lib.SEVERITIES:
    for w in wnids:
      os.makedirs(tmp_path / "fog" / str(s) / w)
      for i in range(per_class):
        level = 30 * s + (100 if w == "n02" else 0) + i  # brighter for n02, per severity
        Image.fromarray(np.full((16, 16, 3), level, np.uint8)).save(
            tmp_path / "fog" / str(s) / w / f"img{i}.JPEG", quality=100)
  files, labels = evaluation.imagenet_c_files(str(tmp_path), "fog", 2)
  assert [os.path.basename(os.path.dirname(f)) for f in files] == ["n01"] * 3 + ["n02"] * 3
  np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])
  images, _ = evaluation.load_imagenet_c(str(tmp_path), "fog", 2, image_size=8)
  assert images.shape == (6, 8, 8, 3)
  assert abs(int(images[0, 0, 0, 0]) - 60) <= 2 and abs(int(images[3, 0, 0, 0]) - 160) <= 2
  # A model that says class 1 when the image is brighter than 135.5/255: its accuracy per
  # severity is known by hand: n01 levels 30 s + i, n02 levels 30 s + 100 + i (JPEG's
  # error on a flat image, at most 2 levels, is far from the threshold).
  logits_fn = lambda v: jnp.stack([jnp.zeros(v.shape[0]),
                                   jnp.mean(v, (1, 2, 3)) * 255 - 135.5], -1)
  x = jnp.asarray(rng.uniform(size=(6, 8, 8, 3)), jnp.float32)
  r = evaluation.evaluate(logits_fn, x, jnp.asarray(labels), key=jax.random.key(0),
                          threat_models=None, corruptions=str(tmp_path), **QUIET)
  expected = []
  for s in corruptions_lib.SEVERITIES:
    ok = [30 * s + i < 135.5 for i in range(3)] + [30 * s + 100 + i > 135.5 for i in range(3)]
    expected.append(float(np.mean(ok)))
  assert r.corruptions["accuracy"]["fog"] == pytest.approx(expected)
  assert expected[0] == 0.5 and expected[4] == 0.5 and expected[2] == 1.0  # not trivial
  with pytest.raises(ValueError, match="do not match"):
    evaluation.evaluate(logits_fn, x, jnp.asarray(labels[::-1]), key=jax.random.key(0),
                        threat_models=None, corruptions=str(tmp_path), **QUIET)


def test_lpips_section_with_a_feature_network(mlp):
  # LPA and PPGD bounded by a given feature network (here the raw pixels and their
  # squares); a larger bound cannot leave more examples robust.
  logits_fn, x, y = mlp
  features = lambda v: [v, v * v]
  r = evaluation.evaluate(logits_fn, x[:8], y[:8], key=jax.random.key(4), threat_models=None,
                          lpips_features=features, lpips_bounds=("0.05", "2"),
                          lpips_steps=3, lpips_lambda_steps=1, batch_size=8, **QUIET)
  lp = r.lpips
  assert lp["bounds"] == [0.05, 2.0] and lp["attacks"] == ["LPA", "PPGD"]
  for b in range(2):
    assert lp["accuracy"][b] <= min(lp["per_attack"]["LPA"][b], lp["per_attack"]["PPGD"][b])
    assert lp["accuracy"][b] <= r.clean_accuracy
  assert lp["accuracy"][1] <= lp["accuracy"][0]
  assert lp["accuracy"][1] < r.clean_accuracy  # the large bound fools some examples
  assert "LPA+PPGD LPIPS 2" in r.to_markdown()
  with pytest.raises(ValueError, match="lpips_bounds"):
    evaluation.evaluate(logits_fn, x[:8], y[:8], key=jax.random.key(4), threat_models=None,
                        lpips_features=features, lpips_bounds=("nan",), **QUIET)


class _TrainArgModel(__import__("flax").linen.Module):
  """A flax classifier called as `apply(variables, x, train=False)` (the evaluators' form)."""

  @__import__("flax").linen.compact
  def __call__(self, x, train=False):
    del train
    return __import__("flax").linen.Dense(10)(x.reshape(x.shape[0], -1) - 0.5)


def test_sources_and_the_registry_evaluators_are_evaluate(mlp, tmp_path):
  # One implementation: a data.Source (read batch by batch; the run report's path) and the
  # registry's evaluate_clean / evaluate_corruptions give evaluate's numbers on arrays.
  _, x, y = mlp
  model = _TrainArgModel()
  variables = model.init(jax.random.key(1), x[:1])
  logits_fn = lambda xb: model.apply(variables, xb)
  u8 = np.asarray(jnp.round(x * 255)).astype(np.uint8)
  source = data.ArraySource(u8, np.asarray(y), 10)
  names = ["gaussian_noise", "contrast"]
  corrupted.build_corrupted(source, str(tmp_path), corruptions=names, seed=5, progress=False)
  stored = {(n, s): corrupted.load_corrupted(str(tmp_path), n, s)
            for n in names for s in corruptions_lib.SEVERITIES}
  kw = dict(threat_models=None, **QUIET)
  on_arrays = evaluation.evaluate(logits_fn, u8, y, corruptions=names, corruption_seed=5,
                                  batch_size=7, **kw)
  on_source = evaluation.evaluate(logits_fn, source, None, corruptions=stored, batch_size=5,
                                  **kw)
  assert on_source.clean_accuracy == on_arrays.clean_accuracy
  assert on_source.calibration["ece"] == pytest.approx(on_arrays.calibration["ece"], abs=1e-6)
  assert on_source.corruptions["accuracy"] == on_arrays.corruptions["accuracy"]
  # The sets differ from each other, so equal accuracies are not a constant.
  assert len({a for accs in on_arrays.corruptions["accuracy"].values() for a in accs}) > 1
  clean = evaluation.get_evaluator("clean")(model, variables, source, batch_size=6)
  assert clean["accuracy"] == on_arrays.clean_accuracy and clean["num_examples"] == len(y)
  corr = evaluation.get_evaluator("corruptions")(model, variables, stored, batch_size=9)
  assert corr["accuracy"] == on_arrays.corruptions["accuracy"]
  assert corr["mean_accuracy"] == on_arrays.corruptions["mean_accuracy"]
  first = evaluation.evaluate_corruptions(model, variables, stored, num_examples=10)
  expect = evaluation.evaluate(logits_fn, u8[:10], y[:10], corruptions={
      k: v.get(np.arange(10))[0] for k, v in stored.items()}, **kw)
  assert first["accuracy"] == expect.corruptions["accuracy"]
  # Misuse is named.
  with pytest.raises(ValueError, match="labels must be None when images is a data.Source"):
    evaluation.evaluate(logits_fn, source, y, **kw)
  wrong = data.ArraySource(u8, (np.asarray(y) + 1) % 10, 10)
  with pytest.raises(ValueError, match="labels differ from the clean labels"):
    evaluation.evaluate(logits_fn, wrong, None, corruptions=stored, **kw)
  with pytest.raises(ValueError, match="key"):  # an attack section needs a key
    evaluation.evaluate(logits_fn, u8, y, threat_models={"linf": ["8/255"]}, **QUIET)
  with pytest.raises(ValueError, match="log='print' must be a callable"):
    evaluation.evaluate(logits_fn, u8, y, threat_models=None, progress=False, log="print")


def test_calibration_warns_on_probabilities():
  probs = np.full((6, 3), 1 / 3, np.float32)
  with pytest.warns(UserWarning, match="look like probabilities, not logits"):
    evaluation.calibration(probs, np.arange(6) % 3)
