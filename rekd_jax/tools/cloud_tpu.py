"""Cloud TPU launcher: create a TPU VM or pod slice, install, stage the data, run, watch,
resume after preemption, tear down. It drives the gcloud CLI; docs/cloud_tpu.md is the guide.

    python -m rekd_jax.tools.cloud_tpu SUBCOMMAND --name=NAME --project=PROJECT_ID \\
        --zone=ZONE --accelerator=TYPE [options] [--dry_run]

e.g. (prints the commands, runs none; put your project ID in place of my-project):
    python -m rekd_jax.tools.cloud_tpu create --name=rekd1 --project=my-project \\
        --zone=us-central2-b --accelerator=v4-8 --dry_run

Subcommands (each prints every command before running it; --dry_run prints them only):
  create   a queued resource holding one TPU VM node (v4-8, v5litepod-8 a.k.a. v5e-8, v5p-8,
           or a pod slice such as v4-32 / v5p-64), --spot by default, then waits for ACTIVE
  install  clones --repo at --ref to ~/rekd-jax on every worker (main.py and configs/ are used
           from there) and pip-installs it with the `tpu` extra (jax[tpu], gcsfs,
           google-cloud-storage)
  data     optionally prepares a dataset here (--src: rekd_jax.data.prepare), then copies the
           TFDS ArrayRecord dataset to --data_dir: a gs:// folder (read by every worker), or a
           worker-local folder (copied to every worker through the gs:// --stage folder)
  start    starts `python3 main.py` on every worker (--worker=all) under nohup, logging to
           ~/rekd-jax-logs/NAME.log on each worker; pod slices add
           --config.distributed.enabled=True (jax.distributed finds the other hosts)
  watch    the queued resource's state, the last lines of worker 0's log, and the last
           records of WORKDIR/metrics.jsonl
  resume   after a preemption (state SUSPENDED/FAILED): delete and re-create the queued
           resource, install, (re-stage worker-local data,) and start the same command, which
           resumes from the newest checkpoint in the gs:// workdir; with the node still ACTIVE
           it only starts the command again
  delete   deletes the queued resource and its TPU VMs (--force); the gs:// workdir stays

Bad input (an unknown accelerator type, a missing --project/--zone, a name that breaks GCP's
naming rules, a pod slice with a workdir that is not gs://, ...) stops before any command with
one line naming the problem and the fix. Every user value that goes into a command run on the
workers is shell-quoted (shlex), so no value can run a command of its own there.
gcloud syntax follows the gcloud reference for `compute tpus queued-resources create/describe/
delete` and `compute tpus tpu-vm ssh` (cloud.google.com/sdk/gcloud/reference/compute/tpus) and
the runtime versions of cloud.google.com/tpu/docs/runtimes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

STATE_FORMAT = "value(state.state)"
LOG_DIR = "~/rekd-jax-logs"
CHECKOUT = "~/rekd-jax"


class CloudTpuError(ValueError):
    """Bad launcher input; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Generation:
    """One TPU generation: its gcloud accelerator-type prefix and what a size means."""

    prefix: str
    runtime_version: str  # cloud.google.com/tpu/docs/runtimes ("PyTorch and JAX")
    chips_per_host: int
    cores_per_chip: int  # the size in the type name counts TensorCores (v4, v5p) or chips
    sizes: str  # a description of the valid sizes, for the error message

    def chips(self, size: int) -> int:
        return size // self.cores_per_chip

    def hosts(self, size: int) -> int:
        return max(1, self.chips(size) // self.chips_per_host)


GENERATIONS = {
    "v4": Generation(
        "v4", "tpu-ubuntu2204-base", 4, 2, "8, 16, 32, ... (TensorCores; a multiple of 8)"
    ),
    "v5p": Generation(
        "v5p", "v2-alpha-tpuv5", 4, 2, "8, 16, 32, ... (TensorCores; a multiple of 8)"
    ),
    "v5litepod": Generation(
        "v5litepod", "v2-alpha-tpuv5-lite", 8, 1, "1, 4, 8, 16, 32, 64, 128, 256 (chips)"
    ),
    "v6e": Generation("v6e", "v2-alpha-tpuv6e", 8, 1, "1, 4, 8, 16, 32, 64, 128, 256 (chips)"),
}
ALIASES = {"v5e": "v5litepod"}  # gcloud calls v5e "v5litepod"
_LITE_SIZES = (1, 4, 8, 16, 32, 64, 128, 256)


def parse_accelerator(text: str) -> tuple[str, Generation, int]:
    """'v4-8' / 'v5e-8' / 'v5litepod-8' / 'v5p-64' -> (gcloud type, generation, size)."""
    match = re.fullmatch(r"([a-z0-9]+)-(\d+)", text or "")
    prefix = ALIASES.get(match.group(1), match.group(1)) if match else None
    if prefix not in GENERATIONS:
        known = ", ".join(sorted(GENERATIONS) + [f"{a} (= {p})" for a, p in ALIASES.items()])
        raise CloudTpuError(
            f"--accelerator={text!r} is not a known TPU type; use GENERATION-SIZE "
            f"with GENERATION one of {known}, e.g. v4-8, v5e-8, v5p-8 or v4-32"
        )
    gen, size = GENERATIONS[prefix], int(match.group(2))
    valid = size in _LITE_SIZES if gen.cores_per_chip == 1 else (size >= 8 and size % 8 == 0)
    if not valid:
        raise CloudTpuError(f"--accelerator={text!r}: {prefix} slices have sizes {gen.sizes}")
    return f"{prefix}-{size}", gen, size


@dataclasses.dataclass
class Target:
    name: str
    project: str
    zone: str
    accelerator: str
    generation: Generation
    size: int

    @property
    def hosts(self) -> int:
        return self.generation.hosts(self.size)

    def where(self) -> list[str]:
        return [f"--project={self.project}", f"--zone={self.zone}"]


# GCP's rules: resource names (RFC 1035 labels), project IDs, zones.
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_PROJECT = re.compile(r"(?:[a-z][-a-z0-9.]*:)?[a-z][-a-z0-9]{4,28}[a-z0-9]")
_ZONE = re.compile(r"[a-z]+-[a-z]+[0-9]+-[a-z]")


def _check_names(args) -> None:
    """CloudTpuError unless --name, --project and --zone follow GCP's naming rules."""
    for flag, value, pattern, rule in (
        (
            "--name",
            args.name,
            _NAME,
            "1-63 lowercase letters, digits and hyphens, starting with a "
            "letter and not ending with a hyphen",
        ),
        (
            "--project",
            args.project,
            _PROJECT,
            "a project ID: 6-30 lowercase letters, digits and hyphens, starting with a letter",
        ),
        ("--zone", args.zone, _ZONE, "a zone such as us-central2-b"),
    ):
        if not pattern.fullmatch(value):
            raise CloudTpuError(f"{flag}={value!r} is not a valid GCP name: use {rule}")


def _target(args) -> Target:
    missing = [
        flag
        for flag, value in (
            ("--name", args.name),
            ("--project", args.project),
            ("--zone", args.zone),
        )
        if not value
    ]
    if missing:
        raise CloudTpuError(
            f"{' and '.join(missing)} missing: give the queued resource's name, the "
            "GCP project and a zone that offers the accelerator (e.g. --project=my-"
            "project --zone=us-central2-b for v4; gcloud compute tpus "
            "accelerator-types list --zone=ZONE lists a zone's types)"
        )
    _check_names(args)
    accelerator, gen, size = parse_accelerator(args.accelerator)
    return Target(args.name, args.project, args.zone, accelerator, gen, size)


# ------------------------------------------------------------------------------ commands


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


def _is_gs(path: str) -> bool:
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
    if _is_gs(args.data_dir):
        commands.append(
            ["gcloud", "storage", "cp", "--recursive", source, f"{args.data_dir.rstrip('/')}/"]
        )
        return commands
    if not _is_gs(args.stage or ""):
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
    if not _is_gs(args.workdir) and t.hosts > 1:
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
        if _is_gs(args.workdir):
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


# ------------------------------------------------------------------------------ running


class Runner:
    """Prints each command; runs it unless dry_run. `output` commands return their stdout."""

    def __init__(self, dry_run: bool, out=sys.stdout):
        self.dry_run = dry_run
        self.out = out

    def __call__(self, cmd: Sequence[str], *, output: bool = False, check: bool = True) -> str:
        print(("" if self.dry_run else "+ ") + shlex.join(cmd), file=self.out, flush=True)
        if self.dry_run:
            return ""
        if output:
            return subprocess.run(cmd, check=check, capture_output=True, text=True).stdout.strip()
        subprocess.run(cmd, check=check)
        return ""

    def note(self, text: str) -> None:
        print(f"# {text}", file=self.out, flush=True)


def wait_active(t: Target, run: Runner, poll_secs: float, timeout_secs: float) -> None:
    if run.dry_run:
        run(state_command(t), output=True)
        run.note("repeated until the state is ACTIVE")
        return
    deadline = time.time() + timeout_secs
    while True:
        state = run(state_command(t), output=True)
        if state == "ACTIVE":
            return
        if state in ("FAILED", "SUSPENDED"):
            raise CloudTpuError(
                f"queued resource {t.name} is {state}; `gcloud compute tpus "
                f"queued-resources describe {t.name} --zone={t.zone}` says why"
            )
        if time.time() > deadline:
            raise CloudTpuError(
                f"queued resource {t.name} is still {state or 'unknown'} after "
                f"{timeout_secs:.0f} s; watch it with the `watch` subcommand and "
                "run `install` once it is ACTIVE"
            )
        time.sleep(poll_secs)


def run_subcommand(args, run: Runner) -> None:
    t = _target(args)
    sub = args.subcommand
    if sub in ("start", "resume"):
        main_command(t, args)  # check --config / --workdir before anything runs
    if sub == "resume":  # raise the --repo / --stage errors before anything runs
        install_commands(t, args)
        if args.data_dir and not _is_gs(args.data_dir) and args.dataset:
            data_commands(t, args)
    if sub == "create":
        run.note(
            f"{t.accelerator}: {t.generation.chips(t.size)} chips on {t.hosts} host(s)"
            f"{', spot capacity (preemptible)' if args.spot else ''}"
        )
        for cmd in create_commands(t, args):
            run(cmd)
        if args.wait:
            wait_active(t, run, args.poll_secs, args.timeout_secs)
    elif sub == "install":
        for cmd in install_commands(t, args):
            run(cmd)
    elif sub == "data":
        for cmd in data_commands(t, args):
            run(cmd)
    elif sub == "start":
        for cmd in start_commands(t, args):
            run(cmd)
    elif sub == "watch":
        for cmd in watch_commands(t, args):
            run(cmd, check=False)
    elif sub == "delete":
        for cmd in delete_commands(t, args):
            run(cmd)
    elif sub == "resume":
        state = run(state_command(t), output=True, check=False)
        if state == "ACTIVE":
            run.note(
                "the node is ACTIVE: starting the same command again (it resumes from the "
                "newest checkpoint in the workdir)"
            )
            for cmd in start_commands(t, args):
                run(cmd)
            return
        run.note(
            "when the state is not ACTIVE (preempted: SUSPENDED or FAILED): re-create, "
            "install and start the same command, which resumes from the newest checkpoint"
        )
        for cmd in delete_commands(t, args):
            run(cmd, check=False)
        for cmd in create_commands(t, args):
            run(cmd)
        wait_active(t, run, args.poll_secs, args.timeout_secs)
        for cmd in install_commands(t, args):
            run(cmd)
        if args.data_dir and not _is_gs(args.data_dir) and args.dataset:
            args.src = ""  # already prepared and staged: copy it to the new workers only
            for cmd in data_commands(t, args)[-1:]:
                run(cmd)
        for cmd in start_commands(t, args):
            run(cmd)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default="", help="queued resource and TPU VM name")
    common.add_argument("--project", default="", help="GCP project")
    common.add_argument("--zone", default="", help="zone offering the accelerator type")
    common.add_argument(
        "--accelerator",
        default="v4-8",
        help="TPU type: v4-8, v5e-8 (= v5litepod-8), v5p-8, or a pod slice "
        "such as v4-32 or v5p-64 (default v4-8)",
    )
    common.add_argument(
        "--dry_run", action="store_true", help="print every command without running any"
    )
    # create / resume
    common.add_argument(
        "--spot",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="spot (preemptible) capacity (default); --no-spot for on-demand",
    )
    common.add_argument(
        "--runtime_version",
        default="",
        help="TPU software version (default: the one for the generation)",
    )
    common.add_argument(
        "--data_disk",
        default="",
        help="attach a persistent disk: source=projects/P/zones/Z/disks/D,mode=read-only",
    )
    common.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="create: wait until the queued resource is ACTIVE",
    )
    common.add_argument("--poll_secs", type=float, default=30.0)
    common.add_argument("--timeout_secs", type=float, default=6 * 3600.0)
    # install / resume
    common.add_argument("--repo", default="", help="git URL of this project")
    common.add_argument("--ref", default="main", help="branch or tag to install")
    # data / start / resume / watch
    common.add_argument("--dataset", default="", help="TFDS dataset name (data)")
    common.add_argument(
        "--src", default="", help="data: a folder of class subfolders to prepare first"
    )
    common.add_argument(
        "--local_data_dir",
        default="~/tensorflow_datasets",
        help="data: where the dataset is (or is prepared) where this runs",
    )
    common.add_argument(
        "--data_dir",
        default="",
        help="where the workers read the dataset: gs://... or a worker folder",
    )
    common.add_argument(
        "--stage", default="", help="data: gs:// folder to copy through for a worker-local data_dir"
    )
    common.add_argument("--config", default="", help="start: main.py --config value")
    common.add_argument("--workdir", default="", help="start: main.py --workdir (gs://...)")
    common.add_argument("--follow", action="store_true", help="watch: follow the log")
    parser = argparse.ArgumentParser(
        prog="python -m rekd_jax.tools.cloud_tpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subs = parser.add_subparsers(dest="subcommand", required=True)
    for name in ("create", "install", "data", "start", "watch", "resume", "delete"):
        sub = subs.add_parser(name, parents=[common])
        if name in ("start", "resume"):
            sub.add_argument(
                "overrides",
                nargs="*",
                help="further main.py flags after --, e.g. -- --config.num_epochs=100",
            )
    return parser


def main(argv: Sequence[str] | None = None, out=sys.stdout) -> int:
    args = build_parser().parse_args(argv)
    args.overrides = getattr(args, "overrides", [])
    try:
        if any(o.split("=")[0] in ("--dry_run", "--dry-run") for o in args.overrides):
            raise CloudTpuError(
                "--dry_run after `--` would be passed to main.py (and the commands "
                "run); put it before `--`"
            )
        run_subcommand(args, Runner(args.dry_run, out))
    except CloudTpuError as e:
        print(f"FATAL: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(
            f"FATAL: {shlex.join(e.cmd)} failed with exit status {e.returncode}; its output "
            "is above",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
