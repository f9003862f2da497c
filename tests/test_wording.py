"""No tracked text file, and no file name, matches PHRASES. Hardware appears in a result as a
specification ("2-core x86 CPU, Python 3.11, jax 0.10.2")."""

import os
import re
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THIS_FILE = os.path.relpath(os.path.abspath(__file__), REPO)
TEXT_SUFFIXES = (
    ".py",
    ".md",
    ".txt",
    ".toml",
    ".ini",
    ".cfg",
    ".sh",
    ".ipynb",
    ".json",
    ".yaml",
    ".yml",
)

PHRASES = (
    r"\bthis machine\b",
    r"\bthis (?:2-core )?CPU\b",
    r"\bthis project's (?:2-core|CPU|machine|sessions?)\b",
    r"\bsessions? so far\b",
    r"\bno session\b",
    r"\bdevelopment sessions?\b",
    r"\b(?:target|aim)s? (?:is |are |was |were )?(?:not )?met\b",
    r"\bthrowaway\b",
    r"\blent (?:GPU|machine)\b",
    r"\bborrowed machine\b",
    r"\bdevice tool\b",
    r"\bH200 call\b",
    r"\b\d+-minute (?:H200 )?call\b",
    r"gpu_session",
    r"\bquestion \d of the study\b",
    r"\bthe earlier (?:default )?\d",
)
PATTERN = re.compile("|".join(f"(?:{p})" for p in PHRASES), re.IGNORECASE)


def _tracked_files() -> list[str]:
    """The repository's tracked files (every file under it when git is not available)."""
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        return out.split()
    except (OSError, subprocess.CalledProcessError):
        found = []
        for root, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [os.path.relpath(os.path.join(root, f), REPO) for f in files]
        return found


def test_each_phrase_is_found_and_a_specification_is_not():
    examples = (
        "on this machine",
        "this 2-core CPU",
        "this project's sessions",
        "sessions so far",
        "no session",
        "development session",
        "target is met",
        "aims are not met",
        "throwaway",
        "lent GPU",
        "borrowed machine",
        "device tool",
        "H200 call",
        "10-minute call",
        "gpu_session",
        "question 4 of the study",
        "the earlier 1",
    )
    for phrase in PHRASES:
        assert any(re.search(phrase, text, re.IGNORECASE) for text in examples), phrase
    for text in (
        "2-core x86 CPU, Python 3.11, jax 0.10.2",
        "scope='session'",
        "this project's encoder checkpoints",
        "the targets of SEED",
    ):
        assert not PATTERN.search(text), text


def test_no_tracked_file_matches_a_phrase():
    hits = []
    for path in _tracked_files():
        if path == THIS_FILE:
            continue
        if PATTERN.search(path):
            hits.append(f"{path}: the file name")
        if not path.endswith(TEXT_SUFFIXES) or not os.path.isfile(os.path.join(REPO, path)):
            continue
        with open(os.path.join(REPO, path), encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                match = PATTERN.search(line)
                if match:
                    hits.append(f"{path}:{number}: {match.group(0)!r}")
    assert not hits, (
        "describe the software (and hardware as a spec, e.g. '2-core x86 CPU, "
        "Python 3.11, jax 0.10.2'), not its development:\n" + "\n".join(hits)
    )
