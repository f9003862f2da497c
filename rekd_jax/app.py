"""Validates a config and dispatches on `config.mode`; the only thing main.py calls.

Validation runs before any dataset is opened or any function is compiled, so a bad field fails
in seconds with a message that names it.
"""
import jax
import ml_collections

from rekd_jax.core import logging as logging_lib
from rekd_jax.core import run_record
from rekd_jax.evaluation import config as eval_config
from rekd_jax.evaluation import run as eval_run
from rekd_jax.experiments import quickstart, quickstart_grid
from rekd_jax.training import config as train_config
from rekd_jax.training import pretrain

# mode -> (validate(config), run(config, workdir))
_MODES = {
    "pretrain": (train_config.validate, pretrain.train_and_evaluate),
    "quickstart": (train_config.validate, quickstart.run),
    "quickstart_grid": (train_config.validate, quickstart_grid.run),
    "linear": (eval_config.validate, eval_run.evaluate),
    "conv_probe": (eval_config.validate, eval_run.evaluate),
    "knn": (eval_config.validate, eval_run.evaluate),
    "semi_supervised": (eval_config.validate, eval_run.evaluate),
}


class ConfigError(ValueError):
  """The config is invalid; the message names the field and the fix."""


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (a ValueError) naming the bad field and the fix."""
  mode = config.get("mode")
  if mode not in _MODES:
    raise ConfigError(
        f"config.mode={mode!r} is not a known mode; use one of {sorted(_MODES)} "
        "(set it in the config file or with --config.mode=...).")
  try:
    _MODES[mode][0](config)
  except ValueError as e:
    raise ConfigError(str(e)) from e


def run(config: ml_collections.ConfigDict, workdir: str):
  """Validates `config`, then runs what `config.mode` names in `workdir`; returns its result."""
  if not workdir:
    raise ConfigError("--workdir is empty: give a directory for checkpoints, logs and results.")
  logging_lib.quiet_library_logs()
  validate(config)
  if config.mode == "quickstart":  # pre-training and evaluation write their own config.json
    run_record.write_config(workdir, config)
  result = _MODES[config.mode][1](config, workdir)
  if jax.process_index() == 0:
    summary = run_record.closing_summary(config, workdir, result)
    if summary:
      print(summary, flush=True)
  return result
