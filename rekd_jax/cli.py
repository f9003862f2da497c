"""The command line: `rekd-jax --config=NAME[:VARIANT,...] --workdir=DIR [--config.FIELD=VALUE]`.

`pip install` puts the console command `rekd-jax` on the PATH; in a clone, `python main.py` runs
the same `main()` with the same flags. `--config` is a config file or a recipe name
(rekd_jax.config_lookup); `rekd-jax --help` lists them with their variants.

What a command-line run sets up before it hands (config, workdir) to `rekd_jax.app.run`:
  * the console: "HH:MM:SS message" lines (`--log_prefix` for absl's prefix), the libraries'
    INFO lines hidden (`--verbosity=1` shows them);
  * a persistent XLA compilation cache, so a second run of a config skips most compilation:
    `--xla_cache=DIR`, or $REKD_JAX_XLA_CACHE, default ~/.cache/rekd-jax/xla (under
    $XDG_CACHE_HOME when set); `--xla_cache=off` turns it off; a cache configured through
    JAX (JAX_COMPILATION_CACHE_DIR) is used as it is;
  * XLA's "Very slow compile? If you want to file a bug ..." banner, printed from C++ when a
    compilation takes over two minutes, is dropped (the progress lines already say what is
    being compiled and for how long): the process's native stderr goes through a small filter
    process that removes that banner and passes everything else on;
  * Ctrl-C: one line and exit status 130 (rekd_jax.core.errors; pre-training first saves a
    checkpoint at the next step boundary).
Exit status: 0, 2 with one `FATAL: <ErrorType>: <what>, <fix>` line for every expected failure
(a bad flag, config or variant included), 130 after Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from rekd_jax import cli_help, config_lookup
from rekd_jax.core import errors, invocation
from rekd_jax.core import logging as logging_lib

XLA_CACHE_ENV = "REKD_JAX_XLA_CACHE"
XLA_CACHE_MAX_BYTES = 2 * 1024**3  # least recently used entries are evicted above this


class FlagError(ValueError):
    """A command-line flag is missing, unknown or ill-typed (the message names it)."""


def program_name(argv0: str) -> str:
    """How the user started this command: 'rekd-jax', 'python main.py' or
    'python -m rekd_jax.cli'."""
    base = os.path.basename(argv0)
    if base == "cli.py":
        return "python -m rekd_jax.cli"
    if base.endswith(".py"):
        return f"python {argv0}"
    return base or invocation.CONSOLE_COMMAND


def default_xla_cache() -> str:
    """$REKD_JAX_XLA_CACHE, else rekd-jax/xla in the user's cache folder."""
    if os.environ.get(XLA_CACHE_ENV):
        return os.environ[XLA_CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.join(os.path.expanduser(base), "rekd-jax", "xla")


def _define_flags(values: flags.FlagValues, config, argv: list[str]) -> None:
    config_flags.DEFINE_config_dict(
        "config",
        config,
        "Config file or recipe name, with variants after ':', e.g. "
        "alexnet:tiny,runlocal or configs/alexnet.py:tiny,runlocal (see the list above); "
        "--config.FIELD=VALUE overrides a field.",
        flag_values=values,
        lock_config=True,
        sys_argv=argv,
    )
    flags.DEFINE_string(
        "workdir",
        None,
        "Output directory (created if needed; rerunning the same command there resumes).",
        flag_values=values,
    )
    flags.DEFINE_bool(
        "debug",
        False,
        "Show Python tracebacks for expected errors (otherwise: one FATAL line).",
        flag_values=values,
    )
    flags.DEFINE_string(
        "xla_cache",
        default_xla_cache(),
        "Folder of the persistent XLA "
        f"compilation cache, or 'off' (default: ${XLA_CACHE_ENV}, else the "
        "user's cache folder).",
        flag_values=values,
    )
    flags.DEFINE_bool(
        "log_prefix",
        False,
        "Start log lines with absl's prefix (level, date, "
        "thread, file:line) instead of the time alone.",
        flag_values=values,
    )


def _config_value(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the --config value, argv without it); a missing value is None."""
    value, rest, args = None, [], list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-config"):
            if i + 1 == len(args):
                raise FlagError(
                    "--config needs a value: give --config=NAME[:VARIANT] (a "
                    "recipe name or a config file)"
                )
            value, i = args[i + 1], i + 2
            continue
        if arg.startswith(("--config=", "-config=")):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return value, rest


def parse(argv: Sequence[str], values: flags.FlagValues) -> None:
    """Loads --config, defines the flags in `values` and parses `argv` into them (absl's own
    flags, such as --verbosity, into absl's FLAGS). FlagError / ConfigError on bad input."""
    spec, argv = _config_value(argv)
    if not spec:
        raise FlagError(
            "--config is missing: give --config=NAME[:VARIANT] (a recipe name such "
            "as alexnet:tiny,runlocal, or a config file) and --workdir=DIR (a "
            "directory for checkpoints, logs and results); --help lists the configs"
        )
    config = config_lookup.load_config(spec)
    try:
        _define_flags(values, config, argv)
    except (AttributeError, KeyError) as error:  # an override of a field the config lacks
        for arg in argv:
            if arg.startswith("--config."):
                path = arg[len("--config.") :].split("=", 1)[0]
                problem = config_lookup.unknown_field(config, path)
                if problem:
                    raise FlagError(
                        f"{arg}: {problem} (fields cannot be added from the command line)"
                    ) from None
        overrides = " ".join(a for a in argv if a.startswith("--config."))
        hint = " ".join(str(error).encode().decode("unicode_escape").replace("'", "").split())
        raise FlagError(
            f"unknown config field in {overrides} ({hint}); check the spelling "
            "against the config file (fields cannot be added from the command line)"
        ) from None
    try:
        rest = values(argv, known_only=True)
        rest = flags.FLAGS(rest)
    except flags.Error as error:
        raise FlagError(
            f"{' '.join(str(error).split())}; fix the flag (--helpfull lists every flag)"
        ) from None
    if len(rest) > 1:
        raise FlagError(
            f"unexpected arguments {' '.join(rest[1:])}: every argument is a flag "
            "(--config=..., --workdir=..., --config.FIELD=VALUE)"
        )
    if not values.workdir:
        raise FlagError(
            "--workdir is missing: give --workdir=DIR, a directory for checkpoints, "
            "logs and results (rerunning the same command there resumes)"
        )


def use_xla_cache(folder: str) -> str | None:
    """Turns on JAX's persistent compilation cache in `folder` ('off': turns it off) unless
    JAX already has one configured; returns the folder in use (None: no cache). A folder that
    cannot be created is reported once and the run goes on without the cache."""
    jax = sys.modules.get("jax")  # configured through the environment until JAX is imported
    configured = (
        jax.config.jax_compilation_cache_dir
        if jax is not None
        else os.environ.get("JAX_COMPILATION_CACHE_DIR")
    )
    if folder == "off":
        os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
        if jax is not None:
            jax.config.update("jax_enable_compilation_cache", False)
        return None
    if configured:
        return configured
    folder = os.path.abspath(os.path.expanduser(folder))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        absl_logging.warning(
            "XLA compilation cache off: %s (%s); choose another folder with --xla_cache=DIR",
            folder,
            error.strerror or error,
        )
        return None
    settings = {
        "jax_compilation_cache_dir": folder,
        "jax_persistent_cache_min_compile_time_secs": 0.5,
        "jax_compilation_cache_max_size": XLA_CACHE_MAX_BYTES,
    }
    for name, value in settings.items():
        if jax is not None:
            jax.config.update(name, value)
        else:
            os.environ[name.upper()] = str(value)
    return folder


# The filter of native stderr: passes every line on, except XLA's slow-compilation banner (a
# log line from slow_operation_alarm.cc followed by the message between two rows of stars).
_BANNER_FILTER = r"""
import os, signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
held, stars = [], 0
with os.fdopen(0, "rb", buffering=0) as source:
    for line in iter(source.readline, b""):
        if not held and b"slow_operation_alarm" not in line:
            os.write(1, line)
            continue
        held.append(line)
        stars += line.startswith(b"*****")
        if stars == 2 and any(b"Very slow compile" in h for h in held):
            held, stars = [], 0
        elif stars == 2 or len(held) > 8:
            os.write(1, b"".join(held))
            held, stars = [], 0
if held:
    os.write(1, b"".join(held))
"""


def hide_slow_compile_banner() -> None:
    """Routes native stderr (file descriptor 2: XLA's C++ logs) through _BANNER_FILTER, which
    drops XLA's slow-compilation banner; Python's sys.stderr keeps writing to the original
    stderr. The filter is its own process (it outlives a crash of this one, so a crash report
    still gets through) in a process group of its own (a Ctrl-C in the terminal does not reach
    it), and it ends when every writer of the pipe has ended."""
    try:
        original = os.dup(2)
        python_stderr = os.fdopen(
            os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace"
        )
        read_end, write_end = os.pipe()
        subprocess.Popen(
            [sys.executable, "-S", "-I", "-c", _BANNER_FILTER],
            stdin=read_end,
            stdout=original,
            stderr=original,
            process_group=0,  # its own process group: a Ctrl-C in the terminal skips it
            close_fds=True,
        )
    except OSError as error:  # no pipe or process to spare: the banner stays
        absl_logging.warning("XLA's slow-compilation banner cannot be hidden: %s", error)
        return
    os.close(read_end)
    os.close(original)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = python_stderr
    handler = absl_logging.get_absl_handler().python_handler
    handler.stream = python_stderr


def run(argv: Sequence[str]) -> int:
    """Runs one command line (argv[0] is the program); returns the exit status."""
    argv = list(argv)
    program = program_name(argv[0])
    if cli_help.wants_help(argv):
        print(cli_help.help_text(program), end="")
        if "--helpfull" in argv:
            print(flags.FLAGS.get_help())
        return 0
    values = flags.FlagValues()

    def command() -> None:
        parse(argv, values)
        logging_lib.setup_console(prefix=values.log_prefix, command_line=True)
        hide_slow_compile_banner()
        use_xla_cache(values.xla_cache)
        # Not at the top: app imports JAX and every mode (seconds), which --help and a bad flag
        # do without, and an import here is covered by run_cli's Ctrl-C handling.
        from rekd_jax import app

        app.run(values.config, values.workdir)

    debug = any(arg.lower() in ("--debug", "--debug=true", "--debug=1") for arg in argv[1:])
    return errors.run_cli(command, debug=debug)


def main(argv: Sequence[str] | None = None) -> None:
    """The console command `rekd-jax` and `python main.py`: runs sys.argv and exits."""
    with errors.signals_stop_at_once():  # from the first moment, not only once flags are read
        status = run(sys.argv if argv is None else argv)
    sys.exit(status)


if __name__ == "__main__":
    main()
