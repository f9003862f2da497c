"""How a command of this program is started where the user is.

`entry_command()` is how a command line starts: `python main.py` in a clone (with the path to
main.py when the working directory is elsewhere), else the console command `rekd-jax` that
`pip install` puts on the PATH, else `python -m rekd_jax.cli`. `config_argument(name,
variant)` is the `--config` value that finds the config file `name` from the working directory,
and `command(name, variant, *flags)` the whole line. The "Next:" lines of every command are
built from these, so they show the command as the user runs it.
"""

from __future__ import annotations

import os
import shutil
import sys

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # rekd_jax/
CONSOLE_COMMAND = "rekd-jax"


def clone_root() -> str | None:
    """The clone the package is imported from (the folder holding rekd_jax/, main.py and
    configs/), or None for an installed package."""
    root = os.path.dirname(PACKAGE_DIR)
    has = lambda name: os.path.exists(os.path.join(root, name))
    return root if has("main.py") and has("configs") else None


def entry_command() -> str:
    """How a config is run where the user is (see the module docstring)."""
    root = clone_root()
    if root is not None:
        main = os.path.join(root, "main.py")
        relative = os.path.relpath(main)
        return f"python {relative if not relative.startswith('..') else main}"
    if shutil.which(CONSOLE_COMMAND):
        return CONSOLE_COMMAND
    return f"{os.path.basename(sys.executable) or 'python'} -m rekd_jax.cli"


def config_argument(name: str, variant: str = "") -> str:
    """The --config value of config `name`: configs/NAME.py when the working directory holds
    that file (a clone), else the name; with ':variant' when one is given."""
    path = os.path.join("configs", f"{name}.py")
    base = path if os.path.isfile(path) else name
    return f"{base}:{variant}" if variant else base


def command(name: str, variant: str, *flags: str) -> str:
    """The command line that runs config `name` with `variant` and `flags` where the user is."""
    return " ".join([entry_command(), f"--config={config_argument(name, variant)}", *flags])
