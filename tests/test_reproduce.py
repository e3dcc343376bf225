"""The reproduction suite (issue 17): equal budgets, a 2-run 1-seed suite end to end with
its table and plots, resuming reuses finished runs, orderings, and the paper-scale suites'
configs resolve and one train step of each lowers on CPU."""

import json
import math
import os

import jax
from jax.experimental.compilation_cache import compilation_cache
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adacorr.evaluation import comparison
from adacorr.run import reproduce
from experiments.configs import suites
from tests.configs import tiny_synthetic


def test_equal_budget_copies_the_base_and_keeps_the_method():
  base = tiny_synthetic.get_config()
  base.num_steps, base.global_batch_size = 7, 16
  other = tiny_synthetic.get_config()
  other.update(dict(method="l2_at", num_steps=99, global_batch_size=64, learning_rate=1.0,
                    model="preact_resnet"))
  other.method_kwargs = ml_collections.ConfigDict({"eps": 0.3})
  out = reproduce.equal_budget({"l2_at": other}, base)["l2_at"]
  assert (out.num_steps, out.global_batch_size, out.learning_rate, out.model) == (
      7, 16, base.learning_rate, "small_cnn")
  assert out.method == "l2_at" and out.method_kwargs.eps == 0.3
  assert other.num_steps == 99  # the input is not modified
  base.num_steps = -1
  with pytest.raises(ValueError, match="num_steps"):
    reproduce.equal_budget({"x": other}, base)


def test_ordering_by_hand():
  table = {"a": comparison.aggregate([{"c_mean": 0.80, "mce": 20.0}, {"c_mean": 0.84,
                                                                      "mce": 16.0}]),
           "b": comparison.aggregate([{"c_mean": 0.70, "mce": 30.0}, {"c_mean": 0.70,
                                                                      "mce": 30.0}])}
  assert table["a"]["c_mean"]["mean"] == pytest.approx(0.82)
  assert table["a"]["c_mean"]["std"] == pytest.approx(0.02 * 2 ** 0.5)  # ddof 1
  r = comparison.ordering(table, "a", "b", "c_mean")
  assert r["difference"] == pytest.approx(0.12)
  assert r["sigma"] == pytest.approx(0.12 / (0.02 * 2 ** 0.5))
  # Welch: se = sqrt(0.0008 / 2 + 0) = 0.02, t = 6, df = 1 (b has no spread): Student's t
  # with 1 degree of freedom is Cauchy, P(T >= 6) = 1/2 - atan(6) / pi = 0.0526 > 0.05.
  assert r["t"] == pytest.approx(6.0) and r["df"] == pytest.approx(1.0)
  assert r["p"] == pytest.approx(0.5 - math.atan(6.0) / math.pi)
  assert r["outcome"] == "not shown" and r["held"] is False  # the right sign is not enough
  r = comparison.ordering(table, "a", "b", "mce")  # lower is better: +12, t = 12 / 2 = 6
  assert r["difference"] == pytest.approx(12.0) and r["outcome"] == "not shown"
  assert comparison.ordering(table, "b", "a", "c_mean")["outcome"] == "not shown"
  assert comparison.ordering(table, "a", "missing", "c_mean")["held"] is None


@pytest.mark.parametrize("diffs,margin,expected", [
    ([0.03, 0.04, 0.05], 0.0, "held"),           # t = 0.04 / (0.01 / sqrt 3) = 6.93
    ([-0.03, -0.04, -0.05], 0.0, "reversed"),
    ([0.05, -0.04, 0.02], 0.0, "not shown"),     # the mean is > 0, the test is not
    ([-0.01, -0.005, -0.015], 0.02, "held"),     # within 2 points: -1 + 2 > 0 at every seed
    ([-0.03, -0.025, -0.035], 0.02, "reversed"),  # 3 points behind: outside the margin
    ([0.02], 0.0, "not shown"),                  # one seed: no test
])
def test_paired_outcomes_by_hand(diffs, margin, expected):
  better = {s: {"clean": 0.8 + d} for s, d in enumerate(diffs)}
  worse = {s: {"clean": 0.8} for s in range(len(diffs))}
  p = comparison.paired_ordering(better, worse, "clean", margin=margin)
  assert p["outcome"] == expected
  if len(diffs) > 1:
    d = np.asarray(diffs) + margin
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    assert p["t"] == pytest.approx(t) and p["df"] == d.size - 1
    if d.size == 3:  # Student's t with 2 df: P(T >= t) = 1/2 - t / (2 sqrt(2 + t^2))
      assert p["p"] == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)))
      assert p["p"] + p["p_reversed"] == pytest.approx(1.0)


