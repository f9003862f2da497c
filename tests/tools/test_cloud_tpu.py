"""The Cloud TPU launcher's --dry_run output for every subcommand, and its one-line errors.
(No GCP here: the gcloud commands themselves are checked against the gcloud reference in
docs/cloud_tpu.md, not run.)"""

import io
import shlex

import pytest

from rekd_jax.tools import cloud_tpu

REPO = "https://github.com/OWNER/rekd-jax.git"


def dry(*argv):
    out = io.StringIO()
    assert cloud_tpu.main([argv[0], "--dry_run", *argv[1:]], out=out) == 0
    return [line for line in out.getvalue().splitlines() if line]


def commands(lines):
    return [shlex.split(line) for line in lines if not line.startswith("#")]


def where(name="run1", zone="us-central2-b"):
    return [f"--name={name}", "--project=my-project", f"--zone={zone}"]


@pytest.mark.parametrize(
    "accelerator,gcloud_type,runtime,hosts",
    [
        ("v4-8", "v4-8", "tpu-ubuntu2204-base", 1),
        ("v5e-8", "v5litepod-8", "v2-alpha-tpuv5-lite", 1),
        ("v5litepod-16", "v5litepod-16", "v2-alpha-tpuv5-lite", 2),
        ("v5p-8", "v5p-8", "v2-alpha-tpuv5", 1),
        ("v5p-64", "v5p-64", "v2-alpha-tpuv5", 8),
        ("v4-32", "v4-32", "tpu-ubuntu2204-base", 4),
    ],
)
def test_create_is_a_spot_queued_resource(accelerator, gcloud_type, runtime, hosts):
    lines = dry("create", *where(), f"--accelerator={accelerator}")
    assert f"on {hosts} host(s), spot capacity" in lines[0]
    create, describe = commands(lines)
    assert create == [
        "gcloud",
        "compute",
        "tpus",
        "queued-resources",
        "create",
        "run1",
        "--node-id=run1",
        "--project=my-project",
        "--zone=us-central2-b",
        f"--accelerator-type={gcloud_type}",
        f"--runtime-version={runtime}",
        "--spot",
    ]
    assert describe[:6] == ["gcloud", "compute", "tpus", "queued-resources", "describe", "run1"]
    assert "--format=value(state.state)" in describe
    assert lines[-1] == "# repeated until the state is ACTIVE"


def test_create_on_demand_with_a_data_disk():
    disk = "source=projects/my-project/zones/us-central2-b/disks/imagenet,mode=read-only"
    (create,) = commands(
        dry(
            "create",
            *where(),
            "--accelerator=v4-8",
            "--no-spot",
            "--no-wait",
            f"--data_disk={disk}",
        )
    )
    assert "--spot" not in create and create[-1] == f"--data-disk={disk}"


def test_install_clones_and_installs_the_tpu_extra_on_every_worker():
    (ssh,) = commands(dry("install", *where(), f"--repo={REPO}", "--ref=v0.1.0"))
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "run1"]
    assert "--worker=all" in ssh
    script = ssh[-1].removeprefix("--command=")
    assert f"git clone --depth=1 --branch=v0.1.0 {REPO} ~/rekd-jax" in script
    assert 'pip install "$HOME/rekd-jax[tpu]"' in script


def test_data_to_gcs_and_to_worker_disks():
    lines = commands(
        dry(
            "data",
            *where(),
            "--src=/data/imagenet",
            "--dataset=imagenet2012",
            "--local_data_dir=/big/tfds",
            "--data_dir=gs://bkt/tfds",
        )
    )
    assert lines[0][1:] == [
        "-m",
        "rekd_jax.data.prepare",
        "--src=/data/imagenet",
        "--name=imagenet2012",
        "--data_dir=/big/tfds",
    ]
    assert lines[1] == [
        "gcloud",
        "storage",
        "cp",
        "--recursive",
        "/big/tfds/imagenet2012",
        "gs://bkt/tfds/",
    ]
    lines = commands(
        dry(
            "data",
            *where(),
            "--dataset=imagenet2012",
            "--local_data_dir=/big/tfds",
            "--data_dir=/mnt/data/tfds",
            "--stage=gs://bkt/stage",
        )
    )
    assert lines[0] == [
        "gcloud",
        "storage",
        "cp",
        "--recursive",
        "/big/tfds/imagenet2012",
        "gs://bkt/stage/",
    ]
    assert "--worker=all" in lines[1]
    assert lines[1][-1] == (
        "--command=set -e; mkdir -p /mnt/data/tfds; gcloud storage cp "
        "--recursive gs://bkt/stage/imagenet2012 /mnt/data/tfds/"
    )


@pytest.mark.parametrize("accelerator,distributed", [("v4-8", False), ("v4-32", True)])
def test_start_runs_main_on_every_worker(accelerator, distributed):
    (ssh,) = commands(
        dry(
            "start",
            *where(),
            f"--accelerator={accelerator}",
            "--config=configs/alexnet.py",
            "--workdir=gs://bkt/runs/alexnet",
            "--data_dir=gs://bkt/tfds",
            "--",
            "--config.num_epochs=100",
        )
    )
    assert "--worker=all" in ssh
    script = ssh[-1].removeprefix("--command=")
    main = (
        "python3 main.py --config=configs/alexnet.py --workdir=gs://bkt/runs/alexnet "
        "--config.data.data_dir=gs://bkt/tfds"
        + (" --config.distributed.enabled=True" if distributed else "")
        + " --config.num_epochs=100"
    )
    assert script == (
        f'mkdir -p "$HOME"/rekd-jax-logs && cd "$HOME"/rekd-jax && nohup {main} '
        '>> "$HOME"/rekd-jax-logs/run1.log 2>&1 < /dev/null &'
    )


