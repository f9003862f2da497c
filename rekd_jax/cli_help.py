"""`python main.py --help`: the configs, their variants, overrides and outputs, generated from
the config files themselves (first docstring line = purpose; VARIANTS table = variants, each
described by its function's docstring), so the help cannot drift from the configs."""
from __future__ import annotations

import glob
import importlib.util
import os
import textwrap

from rekd_jax import variants as variants_lib

HELP_FLAGS = ("--help", "-?", "--helpshort", "--helpfull")

_OVERRIDES = """\
Overrides: any field of the config, after --config, e.g.
  --config.global_batch_size=512 --config.data.data_dir=/data/tfds
  --config.optimizer.base_learning_rate=0.1 --config.linear.milestones='(60,80)'
A misspelt field or an ill-typed value fails at once, naming it; fields cannot be added.
Evaluation configs read an encoder: --config.checkpoint=PRETRAIN_WORKDIR/encoders/student.
Variants: after ':' and comma-separated; they apply in the order given, except runlocal, which
applies last. runlocal shrinks steps, batches and image sizes for a laptop CPU and keeps the
dataset; tiny selects the embedded toy data (rekd_shapes/tiny), so the smoke run of any recipe
is configs/NAME.py:tiny,runlocal."""

_OUTPUTS = """\
Outputs, all under --workdir (rerunning the same command resumes there):
  config.json               the resolved config of the run (every run)
  metrics.jsonl             every logged scalar (TensorBoard files too with TensorFlow)
  pre-training              checkpoints/ (Orbax), encoders/student (and encoders/teacher)
  evaluation                results_<mode>.json, ckpt_<mode>/, features/ (cached features)
  quick start               results.json and one sub-directory per stage
Logging: the libraries' INFO lines (JAX, TFDS, Orbax) are hidden; --verbosity=1 shows them."""


def config_dir() -> str:
    """The folder of the config files: the installed package rekd_jax.configs (pyproject.toml
    maps the checkout's configs/ to it), else configs/ beside rekd_jax/ in a checkout."""
    spec = importlib.util.find_spec("rekd_jax.configs")
    if spec is not None and spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_config_file(path: str):
    """The module of one config file, loaded from its path (as --config=PATH loads it)."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"rekd_jax_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_modules() -> list[tuple[str, object]]:
    """(file name, module) of every config file, sorted by name."""
    paths = sorted(glob.glob(os.path.join(glob.escape(config_dir()), "*.py")))
    return [(os.path.basename(p), load_config_file(p)) for p in paths
            if not os.path.basename(p).startswith("_")]


def _purpose(module) -> str:
    """The first sentence of the docstring's first paragraph."""
    paragraph = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[:end + 1]


def _mode(module) -> str:
    try:
        return str(module.get_config().get("mode", "?"))
    except Exception:  # a config whose default needs an argument: listed without a mode
        return "?"


def help_text(program: str = "main.py") -> str:
    """The whole --help text (before absl's flag list)."""
    width = 100
    lines = ["rekd-jax: ReKD, MoCo v2 and SEED self-supervised pre-training and evaluation "
             "(JAX/Flax).", "",
             f"Usage: python {program} --config=configs/NAME.py[:VARIANT,...] --workdir=DIR "
             "[--config.FIELD=VALUE ...]", ""]
    modules = config_modules()
    groups: dict[str, list] = {"pre-training": [], "evaluation": [], "other": []}
    legends: dict[str, dict[str, str]] = {"pre-training": {}, "evaluation": {}, "other": {}}
    for file, module in modules:
        mode = _mode(module)
        group = ("pre-training" if mode == "pretrain" else
                 "evaluation" if mode in ("linear", "conv_probe", "knn", "semi_supervised")
                 else "other")
        table = getattr(module, "VARIANTS", {}) or {}
        groups[group].append((file, _purpose(module), list(table)))
        for name, doc in variants_lib.describe(table):
            legends[group].setdefault(name, doc)
    for group in ("other", "pre-training", "evaluation"):
        if not groups[group]:
            continue
        title = {"other": "Start here", "pre-training": "Pre-training configs",
                 "evaluation": "Evaluation configs"}[group]
        lines.append(f"{title} (configs/NAME.py):")
        for file, purpose, names in groups[group]:
            lines += textwrap.wrap(purpose, width, initial_indent=f"  {file:<22}",
                                   subsequent_indent=" " * 24)
            if names:
                lines += textwrap.wrap(", ".join(names), width, initial_indent=" " * 24
                                       + "variants: ", subsequent_indent=" " * 34)
        if legends[group]:
            lines.append(f"  {group.capitalize()} variants:")
            for name, doc in legends[group].items():
                lines += textwrap.wrap(doc, width, initial_indent=f"    {name:<12}",
                                       subsequent_indent=" " * 16)
        lines.append("")
    lines += [_OVERRIDES, "", _OUTPUTS, "",
              "The docstring at the top of each configs/NAME.py gives its commands, hardware, "
              "time and expected result."]
    return "\n".join(lines) + "\n"


def wants_help(argv: list[str]) -> bool:
    return any(a in HELP_FLAGS for a in argv[1:])


def main_doc(argv: list[str], default: str) -> str:
    """main.py's __doc__: the generated help when --help is asked (absl prints __doc__)."""
    if not wants_help(argv):
        return default
    # absl formats __doc__ with '%': escape any literal percent sign.
    return help_text(os.path.basename(argv[0]) or "main.py").replace("%", "%%")
