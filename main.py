"""Entry point: `python main.py --config=configs/NAME.py[:VARIANT] --workdir=DIR`.

Thin on purpose: it parses flags and hands (config, workdir) to `rekd_jax.app.run`, where the
config is validated (before anything compiles) and `config.mode` decides what runs.
"""
import sys

from absl import app as absl_app
from absl import flags
from ml_collections import config_flags

from rekd_jax import app, cli_help
from rekd_jax.core import errors

__doc__ = cli_help.main_doc(sys.argv, __doc__)  # --help: configs, variants, overrides, outputs

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file and variants, e.g. configs/quickstart.py or "
    "configs/alexnet.py:tiny,runlocal (see the list above).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output directory (created if needed; rerunning the same command there "
    "resumes).")
_DEBUG = flags.DEFINE_bool(
    "debug", False, "Show Python tracebacks for expected errors (otherwise: one FATAL line).")


def _parse_flags(argv):
  """absl flag parsing, with a one-line error for an override of a field the config lacks."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    hint = " ".join(str(e).encode().decode("unicode_escape").replace("'", "").split())
    sys.exit(f"FATAL: unknown config field in {' '.join(overrides)} ({hint}). "
             "Check the spelling against the config file (fields cannot be added from the "
             "command line).")
  except flags.Error as e:  # an ill-typed value, an unknown flag, a config file that fails
    if "--debug" in argv:
      raise
    sys.exit(f"FATAL: {' '.join(str(e).split())}. Fix the flag value (python main.py "
             "--helpfull lists the flags).")


def main(argv):
  if len(argv) > 1:
    raise absl_app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not _CONFIG.value or not _WORKDIR.value:
    missing = "--config" if not _CONFIG.value else "--workdir"
    sys.exit(f"FATAL: {missing} is missing, give --config=configs/NAME.py[:VARIANT] and "
             "--workdir=DIR (a directory for checkpoints, logs and results).")
  return errors.run_cli(lambda: app.run(_CONFIG.value, _WORKDIR.value), debug=_DEBUG.value)


if __name__ == "__main__":
  absl_app.run(main, flags_parser=_parse_flags)