def test_watch_shows_state_log_and_metrics():
    state, log, metrics = commands(dry("watch", *where(), "--workdir=gs://bkt/runs/a"))
    assert state[4] == "describe"
    assert "--worker=0" in log and log[-1] == '--command=tail -n 40 "$HOME"/rekd-jax-logs/run1.log'
    assert metrics == ["gcloud", "storage", "cat", "gs://bkt/runs/a/metrics.jsonl"]


def test_resume_recreates_installs_and_starts_the_same_command():
    args = [
        *where(),
        "--accelerator=v4-32",
        f"--repo={REPO}",
        "--config=configs/alexnet.py",
        "--workdir=gs://bkt/runs/a",
        "--data_dir=gs://bkt/tfds",
    ]
    lines = commands(dry("resume", *args))
    verbs = [" ".join(c[3:5]) for c in lines]
    assert verbs == [
        "queued-resources describe",
        "queued-resources delete",
        "queued-resources create",
        "queued-resources describe",
        "tpu-vm ssh",
        "tpu-vm ssh",
    ]
    assert "--spot" in lines[2] and "--accelerator-type=v4-32" in lines[2]
    assert lines[-1] == commands(dry("start", *args))[0]  # the very command `start` ran


def test_delete_forces_the_queued_resource():
    assert commands(dry("delete", *where())) == [
        [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "delete",
            "run1",
            "--project=my-project",
            "--zone=us-central2-b",
            "--force",
            "--quiet",
        ]
    ]


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["create", *where(), "--accelerator=v9-8"],
            "--accelerator='v9-8' is not a known TPU type",
        ),
        (["create", *where(), "--accelerator=v4-12"], "v4 slices have sizes 8, 16, 32"),
        (["create", *where(), "--accelerator=v5e-3"], "v5litepod slices have sizes 1, 4, 8"),
        (["create", "--name=r", "--zone=z"], "--project missing"),
        (["create", "--name=r", "--project=p"], "--zone missing"),
        (
            [
                "start",
                *where(),
                "--accelerator=v4-32",
                "--config=configs/alexnet.py",
                "--workdir=/home/me/run",
            ],
            "is not gs://: a v4-32 slice has 4 hosts",
        ),
        (["start", *where(), "--workdir=gs://b/r"], "--config missing"),
        (["resume", *where(), "--config=c.py", "--workdir=gs://b/r"], "--repo missing"),
        (["data", *where(), "--dataset=x", "--data_dir=/mnt/tfds"], "give --stage=gs://"),
        (
            ["start", *where(), "--config=c.py", "--workdir=gs://b/r", "--", "--dry_run"],
            "put it before `--`",
        ),
    ],
)
def test_bad_input_is_one_line_and_runs_nothing(argv, message, capsys):
    out = io.StringIO()
    assert cloud_tpu.main([argv[0], "--dry_run", *argv[1:]], out=out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("FATAL: ") and message in err and "\n" not in err
    assert out.getvalue() == ""  # not a single command printed


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--name", "x;touch INJ"),
        ("--name", "Run1"),
        ("--name", "run-"),
        ("--name", "a" * 64),
        ("--project", "p;id"),
        ("--zone", "us-central2-b;id"),
    ],
)
def test_names_that_break_gcp_rules_are_refused_before_any_command(flag, value, capsys):
    args = {"--name": "run1", "--project": "my-project", "--zone": "us-central2-b", flag: value}
    out = io.StringIO()
    argv = [
        "start",
        "--dry_run",
        *(f"{k}={v}" for k, v in args.items()),
        "--config=configs/alexnet.py",
        "--workdir=gs://b/r",
    ]
    assert cloud_tpu.main(argv, out=out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"FATAL: {flag}={value!r} is not a valid GCP name") and "\n" not in err
    assert out.getvalue() == ""


def test_user_values_cannot_run_commands_on_the_workers(tmp_path):
    """Every value in the remote --command is one shell word: run through a real shell (with
    the workers' paths under a scratch HOME and `echo` in front of main.py), the script only
    logs the main.py command line, whatever the config, workdir or overrides hold."""
    import subprocess

    marker = tmp_path / "INJ"
    evil = f"x;touch {marker};$(touch {marker})`touch {marker}`"
    (ssh,) = commands(
        dry(
            "start",
            *where(),
            f"--config={evil}",
            f"--workdir=gs://b/{evil}",
            "--",
            f"--config.x={evil}",
        )
    )
    script = ssh[-1].removeprefix("--command=")
    home = tmp_path / "home"
    (home / "rekd-jax").mkdir(parents=True)
    script = script.replace("nohup ", "nohup echo ", 1).removesuffix(" &")
    subprocess.run(
        ["sh", "-c", script],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        check=True,
        timeout=30,
    )
    assert not marker.exists()
    logged = (home / "rekd-jax-logs" / "run1.log").read_text()
    assert logged.startswith(f"python3 main.py --config={evil} --workdir=gs://b/{evil}")