def test_paired_ordering_by_hand():
  # Seed swings common to both runs (seed 2 is easy for both) cancel in the paired
  # difference: d = (0.02, 0.01, 0.05), mean 0.08/3, sample std sqrt(0.0013/3).
  a = {0: {"c_mean": 0.80, "mce": 20.0}, 1: {"c_mean": 0.84, "mce": 16.0},
       2: {"c_mean": 0.90, "mce": 10.0}}
  b = {0: {"c_mean": 0.78, "mce": 21.0}, 1: {"c_mean": 0.83, "mce": 17.0},
       2: {"c_mean": 0.85, "mce": 12.0}, 3: {"c_mean": 0.10}}
  p = comparison.paired_ordering(a, b, "c_mean")
  assert p["seeds"] == [0, 1, 2] and p["held_seeds"] == 3  # seed 3: b only, left out
  assert p["differences"] == pytest.approx([0.02, 0.01, 0.05])
  assert p["mean"] == pytest.approx(0.08 / 3)
  assert p["std"] == pytest.approx((0.0013 / 3) ** 0.5)
  assert p["sigma"] == pytest.approx((0.08 / 3) / (0.0013 / 3) ** 0.5)
  # t = d_z * sqrt(3) = 2.22, P(T_2 >= 2.22) = 0.078: positive at every seed, not shown.
  assert p["outcome"] == "not shown" and 0.05 < p["p"] < 0.1
  unpaired = comparison.ordering({"a": comparison.aggregate(list(a.values())),
                                  "b": comparison.aggregate(list(b.values())[:3])},
                                 "a", "b", "c_mean")
  assert unpaired["difference"] == pytest.approx(p["mean"]) and unpaired["sigma"] < 0.5
  q = comparison.paired_ordering(b, a, "mce")  # lower is better: b is worse by 1, 1, 2
  assert q["differences"] == pytest.approx([-1.0, -1.0, -2.0]) and q["held_seeds"] == 0
  m = comparison.paired_ordering(b, a, "mce", margin=1.5)
  assert m["held_seeds"] == 2 and m["mean"] == pytest.approx(-4 / 3 + 1.5)
  assert comparison.paired_ordering(a, {}, "c_mean")["mean"] is None


def test_suite_orderings_are_paired_by_seed():
  from adacorr.run import reproduce  # pylint: disable=import-outside-toplevel
  rows = {"a": [{"c_mean": 0.80}, {"c_mean": 0.90}], "b": [{"c_mean": 0.78}, {"c_mean": 0.88}]}
  seeds = {"a": [0, 2], "b": [0, 2]}
  table = {n: comparison.aggregate(r) for n, r in rows.items()}
  claims = [dict(better="a", worse="b", key="c_mean", claim="a above b")]
  (r,) = reproduce.check_orderings(table, claims, rows=rows, seeds=seeds)
  # Unpaired: 0.02 over hypot of two sample stds of 0.1 / sqrt(2): 0.2 std devs.
  assert r["sigma"] == pytest.approx(0.2)
  assert r["paired"]["seeds"] == [0, 2] and r["paired"]["sigma"] == float("inf")
  line = reproduce.format_orderings([r]).splitlines()[-1]
  # Two seeds, the same +2 points at both: zero spread, t = inf, held by the paired test.
  assert line.endswith("| +2.00 ± 0.00 | n/a (no spread) | < 0.001 | 2 of 2 |")
  assert r["outcome"] == "held" and r["test"] == "paired t"
  seeds["b"] = [0, 1]  # b's second row is seed 1 now: only seed 0 pairs
  (r,) = reproduce.check_orderings(table, claims, rows=rows, seeds=seeds)
  assert r["paired"]["seeds"] == [0] and r["paired"]["held_seeds"] == 1


def _tiny_suite():
  base = tiny_synthetic.get_config()
  base.update(dict(num_steps=3, log_every_steps=1, eval_every_steps=-1,
                   checkpoint_every_steps=3, global_batch_size=16))
  l2 = tiny_synthetic.get_config()
  l2.method = "l2_at"
  l2.method_kwargs = ml_collections.ConfigDict({"eps": 0.5})
  configs = reproduce.equal_budget({"nominal": tiny_synthetic.get_config(), "l2_at": l2}, base)
  options = dict(corruptions="generated", extra=False,
                 corruption_names=["gaussian_noise", "brightness"], num_examples=32,
                 corrupted_dir="@suite/C", lp_num_examples=8, linf_eps=["8/255"], l2_eps=[],
                 autoattack="fast", aa_steps=2, pgd_steps=2, apgd_steps=2, masking_steps=0,
                 noise_num_examples=8, lpips_bounds=["0.5"], lpips_model="@baseline",
                 lpa_num_examples=4, lpa_steps=2, lpa_lambda_steps=1, batch_size=16)
  return configs, options


