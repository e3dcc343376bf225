"""Checks of experiment configs against their schemas, before anything is trained.

Two schemas, each a defaults module whose docstring says where a config may add keys:

  classifier configs      experiments/configs/default.py: `get_config()`, `FREE_FORM`
                          (model_kwargs, augment_kwargs, method_kwargs)
  corruption-net configs  experiments/configs/corruption_nets/__init__.py:
                          `get_base_config()`, `FREE_FORM` (net_kwargs, augment_kwargs)

`check_classifier_config(config)` checks a classifier config: its keys against the
schema (a misspelt key is a ValueError naming it, the closest known key and the known
ones), its values (`adacorr.train.config_checks.check_classifier_config`), its method and
method_kwargs (`adacorr.run.methods.check_method_kwargs`) and the pretraining configs of
AdA's backbone specs (`check_corruption_net_config`). The command-line tools run these
first; `parse_flags` turns a `--config.KEY=VALUE` override of a key the config lacks into
a flags error with a "did you mean" (instead of a traceback from ml_collections).

Not a config module: it has no `get_config`.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Collection, Sequence

from absl import app
from absl import flags

from adacorr.train import config_checks
from experiments.configs import corruption_nets as corruption_net_defaults
from experiments.configs import default

# Keys only the other kind of config has: a config of the wrong kind gets a hint.
_CORRUPTION_NET_ONLY = ("net", "net_kwargs", "zero_init", "num_eval_examples")
_CLASSIFIER_ONLY = ("model", "model_kwargs", "method", "method_kwargs")


def check_classifier_keys(config: Any, *, where: str = "config") -> None:
  """Every key of `config` is a key of `default.get_config()` (free keys only inside
  `default.FREE_FORM`); raises ValueError naming each unknown key and its closest known
  key."""
  hint = ""
  if any(k in config and k not in default.get_config() for k in _CORRUPTION_NET_ONLY):
    hint = ("This looks like a corruption-net config: pretrain it with "
            "`python -m experiments.train_corruption_net --config=...`.")
  config_checks.check_known_keys(config, default.get_config(), free_form=default.FREE_FORM,
                                 where=where, hint=hint)


def check_corruption_net_keys(config: Any, *, where: str = "config") -> None:
  """Every key of `config` is a key of `corruption_nets.get_base_config()` (free keys only
  inside its `FREE_FORM`); raises ValueError naming each unknown key."""
  schema = corruption_net_defaults.get_base_config()
  hint = ""
  if any(k in config and k not in schema for k in _CLASSIFIER_ONLY):
    hint = ("This looks like a classifier config: train it with "
            "`python -m experiments.train --config=...`.")
  config_checks.check_known_keys(config, schema, free_form=corruption_net_defaults.FREE_FORM,
                                 where=where, hint=hint)


def check_corruption_net_config(config: Any, *, where: str = "config") -> None:
  """A corruption-net config: its keys (`check_corruption_net_keys`) and values
  (`adacorr.train.corruption_nets.validate_config`). Raises ValueError."""
  # pylint: disable=import-outside-toplevel
  import ml_collections
  from adacorr.train import corruption_nets
  check_corruption_net_keys(config, where=where)
  if not isinstance(config, ml_collections.ConfigDict):
    config = ml_collections.ConfigDict(dict(config))
  try:
    corruption_nets.validate_config(config)
  except ValueError as e:
    if where == "config":
      raise
    raise ValueError(f"{where}: {e}") from e


def check_classifier_config(config: Any, *, where: str = "config") -> None:
  """A classifier config: its keys (`check_classifier_keys`), values
  (`config_checks.check_classifier_config`), method and method_kwargs
  (`run.methods.check_method_kwargs`), and each AdA backbone spec's `pretrain` config
  (`check_corruption_net_config`). Reads nothing from disk. Raises ValueError."""
  from adacorr.run import methods as run_methods  # pylint: disable=import-outside-toplevel
  check_classifier_keys(config, where=where)
  config_checks.check_classifier_config(config, where=where)
  _, kwargs = run_methods.check_method_kwargs(config)
  for i, spec in enumerate(kwargs.get("backbones") or ()):
    if isinstance(spec, dict) and spec.get("pretrain") is not None:
      check_corruption_net_config(spec["pretrain"],
                                  where=f"{where}.method_kwargs.backbones[{i}].pretrain")


# --- the command line ------------------------------------------------------------------

def check_workdir(workdir: str | None, *, flag: str = "--workdir",
                  required: bool = True) -> None:
  """`workdir` is a non-empty path that is not an existing file (None: allowed unless
  `required`). Raises app.UsageError naming `flag`."""
  if workdir is None:
    if required:
      raise app.UsageError(f"{flag} is required: the directory of the run.")
    return
  if not isinstance(workdir, str) or not workdir.strip():
    raise app.UsageError(f"{flag}={workdir!r} is empty: give the directory of the run"
                         + ("." if required else ", or leave the flag out for the default."))
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise app.UsageError(f"{flag}={workdir!r} is a file, not a directory.")


def load_config(flag_values: flags.FlagValues = flags.FLAGS, flag: str = "config"):
  """The config of `--{flag}`, loaded; app.UsageError naming the file if it is missing
  or does not load (ml_collections defers that error to the first use)."""
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  config = flag_values[flag].value
  if config is None:
    raise app.UsageError(f"--{flag} is required: an experiment config file.")
  try:
    list(config.keys())
  except (OSError, AttributeError) as e:
    try:
      path = config_flags.get_config_filename(flag_values[flag])
    except Exception:  # pylint: disable=broad-except
      path = "?"
    raise app.UsageError(f"--{flag}={path} could not be loaded: {e}") from e
  return config


def config_filename(flag_values: flags.FlagValues = flags.FLAGS, flag: str = "config") -> str:
  """The path given to `--{flag}` ('' if unknown)."""
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  try:
    return config_flags.get_config_filename(flag_values[flag])
  except Exception:  # pylint: disable=broad-except
    return ""


def override_paths(argv: Sequence[str], flag: str = "config") -> list[str]:
  """The key paths of the `--{flag}.PATH[=VALUE]` overrides in `argv` ('a.b')."""
  prefix = f"--{flag}."
  return [a[len(prefix):].split("=", 1)[0] for a in argv if a.startswith(prefix)]


def _without_overrides(argv: Sequence[str], flag: str) -> list[str]:
  """`argv` less its `--{flag}.PATH[=VALUE]` overrides (and a separate VALUE)."""
  prefix, out, skip = f"--{flag}.", [], False
  for a in argv:
    if skip:
      skip = False
      if not a.startswith("-"):
        continue
    if a.startswith(prefix):
      skip = "=" not in a
      continue
    out.append(a)
  return out


def parse_flags(argv: Sequence[str], *, flag_values: flags.FlagValues = flags.FLAGS,
                flag: str = "config", free_form: Collection[str] = ()) -> list[str]:
  """`flag_values(argv)`; an override `--{flag}.PATH=...` of a key the config lacks raises
  `flags.IllegalFlagValueError` naming it, with a "did you mean" (`config_checks.
  override_error`), instead of ml_collections' KeyError/AttributeError."""
  try:
    return flag_values(list(argv))
  except (KeyError, AttributeError) as e:
    message, saved_argv = None, sys.argv
    try:
      flag_values.unparse_flags()
      base = _without_overrides(argv, flag)
      sys.argv = base  # config_flags reads the overrides from sys.argv
      flag_values(base)
      config = flag_values[flag].value
      for path in override_paths(argv, flag):
        message = config_checks.override_error(config, path, free_form=free_form, flag=flag)
        if message:
          break
    except Exception:  # pylint: disable=broad-except
      message = None
    finally:
      sys.argv = saved_argv
      flag_values.unparse_flags()
    raise flags.IllegalFlagValueError(message or f"a --{flag}.* override: {e}") from e


def flags_parser(free_form: Collection[str], flag: str = "config") -> Callable[[list], list]:
  """`app.run(main, flags_parser=...)`: `parse_flags`, and absl's report of a flags error
  (the message, then exit status 1) for any flags error."""
  def parser(argv):
    try:
      return parse_flags(argv, flag=flag, free_form=free_form)
    except flags.Error as e:
      sys.stderr.write(f"FATAL Flags parsing error: {e}\n"
                       "Pass --helpshort or --helpfull to see help on flags.\n")
      sys.exit(1)
  return parser
