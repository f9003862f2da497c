"""`rekd-jax --help` (`python main.py --help`): the configs, their variants, overrides and
outputs, generated from the config files themselves (first docstring line = purpose; VARIANTS
table = variants, each described by its function's docstring), so the help cannot drift from
the configs."""

from __future__ import annotations

import textwrap

import ml_collections

from rekd_jax import config_lookup
from rekd_jax import variants as variants_lib

HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull")

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
Logging: the libraries' INFO lines (JAX, TFDS, Orbax) are hidden; --verbosity=1 shows them.

Flags:
  --config=NAME[:VARIANT,...]  a recipe name (above) or a config file (configs/NAME.py, any path)
  --workdir=DIR                outputs; rerunning the same command there resumes
  --xla_cache=DIR|off          persistent XLA compilation cache (default ~/.cache/rekd-jax/xla,
                               or $REKD_JAX_XLA_CACHE); a second run of a config compiles little
  --log_prefix                 absl's prefix (level, date, thread, file:line) on log lines
  --debug                      Python tracebacks for expected errors (otherwise one FATAL line)
  --helpfull                   every flag, absl's logging flags included
Exit status: 0; 2 with one line "FATAL: <ErrorType>: <what>, <fix>" for every expected failure;
130 after Ctrl-C (pre-training saves a checkpoint at the next step first; Ctrl-C again stops at
once)."""


def config_modules() -> list[tuple[str, object]]:
    """(file name, module) of every config that a recipe name finds, sorted by name."""
    return [
        (f"{name}.py", config_lookup.load_module(path))
        for name, path in config_lookup.config_files().items()
    ]


def _purpose(module) -> str:
    """The first sentence of the docstring's first paragraph."""
    paragraph = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


def _group(module) -> str:
    """'pre-training', 'evaluation' (a config that carries the block of its mode, as every
    evaluation protocol's config does: rekd_jax.evaluation.protocols) or 'other'."""
    try:
        config = module.get_config()
    except Exception:  # a config whose default needs an argument: listed with the others
        return "other"
    mode = str(config.get("mode", "?"))
    if mode == "pretrain":
        return "pre-training"
    return "evaluation" if isinstance(config.get(mode), ml_collections.ConfigDict) else "other"


def help_text(program: str = "python main.py") -> str:
    """The whole --help text; `program` is the command as the user starts it."""
    width = 100
    lines = [
        "rekd-jax: ReKD, MoCo v2 and SEED self-supervised pre-training and evaluation (JAX/Flax).",
        "",
        f"Usage: {program} --config=NAME[:VARIANT,...] --workdir=DIR [--config.FIELD=VALUE ...]",
        "  NAME: a recipe below (e.g. --config=alexnet:tiny,runlocal) or a config file "
        "(configs/alexnet.py)",
        "",
    ]
    modules = config_modules()
    groups: dict[str, list] = {"pre-training": [], "evaluation": [], "other": []}
    legends: dict[str, dict[str, str]] = {"pre-training": {}, "evaluation": {}, "other": {}}
    for file, module in modules:
        group = _group(module)
        table = getattr(module, "VARIANTS", {}) or {}
        groups[group].append((file, _purpose(module), list(table)))
        for name, doc in variants_lib.describe(table):
            legends[group].setdefault(name, doc)
    for group in ("other", "pre-training", "evaluation"):
        if not groups[group]:
            continue
        title = {
            "other": "Start here",
            "pre-training": "Pre-training configs",
            "evaluation": "Evaluation configs",
        }[group]
        lines.append(f"{title} (NAME, or the file configs/NAME.py):")
        for file, purpose, names in groups[group]:
            lines += textwrap.wrap(
                purpose, width, initial_indent=f"  {file:<22}", subsequent_indent=" " * 24
            )
            if names:
                lines += textwrap.wrap(
                    ", ".join(names),
                    width,
                    initial_indent=" " * 24 + "variants: ",
                    subsequent_indent=" " * 34,
                )
        if legends[group]:
            lines.append(f"  {group.capitalize()} variants:")
            indent = 4 + max(12, 1 + max(len(name) for name in legends[group]))
            for name, doc in legends[group].items():
                lines += textwrap.wrap(
                    doc,
                    width,
                    initial_indent=f"    {name:<{indent - 5}} ",
                    subsequent_indent=" " * indent,
                )
        lines.append("")
    lines += [
        _OVERRIDES,
        "",
        _OUTPUTS,
        "",
        "The docstring at the top of each configs/NAME.py gives its commands, hardware, "
        "time and expected result.",
    ]
    return "\n".join(lines) + "\n"


def wants_help(argv: list[str]) -> bool:
    return any(a in HELP_FLAGS for a in argv[1:])
