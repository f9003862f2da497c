"""Validates a config and dispatches on `config.mode`; the only thing main.py calls.

Validation runs before any dataset is opened or any function is compiled, so a bad field fails
in seconds with a message that names it.
"""
import importlib

import ml_collections

# mode -> (module with validate(config), module and function that runs it)
_MODES = {
    "pretrain": ("rekd_jax.training.config", "rekd_jax.training.pretrain", "train_and_evaluate"),
    "quickstart": ("rekd_jax.training.config", "rekd_jax.training.quickstart", "run"),
    "linear": ("rekd_jax.evaluation.config", "rekd_jax.evaluation.run", "evaluate"),
    "conv_probe": ("rekd_jax.evaluation.config", "rekd_jax.evaluation.run", "evaluate"),
    "knn": ("rekd_jax.evaluation.config", "rekd_jax.evaluation.run", "evaluate"),
    "semi_supervised": ("rekd_jax.evaluation.config", "rekd_jax.evaluation.run", "evaluate"),
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
    importlib.import_module(_MODES[mode][0]).validate(config)
  except ValueError as e:
    raise ConfigError(str(e)) from e


def run(config: ml_collections.ConfigDict, workdir: str):
  """Validates `config`, then runs what `config.mode` names in `workdir`; returns its result."""
  if not workdir:
    raise ConfigError("--workdir is empty: give a directory for checkpoints, logs and results.")
  from rekd_jax import run_record
  from rekd_jax.training import logging as logging_lib
  logging_lib.quiet_library_logs()
  validate(config)
  if config.mode == "quickstart":  # pre-training and evaluation write their own config.json
    run_record.write_config(workdir, config)
  _, module, function = _MODES[config.mode]
  result = getattr(importlib.import_module(module), function)(config, workdir)
  import jax
  if jax.process_index() == 0:
    summary = run_record.closing_summary(config, workdir, result)
    if summary:
      print(summary, flush=True)
  return result
