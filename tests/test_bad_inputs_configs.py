"""Bad experiment configs and command-line flags fail early with a clear error (issue 27).

Each case is what a new user might type: a misspelt config key (in the file or as a
`--config.KEY` override), an unknown method / model / dataset, a value the training
cannot use (NaN or negative learning rate, negative steps, ...), an empty --workdir, a
bad flag of experiments/reproduce.py or experiments/demo.py. Every case asserts the
error's type and a fragment of its message: it names the key or flag, what was given and
what is expected. Nothing is trained: the checks run in-process, before any data is read
(`experiments.configs.schema`, `adacorr.train.config_checks`, the CLIs' `checked_config`
and `check_args`).
"""

import contextlib
import math
import os
import sys

from absl import app
from absl import flags
import pytest

from adacorr.train import config_checks
from adacorr.train import loop
from experiments import train  # defines --config, --workdir, --data_dir
from experiments import train_corruption_net  # pylint: disable=unused-import
from experiments import demo  # pylint: disable=unused-import
from experiments import reproduce  # pylint: disable=unused-import
from experiments.configs import corruption_nets as corruption_net_defaults
from experiments.configs import default
from experiments.configs import schema
from experiments.configs import suites
from tests.configs import tiny_synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "configs", "tiny_synthetic.py")
EDSR_TINY = os.path.join(ROOT, "experiments", "configs", "corruption_nets",
                         "fashion_mnist_edsr_tiny.py")


def _tiny(**overrides):
  config = tiny_synthetic.get_config()
  with config.unlocked():
    for key, value in overrides.items():
      config[key] = value
  return config


def _corruption_net(**overrides):
  from experiments.configs.corruption_nets import fashion_mnist_edsr_tiny
  config = fashion_mnist_edsr_tiny.get_config()
  with config.unlocked():
    for key, value in overrides.items():
      config[key] = value
  return config


def _with(config, path, value):
  """`config` with `path` ('a.b') set to `value`, keys created as needed (a config file
  adding a key)."""
  *parents, last = path.split(".")
  node = config
  with config.unlocked():
    for p in parents:
      node = node[p]
    node[last] = value
  return config


# --- config files: keys and values (schema.check_classifier_config) -----------------------

