"""pyproject.toml: the wheel holds rekd_jax with the configs inside it (rekd_jax.configs), the
extras of the README's install table, and version ranges that admit the pinned
requirements.txt."""

import email
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src")  # a copy: the build leaves build/ and egg-info behind
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), src / name)
    for name in ("rekd_jax", "configs"):
        shutil.copytree(
            os.path.join(REPO, name), src / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    # --no-build-isolation: build with the installed setuptools (no download).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (path,) = out.glob("rekd_jax-*.whl")
    return zipfile.ZipFile(path)


def _metadata(wheel):
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return email.message_from_bytes(wheel.read(name))


def test_wheel_holds_the_library_and_every_config_inside_it(wheel):
    names = set(wheel.namelist())
    for required in (
        "rekd_jax/app.py",
        "rekd_jax/variants.py",
        "rekd_jax/models/resnet.py",
        "rekd_jax/evaluation/run.py",
        "rekd_jax/configs/__init__.py",
        "rekd_jax/configs/alexnet.py",
    ):
        assert required in names
    packages = {
        os.path.relpath(root, REPO)
        for root, _, files in os.walk(os.path.join(REPO, "rekd_jax"))
        if "__init__.py" in files
    }
    missing = {p for p in packages if f"{p}/__init__.py" not in names}
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    configs = {
        f"rekd_jax/configs/{f}"
        for f in os.listdir(os.path.join(REPO, "configs"))
        if f.endswith(".py")
    }
    assert configs <= names
    assert not any(n.startswith(("configs/", "tests/", "benchmarks/")) for n in names)


def test_wheel_installs_the_console_command(wheel):
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    text = wheel.read(name).decode()
    assert "[console_scripts]" in text and "rekd-jax = rekd_jax.cli:main" in text


def test_extras_and_pins(wheel):
    meta = _metadata(wheel)
    assert set(meta.get_all("Provides-Extra")) == {"gpu", "tpu", "tf", "dev"}
    requires = meta.get_all("Requires-Dist")
    assert any(r.startswith("jax[cuda12]") and 'extra == "gpu"' in r for r in requires)
    assert any(r.startswith("jax[tpu]") and 'extra == "tpu"' in r for r in requires)
    from packaging.requirements import Requirement

    base = {
        Requirement(r).name.lower().replace("_", "-"): Requirement(r)
        for r in requires
        if "extra ==" not in r
    }
    with open(os.path.join(REPO, "requirements.txt"), encoding="utf-8") as f:
        pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", f.read(), re.M)
    assert pins
    for name, version in pins:  # the tested pins lie inside the package's ranges
        requirement = base[name.lower().replace("_", "-")]
        assert requirement.specifier.contains(version), (name, version, requirement)
