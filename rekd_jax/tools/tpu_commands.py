"""The gcloud commands of each launcher subcommand, built from a Target and the parsed flags;
every user value that goes into a command run on the workers is shell-quoted (shlex)."""

from __future__ import annotations

import os
import shlex
import sys

from rekd_jax.tools.tpu_target import CloudTpuError, Target

STATE_FORMAT = "value(state.state)"
LOG_DIR = "~/rekd-jax-logs"
CHECKOUT = "~/rekd-jax"


def create_commands(t: Target, args) -> list[list[str]]:
    cmd = [
        "gcloud",
        "compute",
        "tpus",
        "queued-resources",
        "create",
        t.name,
        f"--node-id={t.name}",
        *t.where(),
        f"--accelerator-type={t.accelerator}",
        f"--runtime-version={args.runtime_version or t.generation.runtime_version}",
    ]
    if args.spot:
        cmd.append("--spot")
    if args.data_disk:
        cmd.append(f"--data-disk={args.data_disk}")
    return [cmd]


def state_command(t: Target) -> list[str]:
    return [
        "gcloud",
        "compute",
        "tpus",
        "queued-resources",
        "describe",
        t.name,
        *t.where(),
        f"--format={STATE_FORMAT}",
    ]


def ssh(t: Target, command: str, worker: str = "all") -> list[str]:
    return [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "ssh",
        t.name,
        *t.where(),
        f"--worker={worker}",
        f"--command={command}",
    ]


def install_commands(t: Target, args) -> list[list[str]]:
    if not args.repo:
        raise CloudTpuError(
            "--repo missing: give the git URL of this project (the workers clone "
            "it), e.g. --repo=https://github.com/OWNER/rekd-jax.git"
        )
    repo, ref = shlex.quote(args.repo), shlex.quote(args.ref)
    script = (
        f"set -e; if [ -d {CHECKOUT}/.git ]; then git -C {CHECKOUT} fetch --depth=1 origin "
        f"{ref} && git -C {CHECKOUT} checkout --force FETCH_HEAD; else git clone --depth=1 "
        f"--branch={ref} {repo} {CHECKOUT}; fi; python3 -m pip install --upgrade pip; "
        'python3 -m pip install "$HOME/rekd-jax[tpu]"; '
        "python3 -c 'import jax; print(jax.process_index(), jax.local_device_count(), "
        "jax.device_count())'"
    )
    return [ssh(t, script)]


def is_gs(path: str) -> bool:
    return path.startswith("gs://")


def _worker_path(path: str) -> str:
    """A worker-side path for a shell command ('~/x' keeps its home expansion)."""
    path = path.rstrip("/")
    return '"$HOME"/' + shlex.quote(path[2:]) if path.startswith("~/") else shlex.quote(path)


def data_commands(t: Target, args) -> list[list[str]]:
    if not args.dataset:
        raise CloudTpuError(
            "--dataset missing: give the TFDS name of the prepared dataset (the "
            "--name given to rekd_jax.data.prepare), e.g. --dataset=imagenet2012"
        )
    if not args.data_dir:
        raise CloudTpuError(
            "--data_dir missing: give where the workers read the dataset, a gs:// "
            "folder (e.g. gs://BUCKET/tensorflow_datasets) or a folder on every "
            "worker (with --stage=gs://BUCKET/staging)"
        )
    local = os.path.expanduser(args.local_data_dir)
    commands = []
    if args.src:
        commands.append(
            [
                sys.executable,
                "-m",
                "rekd_jax.data.prepare",
                f"--src={args.src}",
                f"--name={args.dataset}",
                f"--data_dir={local}",
            ]
        )
    source = f"{local.rstrip('/')}/{args.dataset}"
    if is_gs(args.data_dir):
        commands.append(
            ["gcloud", "storage", "cp", "--recursive", source, f"{args.data_dir.rstrip('/')}/"]
        )
        return commands
    if not is_gs(args.stage or ""):
        raise CloudTpuError(
            f"--data_dir={args.data_dir} is a folder on the workers: give "
            "--stage=gs://BUCKET/FOLDER, through which the dataset is copied to "
            "every worker (or use a gs:// --data_dir)"
        )
    stage = args.stage.rstrip("/")
    commands.append(["gcloud", "storage", "cp", "--recursive", source, f"{stage}/"])
    dest = _worker_path(args.data_dir)
    commands.append(
        ssh(
            t,
            f"set -e; mkdir -p {dest}; gcloud storage cp --recursive "
            f"{shlex.quote(stage + '/' + args.dataset)} {dest}/",
        )
    )
    return commands


def main_command(t: Target, args) -> str:
    """The main.py command line every worker runs."""
    if not args.config:
        raise CloudTpuError(
            "--config missing: give a config as for main.py, e.g. --config=configs/alexnet.py"
        )
    if not args.workdir:
        raise CloudTpuError(
            "--workdir missing: give a gs:// folder for checkpoints, metrics and "
            "encoders, e.g. --workdir=gs://BUCKET/runs/alexnet"
        )
    if not is_gs(args.workdir) and t.hosts > 1:
        raise CloudTpuError(
            f"--workdir={args.workdir} is not gs://: a {t.accelerator} slice has "
            f"{t.hosts} hosts, which must share one workdir (checkpoints are "
            "written by all of them); use --workdir=gs://BUCKET/..."
        )
    parts = ["python3", "main.py", f"--config={args.config}", f"--workdir={args.workdir}"]
    if args.data_dir:
        parts.append(f"--config.data.data_dir={args.data_dir}")
    if t.hosts > 1:
        parts.append("--config.distributed.enabled=True")
    parts += list(args.overrides)
    return shlex.join(parts)


def _log_file(t: Target) -> str:
    """The worker-side log file of a run, quoted for the shell."""
    return _worker_path(f"{LOG_DIR}/{t.name}.log")


def start_commands(t: Target, args) -> list[list[str]]:
    script = (
        f"mkdir -p {_worker_path(LOG_DIR)} && cd {_worker_path(CHECKOUT)} && nohup "
        f"{main_command(t, args)} >> {_log_file(t)} 2>&1 < /dev/null &"
    )
    return [ssh(t, script)]


def watch_commands(t: Target, args) -> list[list[str]]:
    tail = "tail -F" if args.follow else "tail -n 40"
    commands = [state_command(t), ssh(t, f"{tail} {_log_file(t)}", worker="0")]
    if args.workdir:
        metrics = f"{args.workdir.rstrip('/')}/metrics.jsonl"
        if is_gs(args.workdir):
            commands.append(["gcloud", "storage", "cat", metrics])
        else:
            commands.append(ssh(t, f"tail -n 5 {shlex.quote(metrics)}", worker="0"))
    return commands


def delete_commands(t: Target, args) -> list[list[str]]:
    return [
        [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "delete",
            t.name,
            *t.where(),
            "--force",
            "--quiet",
        ]
    ]