CLASSIFIER_CASES = [
    # (id, config, message fragment)
    ("misspelt_top_level_key", lambda: _with(_tiny(), "learnng_rate", 0.01),
     "config key 'learnng_rate' is not a known key; did you mean 'learning_rate'? (known: "),
    ("misspelt_key_no_close_match", lambda: _with(_tiny(), "zzz_qqq", 1),
     "config key 'zzz_qqq' is not a known key (known: "),
    ("corruption_net_config_given_to_train", _corruption_net,
     "looks like a corruption-net config"),
    ("unknown_method", lambda: _tiny(method="rlta"),
     "config.method='rlta' is not one of"),
    ("unknown_method_did_you_mean", lambda: _tiny(method="rlta"), "did you mean 'rlat'?"),
    ("unknown_dataset", lambda: _tiny(dataset="fashion-mnist"),
     "config.dataset='fashion-mnist' is not one of"),
    ("dataset_without_train_split", lambda: _tiny(dataset="cifar10_1"),
     "config.dataset='cifar10_1' has no training split"),
    ("unknown_model", lambda: _tiny(model="resnet18"), "config.model='resnet18' is not one of"),
    ("misspelt_model_kwarg", lambda: _with(_tiny(), "model_kwargs.featurs", (8, 16)),
     "config.model_kwargs key 'featurs' is not an attribute of model 'small_cnn'; did you "
     "mean 'features'?"),
    ("model_kwarg_set_by_the_loop", lambda: _with(_tiny(), "model_kwargs.num_classes", 3),
     "config.model_kwargs.num_classes is set by the training loop"),
    ("misspelt_method_kwarg", lambda: _with(_tiny(method="rlat"), "method_kwargs.epsilon", 0.1),
     "config.method_kwargs has keys ['epsilon'] that method 'rlat' does not take"),
    ("method_kwarg_of_another_method", lambda: _with(_tiny(), "method_kwargs.eps", 0.1),
     "method 'nominal' does not take"),
    ("learning_rate_nan", lambda: _tiny(learning_rate=math.nan),
     "config.learning_rate=nan must be a finite number > 0"),
    ("learning_rate_inf", lambda: _tiny(learning_rate=math.inf),
     "config.learning_rate=inf must be a finite number > 0"),
    ("learning_rate_negative", lambda: _tiny(learning_rate=-0.1),
     "config.learning_rate=-0.1 must be a finite number > 0"),
    ("learning_rate_zero", lambda: _tiny(learning_rate=0.0),
     "config.learning_rate=0.0 must be a finite number > 0"),
    ("num_steps_negative", lambda: _tiny(num_steps=-5),
     "config.num_steps=-5 must be an int >= 1, or -1 to train for config.num_epochs"),
    ("num_steps_zero", lambda: _tiny(num_steps=0), "config.num_steps=0 must be an int >= 1"),
    ("num_epochs_negative", lambda: _tiny(num_steps=-1, num_epochs=-2.0),
     "config.num_epochs=-2.0 must be a finite number of epochs > 0"),
    ("batch_size_zero", lambda: _tiny(global_batch_size=0),
     "config.global_batch_size=0 must be an int >= 1"),
    ("batch_size_negative", lambda: _tiny(global_batch_size=-8),
     "config.global_batch_size=-8 must be an int >= 1"),
    ("warmup_negative", lambda: _tiny(warmup_epochs=-1.0),
     "config.warmup_epochs=-1.0 must be a finite number >= 0"),
    ("unknown_schedule", lambda: _tiny(schedule="linear"),
     "config.schedule='linear' is not one of ['constant', 'cosine', 'piecewise']"),
    ("piecewise_boundary_past_the_end",
     lambda: _tiny(schedule="piecewise", piecewise_boundaries=(0.5, 2.0)),
     "config.piecewise_boundaries=(0.5, 2.0) must be a non-decreasing sequence of fractions"),
    ("weight_decay_negative", lambda: _tiny(weight_decay=-1.0),
     "config.weight_decay=-1.0 must be a finite number >= 0"),
    ("momentum_above_one", lambda: _tiny(momentum=1.5),
     "config.momentum=1.5 must be a finite number >= 0 and < 1"),
    ("weight_decay_on_unknown", lambda: _tiny(weight_decay_on="bias"),
     "config.weight_decay_on='bias' is not one of ['all', 'kernels']"),
    ("compute_dtype_unknown", lambda: _tiny(compute_dtype="float17"),
     "config.compute_dtype='float17' is not one of"),
    ("unknown_augmentation", lambda: _tiny(augment="pad_crop_flp"),
     "config.augment='pad_crop_flp'"),
    ("misspelt_augment_kwarg", lambda: _with(_tiny(), "augment_kwargs.padd", 4),
     "config.augment_kwargs={'pad': 2, 'padd': 4}"),
    ("eval_center_crop_larger_than_the_image", lambda: _tiny(eval_center_crop=100),
     "config.eval_center_crop=100 must be an int in [0, 16]"),
    ("keep_checkpoints_zero", lambda: _tiny(keep_checkpoints=0),
     "config.keep_checkpoints=0 must be an int >= 1"),
    ("ada_pretrain_config_misspelt_key",
     lambda: _with(_tiny(method="ada"), "method_kwargs.backbones", (
         dict(net="edsr", workdir="/nonexistent",
              pretrain=dict(_corruption_net(learnng_rate=1e-3).to_dict())),)),
     "config.method_kwargs.backbones[0].pretrain key 'learnng_rate' is not a known key; "
     "did you mean 'learning_rate'?"),
]


@pytest.mark.parametrize("make_config,fragment", [c[1:] for c in CLASSIFIER_CASES],
                         ids=[c[0] for c in CLASSIFIER_CASES])
