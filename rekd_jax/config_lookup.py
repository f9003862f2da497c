"""Finding and loading configs by file or recipe name, for the command line.

`--config` takes a file (`configs/alexnet.py`, `/my/config.py`) or a recipe name (`alexnet`),
either followed by `:VARIANT,...`. A name, or a `configs/NAME.py` path that does not exist
where the command runs, is looked up in

  1. the `configs/` folder of the clone the package is imported from (beside `rekd_jax/`);
  2. the configs installed with the package (`rekd_jax/configs/`: pyproject.toml installs the
     clone's configs/ as the package rekd_jax.configs), when that folder exists.

Config files are loaded by their path (an installed one as `rekd_jax.configs.NAME`); nothing
here imports a top-level `configs` package.

`load_config(spec)` returns the config with its variants applied; a file that does not exist,
an unknown variant or a config that fails to build raises ConfigNotFoundError / ConfigError
with one line that lists what exists. `unknown_field(config, path)` finds the misspelt part of
a `--config.PATH=VALUE` override. Each suggests the closest name (`did_you_mean`).

This is the command-line layer: the library below never looks a config up by name. How the
command that runs a config is spelt where the user is lives in rekd_jax.core.invocation.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import traceback

import ml_collections

from rekd_jax.core import invocation

INSTALLED_CONFIGS = os.path.join(invocation.PACKAGE_DIR, "configs")
INSTALLED_PACKAGE = "rekd_jax.configs"
# Fields renamed since configs were first written: old name -> new name (an override of the
# old name is answered with the new one).
RENAMED_FIELDS = {"seed": "rng_seed"}


class ConfigNotFoundError(ValueError):
    """No config file of that path or name (the message lists the configs that exist)."""


class ConfigError(ValueError):
    """A config file that cannot be loaded or built, or an unknown variant."""


def config_folders() -> list[str]:
    """The folders where recipe names are looked up, in order (see the module docstring)."""
    root = invocation.clone_root()
    folders = [os.path.join(root, "configs")] if root else []
    return folders + ([INSTALLED_CONFIGS] if os.path.isdir(INSTALLED_CONFIGS) else [])


def config_files() -> dict[str, str]:
    """Recipe name -> file of every config in config_folders() (the first folder wins)."""
    found: dict[str, str] = {}
    for folder in config_folders():
        for entry in sorted(os.listdir(folder)):
            name, ext = os.path.splitext(entry)
            if ext == ".py" and not name.startswith("_"):
                found.setdefault(name, os.path.join(folder, entry))
    return dict(sorted(found.items()))


def split_spec(spec: str) -> tuple[str, str | None]:
    """'configs/alexnet.py:tiny,runlocal' -> ('configs/alexnet.py', 'tiny,runlocal')."""
    path, colon, variant = spec.partition(":")
    return path, (variant if colon else None)


def _recipe_name(path: str) -> str | None:
    """The recipe name a --config path stands for: 'alexnet' for 'alexnet', 'alexnet.py' or
    '<...>/configs/alexnet.py'; None for a path to a file elsewhere."""
    folder, file = os.path.split(os.path.normpath(path))
    name = file[:-3] if file.endswith(".py") else file
    if folder and os.path.basename(folder) != "configs":
        return None
    return name or None


def did_you_mean(name: str, known) -> str:
    """The hint "did you mean 'X'? " naming the entry of `known` closest to a misspelt `name`
    ('' when none is close)."""
    close = difflib.get_close_matches(name or "", list(known), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def find_config(spec: str) -> tuple[str, str | None]:
    """(absolute file, variant or None) of a --config value; ConfigNotFoundError listing the
    configs when there is no such file or recipe."""
    path, variant = split_spec(spec)
    if os.path.isfile(path):
        return os.path.abspath(path), variant
    name = _recipe_name(path)
    known = config_files()
    if name in known:
        return known[name], variant
    hint = did_you_mean(name, known)
    where = " and ".join(config_folders()) or "no config folder (neither a clone nor packaged)"
    missing = (
        f"no config file {path!r} here and no recipe of that name in {where}"
        if name
        else f"no config file {path!r}"
    )
    raise ConfigNotFoundError(
        f"--config={spec}: {missing}; {hint}the recipes are {', '.join(known) or 'none'} (give "
        "a file, e.g. --config=configs/alexnet.py:tiny,runlocal, or a name, e.g. "
        "--config=alexnet:tiny,runlocal)"
    )


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _import_file(path: str):
    """The module of a config file: an installed config as `rekd_jax.configs.NAME`, any other
    file (a clone's configs/NAME.py, the user's own) by its path, as --config=PATH loads it
    (configs build their fields with rekd_jax.recipes, never by importing a sibling config)."""
    folder = os.path.dirname(path)
    name = os.path.splitext(os.path.basename(path))[0]
    if folder == INSTALLED_CONFIGS and os.path.exists(os.path.join(folder, "__init__.py")):
        return importlib.import_module(f"{INSTALLED_PACKAGE}.{name}")
    spec = importlib.util.spec_from_file_location(f"rekd_jax_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_module(path: str):
    """The module of a config file; ConfigError naming the file and the first line of the
    error when it does not import."""
    try:
        return _import_file(path)
    except Exception as error:  # any failure of a user's file: one line, --debug for more
        where = traceback.extract_tb(error.__traceback__)[-1]
        raise ConfigError(
            f"{path} cannot be loaded ({type(error).__name__} at "
            f"{os.path.basename(where.filename)}:{where.lineno}: "
            f"{_first_line(error)}); fix the file (--debug shows the traceback)"
        ) from error


def load_config(spec: str) -> ml_collections.ConfigDict:
    """The config of a --config value (file or name, with variants); see the module docstring.
    An unknown variant is reported with the config's VARIANTS before get_config runs."""
    path, variant = find_config(spec)
    module = load_module(path)
    if not hasattr(module, "get_config"):
        raise ConfigError(
            f"{path} has no get_config(); a config file defines "
            "get_config(arg=None) returning an ml_collections.ConfigDict"
        )
    known = getattr(module, "VARIANTS", None)
    names = [n.strip() for n in (variant or "").split(",") if n.strip()]
    unknown = [n for n in names if known is not None and n not in known]
    if unknown:
        hint = did_you_mean(unknown[0], known)
        raise ConfigError(
            f"--config={spec}: unknown variant {unknown[0]!r}; {hint}the "
            f"variants of {os.path.basename(path)} are {', '.join(known)} "
            "(comma-separated after ':')"
        )
    try:
        config = module.get_config(variant) if variant is not None else module.get_config()
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"--config={spec}: {_first_line(error)}") from error
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"{path}: get_config() returned {type(config).__name__}, not an "
            "ml_collections.ConfigDict"
        )
    return config


def unknown_field(config: ml_collections.ConfigDict, path: str) -> str | None:
    """What is wrong with the override `--config.PATH=VALUE` when `config` lacks a field on
    PATH ('optimizer.base_lr'): the first missing field, the closest existing one and every
    field beside it; None when each ConfigDict along PATH has the field it names."""
    node, parents = config, ["config"]
    for name in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict):
            return None  # a plain value or dict: ml_collections reports it
        fields = list(node.keys())
        if name not in fields:
            where = ".".join(parents)
            renamed = RENAMED_FIELDS.get(name)
            if renamed in fields:
                return f"{where}.{name} is now {where}.{renamed}; give --{where}.{renamed}=VALUE"
            return (
                f"unknown config field {name!r}; {did_you_mean(name, fields)}the fields of "
                f"{where} are {', '.join(fields)}"
            )
        node, parents = node[name], parents + [name]
    return None
