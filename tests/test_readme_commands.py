"""The README's commands, run in order as a new user runs them: the quick start, then the
"Evaluate an encoder" commands on the quick start's student (and the report tool). At test size:
the quick start's `:tiny` variant, and `:tiny,runlocal` where the README says `:shapes`; the
paths move under a temporary folder. Every command must succeed. Also: the Cloud TPU launcher's
commands of the README, of docs/cloud_tpu.md and of its own --help run as written (dry runs),
and the README's random-init baseline is the quick start student's architecture."""

import os
import re
import shlex
import subprocess
import sys

from commands import ROOT, run

from rekd_jax import app, config_lookup
from rekd_jax.experiments import quickstart
from rekd_jax.readout import features

QUICKSTART_DIR = "/tmp/rekd_quickstart"


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[str]:
    """The block's lines without comments, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = [line.split(" #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def readme_sequence() -> list[str]:
    """The quick start's main.py command, then the bash block after "**Evaluate an encoder"."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    quick = next(
        part
        for block in _bash_blocks(text)
        for command in _commands(block)
        for part in command.split(" && ")
        if "configs/quickstart.py" in part
    )
    evaluation = text.split("\n**Evaluate an encoder", 1)[1]
    return [quick] + _commands(_bash_blocks(evaluation)[0])


def test_the_readme_lists_the_sequence():
    sequence = readme_sequence()
    assert sequence[0].startswith("python main.py --config=configs/quickstart.py")
    assert any("knn_eval" in c for c in sequence) and any("linear_eval" in c for c in sequence)
    assert any("rekd_jax.tools.report" in c for c in sequence)


def test_the_readme_commands_run_in_order_after_the_quick_start(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    shared = {"tfds": str(root / "tfds"), "cache": str(root / "cache")}
    variables = {}
    for command in readme_sequence():
        first_line = (
            "quick start: pre-training teacher, student, seed, baseline"  # the order they run
            if "configs/quickstart.py" in command
            else ""
        )
        command = (
            re.sub(r"/tmp/(\w+)", lambda m: str(root / m.group(1)), command)
            .replace("configs/quickstart.py", "configs/quickstart.py:tiny")
            .replace(":shapes", ":tiny,runlocal")
        )
        for name, value in variables.items():
            command = command.replace(f"${name}", value)
        assignment = re.fullmatch(r"([A-Z_]+)=(\S+)", command)
        if assignment:
            variables[assignment.group(1)] = assignment.group(2)
            continue
        words = shlex.split(command)
        assert words[0] == "python", command
        result = run(shared, *words[1:], timeout=1800)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, command
        if first_line:
            assert first_line in result.stderr.splitlines()[0], result.stderr[:500]
    assert variables.keys() >= {"S", "E"}
    assert os.path.isfile(os.path.join(variables["E"], "knn", "results_knn.json"))
    assert os.path.isdir(root / os.path.basename(QUICKSTART_DIR) / "plots")


def test_the_quick_starts_first_line_names_its_stages_in_the_order_they_run():
    config = config_lookup.load_config("configs/quickstart.py:tiny")
    trained = [arm.name for arm in quickstart.arms(config) if arm.trained]
    assert trained == ["teacher", "student", "seed", "baseline"]
    assert f"pre-training {', '.join(trained)} and" in app.describe(config, "w")


def test_the_readmes_random_init_baseline_is_the_quick_start_students_architecture():
    """The README scores the random init of the student it evaluates: the quick start's AlexNet
    (its width included), not the full-width one."""
    (spec,) = re.findall(r"--config\.checkpoint=(init:\S+)", "\n".join(readme_sequence()))
    encoder, _ = features.parse_init_checkpoint(spec)
    student = config_lookup.load_config("configs/quickstart.py").runs.student.student
    assert encoder["arch"] == student.arch
    assert encoder["overrides"] == student.overrides.to_dict()


def _launcher_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every `python -m rekd_jax.tools.cloud_tpu` command in the README, in
    docs/cloud_tpu.md and in the tool's --help, as a dry run: --dry_run added where the command
    runs gcloud (before `--`), optional [flags] left out, synopses (SUBCOMMAND) skipped."""
    texts = {}
    for name in ("README.md", os.path.join("docs", "cloud_tpu.md")):
        with open(os.path.join(ROOT, name), encoding="utf-8") as f:
            texts[name] = [c for block in _bash_blocks(f.read()) for c in _commands(block)]
    help_text = subprocess.run(
        [sys.executable, "-m", "rekd_jax.tools.cloud_tpu", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    texts["--help"] = _commands(help_text)
    out = []
    for where, commands in texts.items():
        for command in commands:
            if not command.startswith("python -m rekd_jax.tools.cloud_tpu ") or (
                "SUBCOMMAND" in command
            ):
                continue
            words = [w for w in shlex.split(command) if not w.startswith("[")]
            if "--dry_run" not in words:
                at = words.index("--") if "--" in words else len(words)
                words.insert(at, "--dry_run")
            out.append((where, words))
    return out


def test_every_cloud_tpu_command_of_the_docs_runs_as_written():
    commands = _launcher_commands()
    readme = [words for where, words in commands if where == "README.md"]
    assert len(readme) == 1 and "--dry_run" in readme[0]  # the README's own dry run, as written
    assert any(where == "--help" for where, _ in commands)
    for where, words in commands:
        result = subprocess.run(
            [sys.executable, *words[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, (where, " ".join(words), result.stderr[-2000:])
        assert "gcloud " in result.stdout, (where, result.stdout[-2000:])


if __name__ == "__main__":
    print("\n".join(readme_sequence()))
    sys.exit(0)