def test_bad_classifier_config_is_a_named_error(make_config, fragment):
  with pytest.raises(ValueError) as e:
    schema.check_classifier_config(make_config())
  assert fragment in str(e.value), str(e.value)


CORRUPTION_NET_CASES = [
    ("misspelt_top_level_key", lambda: _corruption_net(learnng_rate=1e-3),
     "config key 'learnng_rate' is not a known key; did you mean 'learning_rate'?"),
    ("misspelt_free_form_dict", lambda: _corruption_net(net_kwarg={"features": 4}),
     "config key 'net_kwarg' is not a known key; did you mean 'net_kwargs'?"),
    ("classifier_config_given", lambda: tiny_synthetic.get_config(),
     "looks like a classifier config"),
    ("unknown_net", lambda: _corruption_net(net="edsrr"), "config.net='edsrr' is not a"),
    ("misspelt_net_kwarg", lambda: _with(_corruption_net(), "net_kwargs.featurs", 4),
     "config.net_kwargs key 'featurs' is not an attribute of net 'edsr'; did you mean "
     "'features'?"),
    ("warmup_negative", lambda: _corruption_net(warmup_epochs=-3.0),
     "config.warmup_epochs=-3.0 must be a finite number >= 0"),
    ("num_steps_zero", lambda: _corruption_net(num_steps=0), "config.num_steps=0 must be"),
    ("learning_rate_nan", lambda: _corruption_net(learning_rate=math.nan),
     "config.learning_rate=nan"),
    ("unknown_augmentation", lambda: _corruption_net(augment="flipp"),
     "config.augment='flipp'"),
]


@pytest.mark.parametrize("make_config,fragment", [c[1:] for c in CORRUPTION_NET_CASES],
                         ids=[c[0] for c in CORRUPTION_NET_CASES])
def test_bad_corruption_net_config_is_a_named_error(make_config, fragment):
  with pytest.raises(ValueError) as e:
    schema.check_corruption_net_config(make_config())
  assert fragment in str(e.value), str(e.value)


def test_every_key_of_the_schemas_passes_and_the_free_form_dicts_are_documented():
  """The defaults themselves pass; FREE_FORM names dicts of the schema, documented in
  its module doc."""
  schema.check_classifier_config(tiny_synthetic.get_config())
  schema.check_corruption_net_config(_corruption_net())
  for module, schema_config in ((default, default.get_config()),
                                (corruption_net_defaults,
                                 corruption_net_defaults.get_base_config())):
    for key in module.FREE_FORM:
      assert key in schema_config and key in module.__doc__, key


def test_the_engine_checks_values_before_reading_data(tmp_path):
  """`loop.train_and_evaluate` (the library entry point) rejects a NaN learning rate
  before it reads the (here missing) data, not after a step of NaN loss."""
  config = _tiny(dataset="fashion_mnist", learning_rate=math.nan,
                 fashion_mnist_dir=str(tmp_path / "missing"))
  with pytest.raises(ValueError, match=r"config\.learning_rate=nan"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))


def test_override_error_names_the_path_and_the_closest_key():
  config = tiny_synthetic.get_config()
  assert config_checks.override_error(config, "learning_rate") is None
  assert config_checks.override_error(config, "model_kwargs.features") is None
  message = config_checks.override_error(config, "augment_kwargs.padd",
                                         free_form=default.FREE_FORM)
  assert "config.augment_kwargs has no key 'padd'; did you mean 'pad'?" in message
  assert "add 'padd' to config.augment_kwargs in the config file" in message


# --- the command lines, in-process ---------------------------------------------------------

@contextlib.contextmanager
def _parsed(argv, free_form=default.FREE_FORM):
  """absl flags parsed from `argv` as the CLIs parse them (`schema.parse_flags`)."""
  with pytest.MonkeyPatch.context() as m:
    m.setattr(sys, "argv", argv)  # config_flags reads its overrides from sys.argv
    try:
      schema.parse_flags(argv, free_form=free_form)
      yield
    finally:
      flags.FLAGS.unparse_flags()
      _forget_overrides()


