"""Validates a config and dispatches on `config.mode`; what the command line (rekd_jax.cli)
and Python callers run.

Validation runs before any dataset is opened or any function is compiled, so a bad field fails
in seconds with a message that names it. Called from Python (a script, a notebook), `run`
shows the same progress lines as the command line unless the caller has set up logging.
"""

import jax
import ml_collections
from absl import logging as absl_logging

from rekd_jax import methods, run_summary
from rekd_jax.core import logging as logging_lib
from rekd_jax.core import run_record
from rekd_jax.evaluation import config as eval_config
from rekd_jax.evaluation import protocols
from rekd_jax.evaluation import run as eval_run
from rekd_jax.experiments import quickstart, quickstart_grid
from rekd_jax.training import config as train_config
from rekd_jax.training import pretrain

# mode -> (validate(config), run(config, workdir)); every evaluation protocol besides these
_TRAINING_MODES = {
    "pretrain": (train_config.validate, pretrain.train_and_evaluate),
    "quickstart": (train_config.validate, quickstart.run),
    "quickstart_grid": (train_config.validate, quickstart_grid.run),
}


class ConfigError(ValueError):
    """The config is invalid; the message names the field and the fix."""


def modes() -> dict:
    """mode -> (validate(config), run(config, workdir)): pre-training, the quick starts, and
    each protocol of rekd_jax.evaluation.protocols (read when called, so a protocol added to
    the registry is a mode at once)."""
    evaluation = (eval_config.validate, eval_run.evaluate)
    return {**_TRAINING_MODES, **{name: evaluation for name in protocols.PROTOCOLS}}


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError (a ValueError) naming the bad field and the fix."""
    mode, known = config.get("mode"), modes()
    if mode not in known:
        raise ConfigError(
            f"config.mode={mode!r} is not a known mode; use one of {sorted(known)} "
            "(set it in the config file or with --config.mode=...)."
        )
    try:
        known[mode][0](config)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def describe(config: ml_collections.ConfigDict, workdir: str) -> str:
    """One line saying what a run of `config` does, logged before anything is built."""
    mode = config.get("mode")
    if mode == "pretrain":
        teacher = config.teacher.arch if methods.teacher_plan(config).mode else ""
        length = (
            f"{config.num_train_steps} steps"
            if config.num_train_steps
            else f"{config.num_epochs} epochs"
        )
        return (
            f"pre-training {config.method} ({config.student.arch} student"
            f"{', ' + teacher + ' teacher' if teacher else ''}) on {config.data.dataset}, "
            f"{length} at batch {config.global_batch_size}, in {workdir}"
        )
    if mode == "quickstart":
        return (
            f"quick start: pre-training {', '.join(quickstart.stage_names(config))} and "
            "evaluating each with "
            f"{' and '.join(config.eval_modes)}, in {workdir}"
        )
    if mode == "quickstart_grid":
        students = [name for name in quickstart.stage_names(config) if name != "teacher"]
        return (
            f"quick-start lr grid: pre-training the teacher, then {', '.join(students)} at lr "
            f"{', '.join(f'{lr:g}' for lr in config.lr_grid)}, each scored on a validation "
            f"split, in {workdir}"
        )
    return f"{mode} evaluation of {config.get('checkpoint')} on {config.data.dataset}, in {workdir}"


def run(config: ml_collections.ConfigDict, workdir: str):
    """Validates `config`, then runs what `config.mode` names in `workdir`; returns its result."""
    if not workdir:
        raise ConfigError("--workdir is empty: give a directory for checkpoints, logs and results.")
    logging_lib.setup_console()
    validate(config)
    absl_logging.info("%s", describe(config, workdir))
    if config.mode == "quickstart":  # pre-training and evaluation write their own config.json
        run_record.write_config(workdir, config)
    result = modes()[config.mode][1](config, workdir)
    if jax.process_index() == 0:
        summary = run_summary.closing_summary(config, workdir, result)
        if summary:
            print(summary, flush=True)
    return result