def test_a_two_run_suite_end_to_end_and_resume(tmp_path):
  configs, options = _tiny_suite()
  workdir = str(tmp_path / "suite")
  lines = []
  reproduce.run_suite(configs, [0], workdir, options, baseline="nominal", log=lines.append)
  assert [l.split(":")[0] for l in lines] == ["[1/2] nominal seed 0", "[2/2] l2_at seed 0"]
  assert all("done" in l for l in lines)
  results = reproduce.suite_results(list(configs), [0], workdir, baseline="nominal")
  claims = [dict(better="l2_at", worse="nominal", key="c_mean", claim="l2 AT helps")]
  markdown = reproduce.write_suite(workdir, results, title="tiny", claims=claims)
  for name in ("table.md", "table.json", "bars.png", "heatmap.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  table = json.load(open(os.path.join(workdir, "table.json"), encoding="utf-8"))
  assert set(table["table"]) == {"nominal", "l2_at"}
  for run in ("nominal", "l2_at"):
    row = table["table"][run]
    # AutoAttack-fast at 2 iterations is named as what it is, not 'AA'.
    for key in ("clean", "c_mean", "linf 8/255", "APGD-CE+APGD-T(9) 2 it linf 8/255", "lpips 0.5",
                "eps_star_gn", "ece"):
      assert row[key]["n"] == 1 and row[key]["std"] == 0.0, (run, key)
      assert row[key]["mean"] >= 0.0
  # Relative mCE needs all 15 benchmark corruptions (2 ran here), so it is left out.
  assert table["table"]["nominal"].get("relative_mce") is None  # not all 15 corruptions ran
  (order,) = table["orderings"]
  assert order["claim"] == "l2 AT helps" and order["held"] in (True, False)
  header = markdown.splitlines()[2]
  assert "clean acc" in header and "LPIPS 0.5 acc" in header and "ECE" in header
  # Every run's LPA used the baseline's LPIPS network (one scale for all runs).
  report = json.load(open(os.path.join(workdir, "l2_at", "seed0", "report", "report.json"),
                          encoding="utf-8"))
  assert report["lpips"]["model"] == os.path.abspath(reproduce.member_dir(workdir, "nominal", 0))
  mtime = os.path.getmtime(os.path.join(workdir, "l2_at", "seed0", "summary.json"))
  # Resuming: the finished runs and reports are reused, nothing is retrained.
  again = []
  reproduce.run_suite(configs, [0], workdir, options, baseline="nominal", log=again.append)
  assert all("reused" in l for l in again), again
  assert os.path.getmtime(os.path.join(workdir, "l2_at", "seed0", "summary.json")) == mtime


def _lowerable(config):
  """The config with its corruption nets untrained (no pretraining) and no stored data."""
  if config.method == "ada":
    config.method_kwargs.backbones = tuple(
        dict(net=b["net"], init="random",
             net_kwargs=dict(b["pretrain"]["net_kwargs"]) if b.get("pretrain") else {})
        for b in config.method_kwargs.backbones)
  return config


@pytest.mark.parametrize("suite", ["cifar10", "imagenet100"])
def test_paper_suites_resolve_and_one_step_traces_on_cpu(suite):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from adacorr import data as data_lib  # pylint: disable=import-outside-toplevel
  from adacorr import run  # pylint: disable=import-outside-toplevel
  from adacorr.core.types import StatefulLoss  # pylint: disable=import-outside-toplevel
  from adacorr.data import augment as augment_lib  # pylint: disable=import-outside-toplevel
  from adacorr.train import loop, optim  # pylint: disable=import-outside-toplevel
  from adacorr.train import state as state_lib  # pylint: disable=import-outside-toplevel
  from adacorr.train import step as step_lib  # pylint: disable=import-outside-toplevel
  spec = suites.get_suite(suite)
  assert spec["baseline"] in spec["configs"] and spec["reference"]
  for name, config in spec["configs"].items():
    config = _lowerable(config)
    info = data_lib.DATASETS[config.dataset]
    model = loop.build_model(config, info)
    loss_fn = run.make_method(model, config)
    tx = optim.make_optimizer(config, optim.make_schedule(config, steps_per_epoch=10,
                                                          num_steps=100))
    shape = (2,) + tuple(info.image_shape)
    def init_state():
      state = state_lib.create_train_state(model, tx, jax.random.PRNGKey(0), shape[1:])
      if isinstance(loss_fn, StatefulLoss):  # ANT: its generator state
        state = state.replace(method_state=loss_fn.init(jax.random.PRNGKey(1), shape[1:]))
      return state
    state = jax.eval_shape(init_state)
    train_step = step_lib.make_train_step(
        loss_fn, tx, augment_fn=augment_lib.get_augment(config.augment, **config.augment_kwargs))
    batch = {"image": jax.ShapeDtypeStruct(shape, jnp.float32),
             "label": jax.ShapeDtypeStruct(shape[:1], jnp.int32)}
    traced = jax.jit(train_step).trace(state, batch)
    assert traced.out_info is not None, name


def test_a_parallel_member_reports_what_its_process_reused(tmp_path):
  from adacorr.run import reproduce  # pylint: disable=import-outside-toplevel
  assert reproduce.member_reuse(str(tmp_path)) == {"trained_reused": False,
                                                   "report_reused": False}
  with open(tmp_path / "reproduce.log", "w", encoding="utf-8") as f:
    f.write("training...\n" + reproduce.MEMBER_LINE.format(trained_reused=True,
                                                             report_reused=False) + "\n")
  assert reproduce.member_reuse(str(tmp_path)) == {"trained_reused": True,
                                                   "report_reused": False}


def test_orderings_show_the_raw_difference_and_the_margin():
  from adacorr.run import reproduce  # pylint: disable=import-outside-toplevel
  table = {"ada": {"clean": {"mean": 0.758, "std": 0.0, "n": 3}},
           "nominal": {"clean": {"mean": 0.780, "std": 0.0, "n": 3}}}
  claims = [dict(better="ada", worse="nominal", key="clean", margin=0.02, claim="within 2")]
  (r,) = reproduce.check_orderings(table, claims)
  assert r["held"] is False and r["outcome"] == "reversed"  # 2.2 behind: not within 2
  row = reproduce.format_orderings([r]).splitlines()[-1]
  assert "| reversed (Welch t) | -2.20 (held if > -2.00) |" in row and "n/a (no spread" in row
  table["ada"]["clean"]["mean"] = 0.765
  (r,) = reproduce.check_orderings(table, claims)
  assert r["held"] is True and "-1.50 (held if > -2.00)" in reproduce.format_orderings([r])


def test_the_compilation_cache_is_turned_on_in_the_suite_directory(tmp_path):
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  old = {name: getattr(jax.config, name) for name in names}
  try:
    path = reproduce.enable_compilation_cache(str(tmp_path))
    assert path == os.path.join(str(tmp_path), reproduce.COMPILATION_CACHE)
    assert jax.config.jax_compilation_cache_dir == path
    jax.jit(lambda v: v * 3.0 + 7.0)(jnp.ones((3, 5)))  # a new program is written there
    assert os.listdir(path)
  finally:
    for name, value in old.items():
      jax.config.update(name, value)
    compilation_cache.reset_cache()


def test_a_table_of_an_unfinished_suite_says_which_rows_have_fewer_seeds(tmp_path):
  cell = lambda m: {"mean": m, "std": 0.01, "n": 2}  # noqa: E731
  results = {"table": {"nominal": {"clean": cell(0.8), "c_mean": cell(0.6)},
                       "rlat": {"clean": cell(0.7), "c_mean": cell(0.62)}},
             "rows": {}, "seeds": {"nominal": [0, 1], "rlat": [0], "pat": []},
             "corruptions": {"nominal": {}, "rlat": {}}}
  markdown = reproduce.write_suite(str(tmp_path), results, title="partial")
  assert "**Unfinished**: rlat (seeds 0 of 2); pat (no seed of 2). Means over" in markdown
  results["seeds"] = {"nominal": [0, 1], "rlat": [0, 1]}
  assert "Unfinished" not in reproduce.write_suite(str(tmp_path), results, title="done")


def test_runs_go_seed_by_seed_with_the_baseline_first(tmp_path, monkeypatch):
  """Every run at seed 0 before any at seed 1: a suite stopped early has all its rows."""
  done = []

  def fake_member(name, config, seed, workdir, report_options, *, baseline):
    done.append((name, seed))
    return {"name": name, "seed": seed, "trained_reused": True, "report_reused": True,
            "seconds": 0.0, "row": {"clean": 0.5}}

  monkeypatch.setattr(reproduce, "run_member", fake_member)
  configs = {"a": None, "nominal": None, "b": None}
  reproduce.run_suite(configs, [0, 1], str(tmp_path), {}, baseline="nominal", log=lambda l: None)
  assert done == [("nominal", 0), ("a", 0), ("b", 0), ("nominal", 1), ("a", 1), ("b", 1)]