def _forget_overrides():
  """Removes the `--config.*` override flags config_flags registered while parsing (one
  parse per process in a CLI; several here)."""
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:
    delattr(flags.FLAGS, name)


def _config_file(tmp_path, body):
  path = tmp_path / "my_config.py"
  path.write_text("from tests.configs import tiny_synthetic\n\n\ndef get_config():\n"
                  "  config = tiny_synthetic.get_config()\n" + body + "  return config\n")
  return str(path)


def _train_checked(argv):
  with _parsed(["train", *argv]):
    return train.checked_config()


def _corruption_net_checked(argv):
  with _parsed(["train_corruption_net", *argv], free_form=corruption_net_defaults.FREE_FORM):
    return train_corruption_net.checked_config()


def test_train_cli_accepts_a_good_config(tmp_path):
  config = _train_checked([f"--config={TINY}", f"--workdir={tmp_path / 'run'}",
                           "--config.learning_rate=0.01", "--data_dir=/somewhere"])
  assert config.learning_rate == 0.01 and config.data_dir == "/somewhere"


def test_train_corruption_net_cli_accepts_a_good_config(tmp_path):
  config = _corruption_net_checked([f"--config={EDSR_TINY}", f"--workdir={tmp_path / 'run'}",
                                    "--config.num_steps=3"])
  assert config.num_steps == 3


CLI_CASES = [
    # (id, argv (tmp_path -> list), error type, message fragment)
    ("train_misspelt_key_in_config_file",
     lambda t: [f"--config={_config_file(t, '  config.learnng_rate = 0.01' + chr(10))}",
                f"--workdir={t / 'w'}"],
     app.UsageError, "config key 'learnng_rate' is not a known key; did you mean "
     "'learning_rate'?"),
    ("train_misspelt_override",
     lambda t: [f"--config={TINY}", f"--workdir={t / 'w'}", "--config.learnng_rate=0.01"],
     flags.IllegalFlagValueError,
     "--config.learnng_rate: config key 'learnng_rate' is not a known key; did you mean "
     "'learning_rate'?"),
    ("train_override_adds_a_method_kwarg",
     lambda t: [f"--config={TINY}", f"--workdir={t / 'w'}", "--config.method_kwargs.eps=0.1"],
     flags.IllegalFlagValueError, "add 'eps' to config.method_kwargs in the config file"),
    ("train_misspelt_nested_override",
     lambda t: [f"--config={TINY}", f"--workdir={t / 'w'}", "--config.model_kwarg.features=4"],
     flags.IllegalFlagValueError, "did you mean 'model_kwargs'?"),
    ("train_override_with_a_bad_type",
     lambda t: [f"--config={TINY}", f"--workdir={t / 'w'}", "--config.num_steps=ten"],
     flags.IllegalFlagValueError, "--config.num_steps=ten"),
    ("train_nonexistent_config_file",
     lambda t: [f"--config={t / 'nope.py'}", f"--workdir={t / 'w'}"],
     app.UsageError, "nope.py could not be loaded"),
    ("train_empty_workdir", lambda t: [f"--config={TINY}", "--workdir="],
     app.UsageError, "--workdir='' is empty"),
    ("train_workdir_is_a_file",
     lambda t: [f"--config={TINY}", f"--workdir={TINY}"], app.UsageError, "is a file"),
    ("train_empty_data_dir",
     lambda t: [f"--config={TINY}", f"--workdir={t / 'w'}", "--data_dir="],
     app.UsageError, "--data_dir='' is empty"),
    ("train_negative_steps",
     lambda t: [f"--config={TINY}", f"--workdir={t / 'w'}", "--config.num_steps=-5"],
     app.UsageError, "config.num_steps=-5 must be an int >= 1, or -1"),
    ("train_nan_learning_rate",
     lambda t: [f"--config={TINY}", f"--workdir={t / 'w'}", "--config.learning_rate=nan"],
     app.UsageError, "config.learning_rate=nan must be a finite number > 0"),
    ("train_negative_learning_rate",
     lambda t: [f"--config={TINY}", f"--workdir={t / 'w'}", "--config.learning_rate=-0.1"],
     app.UsageError, "config.learning_rate=-0.1"),
    ("train_unknown_method",
     lambda t: [f"--config={TINY}", f"--workdir={t / 'w'}", "--config.method=adaa"],
     app.UsageError, "config.method='adaa' is not one of"),
    ("train_unknown_dataset",
     lambda t: [f"--config={TINY}", f"--workdir={t / 'w'}", "--config.dataset=mnist"],
     app.UsageError, "config.dataset='mnist' is not one of"),
    ("train_unknown_model",
     lambda t: [f"--config={TINY}", f"--workdir={t / 'w'}", "--config.model=vit"],
     app.UsageError, "config.model='vit' is not one of"),
    ("train_corruption_net_config",
     lambda t: [f"--config={EDSR_TINY}", f"--workdir={t / 'w'}"],
     app.UsageError, "python -m experiments.train_corruption_net"),
]


