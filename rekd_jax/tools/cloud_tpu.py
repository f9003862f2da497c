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
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

from rekd_jax.tools.tpu_commands import (
    create_commands,
    data_commands,
    delete_commands,
    install_commands,
    is_gs,
    main_command,
    start_commands,
    state_command,
    watch_commands,
)
from rekd_jax.tools.tpu_target import CloudTpuError, Target, target_from_args

# tpu_target checks the TPU addressed, tpu_commands builds each subcommand's gcloud commands;
# this module runs them (printing each first) and holds the command line.


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
    """Checks every flag the subcommand needs before anything runs, then runs its commands."""
    t = target_from_args(args)
    sub = args.subcommand
    if sub in ("start", "resume"):
        main_command(t, args)  # check --config / --workdir before anything runs
    if sub == "resume":  # raise the --repo / --stage errors before anything runs
        install_commands(t, args)
        if args.data_dir and not is_gs(args.data_dir) and args.dataset:
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
        _resume(t, args, run)


def _resume(t: Target, args, run: Runner) -> None:
    """Starts the command again on an ACTIVE node; else re-creates, installs, re-stages
    worker-local data and starts it, which resumes from the newest checkpoint."""
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
    if args.data_dir and not is_gs(args.data_dir) and args.dataset:
        args.src = ""  # already prepared and staged: copy it to the new workers only
        for cmd in data_commands(t, args)[-1:]:
            run(cmd)
    for cmd in start_commands(t, args):
        run(cmd)


def _common_flags() -> argparse.ArgumentParser:
    """The flags every subcommand accepts (each says which subcommands read it)."""
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
    return common


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subparser per subcommand, all with the common flags."""
    common = _common_flags()
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
