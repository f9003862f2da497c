"""The lines every command ends with: what was written, the key numbers, and the next command
to run, spelt as the user runs commands where they are (`python main.py` in a clone,
`rekd-jax` after pip install: rekd_jax.core.invocation).

`closing_summary(config, workdir, result)` picks the summary of config.mode: pre-training (then
the probe that suits the student: the conv probe for AlexNet, else the linear probe), any
evaluation protocol of rekd_jax.evaluation.protocols (then another protocol), the quick start
(then the CIFAR-10 study). The 'Next:' lines point the evaluation configs at the run's dataset
through the dataset variant of the configs (DATASET_VARIANT).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from rekd_jax.core import fileio, invocation, run_record
from rekd_jax.evaluation import protocols

# TFDS dataset -> the variant of the evaluation configs that selects it.
DATASET_VARIANT = {
    "imagenet2012": "imagenet",
    "cifar10": "cifar10",
    "rekd_shapes": "shapes",
    "rekd_shapes/tiny": "tiny",
}
# The evaluation configs a finished evaluation suggests next, in order of preference: the
# first one that is not of the protocol just run.
NEXT_EVALUATIONS = ("knn_eval", "linear_eval", "semi_supervised")
# The architecture whose student is evaluated with the conv probe rather than the linear probe.
CONV_PROBE_ARCH = "alexnet"


def _dataset_args(config) -> tuple[str, str]:
    """(variant, extra flags) that point an evaluation config at this run's dataset."""
    data = config.data
    variant = DATASET_VARIANT.get(data.dataset.split(":")[0], "")
    extra = f" --config.data.data_dir={data.data_dir}" if data.get("data_dir") else ""
    if not variant:
        extra += f" --config.data.dataset={data.dataset}"
    if variant == "tiny":
        variant = "tiny,runlocal"
    return variant, extra


def _pretrain_summary(config, workdir: str, result: Mapping) -> list[str]:
    metrics = result.get("metrics") or {}
    numbers = [f"step {result.get('step')}"]
    if "train/loss" in metrics:
        numbers.append(f"loss {metrics['train/loss']:.4g}")
    if result.get("knn"):
        numbers.append(f"kNN top-1 {100 * result['knn']['knn/top1']:.1f}%")  # a fraction
    if result.get("train_seconds") is not None:
        numbers.append(f"training {result['train_seconds']:.0f} s")
    encoders = result.get("encoders") or {}
    teacher = os.path.join(workdir, run_record.TEACHER_FILE)
    lines = [
        f"Pre-training done ({config.method}, {config.student.arch}): " + ", ".join(numbers) + ".",
        f"Wrote in {workdir}: "
        + ", ".join(
            [os.path.relpath(p, workdir) for p in encoders.values()]
            + ["checkpoints/", "metrics.jsonl", run_record.CONFIG_FILE, run_record.TRAIN_TIME_FILE]
            + ([run_record.TEACHER_FILE] if fileio.exists(teacher) else [])
        )
        + ".",
    ]
    variant, extra = _dataset_args(config)
    protocol = "conv_probe" if config.student.arch == CONV_PROBE_ARCH else "linear_eval"
    encoder = encoders.get("student", os.path.join(workdir, "encoders", "student"))
    lines.append(
        "Next, evaluate the student: "
        + invocation.command(
            protocol,
            variant,
            f"--config.checkpoint={encoder}",
            f"--workdir={os.path.join(workdir, 'eval_' + protocol.split('_')[0])}",
        )
        + extra
    )
    return lines


def _eval_summary(config, workdir: str, result: Mapping) -> list[str]:
    lines = [
        f"{config.mode} evaluation done: top-1 {result['top1']:.2f}%, top-5 "
        f"{result['top5']:.2f}% on {result.get('count')} {config.data.dataset}/"
        f"{config.data.eval_split} images ({result.get('seconds', 0):.0f} s).",
        f"Wrote in {workdir}: results_{config.mode}.json, metrics.jsonl, {run_record.CONFIG_FILE}.",
    ]
    others = [m for m in NEXT_EVALUATIONS if not m.startswith(config.mode.split("_")[0])]
    variant, extra = _dataset_args(config)
    other = others[0]
    parent = os.path.dirname(fileio.absolute(workdir))
    lines.append(
        "Next, another protocol: "
        + invocation.command(
            other,
            variant,
            f"--config.checkpoint={config.checkpoint}",
            f"--workdir={os.path.join(parent, 'eval_' + other.split('_')[0])}",
        )
        + extra
    )
    return lines


def _quickstart_summary(config, workdir: str, result: Mapping) -> list[str]:
    return [
        f"Quick start done in {result.get('seconds', 0):.0f} s: the table above is "
        f"{os.path.join(workdir, 'results.json')}; each stage's workdir is under {workdir}.",
        "Next, the same comparison on real data: python -m rekd_jax.experiments.cifar10 "
        "--scale=cpu --workdir=/tmp/c10_study --data_dir=DATA_DIR --src=CIFAR10_JPEG_DIR "
        "(docs/results.md), or a recipe as a laptop smoke run: "
        + invocation.command(
            "cifar10_student", "alexnet,online,tiny,runlocal", "--workdir=/tmp/rekd_smoke"
        )
        + f" ({invocation.entry_command()} --help lists every config).",
    ]


def closing_summary(config, workdir: str, result: Any) -> str:
    """The lines every command ends with (empty when the mode has none)."""
    mode = config.get("mode")
    if not isinstance(result, Mapping):
        return ""
    if mode == "pretrain":
        lines = _pretrain_summary(config, workdir, result)
    elif mode in protocols.PROTOCOLS:
        lines = _eval_summary(config, workdir, result)
    elif mode == "quickstart":
        lines = _quickstart_summary(config, workdir, result)
    else:
        return ""
    return "\n".join(lines)