@pytest.mark.parametrize("make_argv,error,fragment", [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_bad_train_command_line_is_a_named_error(make_argv, error, fragment, tmp_path):
  with pytest.raises(error) as e:
    _train_checked(make_argv(tmp_path))
  assert fragment in str(e.value), str(e.value)


CORRUPTION_NET_CLI_CASES = [
    ("misspelt_override",
     lambda t: [f"--config={EDSR_TINY}", f"--workdir={t / 'w'}", "--config.net_kwarg.features=4"],
     flags.IllegalFlagValueError, "did you mean 'net_kwargs'?"),
    ("unknown_net",
     lambda t: [f"--config={EDSR_TINY}", f"--workdir={t / 'w'}", "--config.net=edsrr"],
     app.UsageError, "config.net='edsrr'"),
    ("negative_warmup",
     lambda t: [f"--config={EDSR_TINY}", f"--workdir={t / 'w'}", "--config.warmup_epochs=-3"],
     app.UsageError, "config.warmup_epochs=-3.0 must be a finite number >= 0"),
    ("classifier_config",
     lambda t: [f"--config={TINY}", f"--workdir={t / 'w'}"],
     app.UsageError, "looks like a classifier config"),
    ("empty_workdir", lambda t: [f"--config={EDSR_TINY}", "--workdir="],
     app.UsageError, "--workdir='' is empty"),
    ("empty_fashion_mnist_dir",
     lambda t: [f"--config={EDSR_TINY}", f"--workdir={t / 'w'}", "--fashion_mnist_dir="],
     app.UsageError, "--fashion_mnist_dir='' is empty"),
]


@pytest.mark.parametrize("make_argv,error,fragment", [c[1:] for c in CORRUPTION_NET_CLI_CASES],
                         ids=[c[0] for c in CORRUPTION_NET_CLI_CASES])
def test_bad_train_corruption_net_command_line_is_a_named_error(make_argv, error, fragment,
                                                                 tmp_path):
  with pytest.raises(error) as e:
    _corruption_net_checked(make_argv(tmp_path))
  assert fragment in str(e.value), str(e.value)


def test_train_main_rejects_positional_arguments():
  with pytest.raises(app.UsageError, match=r"Unexpected arguments: \['extra'\]"):
    train.main(["train", "extra"])


def test_flags_parser_reports_a_misspelt_override_and_exits_1(capsys):
  argv = ["train", f"--config={TINY}", "--workdir=/tmp/x", "--config.learnng_rate=0.01"]
  with pytest.MonkeyPatch.context() as m:
    m.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e:
      train.FLAGS_PARSER(argv)
  flags.FLAGS.unparse_flags()
  _forget_overrides()
  assert e.value.code == 1
  err = capsys.readouterr().err
  assert "FATAL Flags parsing error: --config.learnng_rate" in err
  assert "did you mean 'learning_rate'?" in err


# --- experiments/reproduce.py and experiments/demo.py --------------------------------------

_REPRODUCE_OK = dict(seeds=None, jobs=1, workdir=None, member=None, methods=None)
REPRODUCE_CASES = [
    ("seeds_zero", dict(seeds=0), "--seeds=0 must be >= 1"),
    ("seeds_negative", dict(seeds=-2), "--seeds=-2 must be >= 1"),
    ("jobs_zero", dict(jobs=0), "--jobs=0 must be >= 1"),
    ("empty_workdir", dict(workdir=""), "--workdir='' is empty"),
    ("member_without_seed", dict(member="rlat"), "--member='rlat' must be NAME:SEED"),
    ("member_bad_seed", dict(member="rlat:x"), "--member='rlat:x' must be NAME:SEED"),
    ("empty_method_name", dict(methods=["rlat", ""]), "has an empty run name"),
]


@pytest.mark.parametrize("overrides,fragment", [c[1:] for c in REPRODUCE_CASES],
                         ids=[c[0] for c in REPRODUCE_CASES])
def test_bad_reproduce_flag_is_a_named_error(overrides, fragment):
  with pytest.raises(app.UsageError) as e:
    reproduce.check_args(**{**_REPRODUCE_OK, **overrides})
  assert fragment in str(e.value), str(e.value)


def test_reproduce_good_flags_and_suite_configs_pass():
  reproduce.check_args(**{**_REPRODUCE_OK, "seeds": 2, "jobs": 2, "member": "rlat:0"})
  suite = suites.get_suite("fashion_mnist", quick=True)
  reproduce.check_suite_configs("fashion_mnist", suite["configs"])


def test_reproduce_misspelt_method_suggests_the_run():
  with pytest.raises(ValueError, match=r"'rlta': did you mean 'rlat'\?"):
    suites.get_suite("fashion_mnist", methods=["rlta"])


def test_reproduce_bad_suite_config_names_the_run():
  suite = suites.get_suite("fashion_mnist", quick=True)
  name = next(iter(suite["configs"]))
  _with(suite["configs"][name], "learnng_rate", 0.01)
  with pytest.raises(app.UsageError, match=rf"run '{name}': config key 'learnng_rate'"):
    reproduce.check_suite_configs("fashion_mnist", suite["configs"])


_DEMO_OK = dict(workdir="runs/demo", num_examples=1000, lp_num_examples=100,
                linf_eps=["1/255", "2/255"], figure_examples=256, aa_steps=20,
                square_queries=1000)
DEMO_CASES = [
    ("num_examples_negative", dict(num_examples=-1), "--num_examples=-1 must be >= 0"),
    ("lp_num_examples_negative", dict(lp_num_examples=-5), "--lp_num_examples=-5 must be >= 0"),
    ("linf_eps_not_a_number", dict(linf_eps=["abc"]), "--linf_eps='abc' is not a number"),
    ("linf_eps_above_one", dict(linf_eps=["8"]), "--linf_eps='8' must be a radius in (0, 1]"),
    ("linf_eps_nan", dict(linf_eps=["nan"]), "--linf_eps='nan' must be a radius in (0, 1]"),
    ("linf_eps_empty", dict(linf_eps=[]), "--linf_eps is empty"),
    ("figure_examples_zero", dict(figure_examples=0), "--figure_examples=0 must be >= 1"),
    ("aa_steps_zero", dict(aa_steps=0), "--aa_steps=0 must be >= 1"),
    ("empty_workdir", dict(workdir=""), "--workdir='' is empty"),
]


@pytest.mark.parametrize("overrides,fragment", [c[1:] for c in DEMO_CASES],
                         ids=[c[0] for c in DEMO_CASES])
def test_bad_demo_flag_is_a_named_error(overrides, fragment):
  with pytest.raises(app.UsageError) as e:
    demo.check_args(**{**_DEMO_OK, **overrides})
  assert fragment in str(e.value), str(e.value)


def test_demo_good_flags_pass():
  assert demo.check_args(**_DEMO_OK) == pytest.approx([1 / 255, 2 / 255])
