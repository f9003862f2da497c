"""The README's commands, run in order as a new user runs them: the quick start, then the
"Evaluate an encoder" commands on the quick start's student (and the report tool). At test size:
the quick start's `:tiny` variant, and `:tiny,runlocal` where the README says `:shapes`; the
paths move under a temporary folder. Every command must succeed."""

import os
import re
import shlex
import sys

from commands import ROOT, run

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
    assert variables.keys() >= {"S", "E"}
    assert os.path.isfile(os.path.join(variables["E"], "knn", "results_knn.json"))
    assert os.path.isdir(root / os.path.basename(QUICKSTART_DIR) / "plots")


if __name__ == "__main__":
    print("\n".join(readme_sequence()))
    sys.exit(0)
