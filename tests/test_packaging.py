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
    assert set(meta.get_all("Provides-Extra")) == {"gpu", "tpu", "tf", "torch", "test", "dev"}
    requires = meta.get_all("Requires-Dist")
    assert any(r.startswith("jax[cuda12]") and 'extra == "gpu"' in r for r in requires)
    assert any(r.startswith("jax[tpu]") and 'extra == "tpu"' in r for r in requires)
    from packaging.requirements import Requirement

    base = {
        Requirement(r).name.lower().replace("_", "-"): Requirement(r)
        for r in requires
        if "extra ==" not in r
    }
    pins = _pins("requirements.txt")
    assert pins and "filelock" in pins  # the compilation cache's size bound needs filelock
    for name, version in pins.items():  # the tested pins lie inside the package's ranges
        requirement = base[name]
        assert requirement.specifier.contains(version), (name, version, requirement)


def _pins(file: str) -> dict[str, str]:
    """Normalised name -> version of the `name==version` lines of a requirements file."""
    with open(os.path.join(REPO, file), encoding="utf-8") as f:
        pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", f.read(), re.M)
    return {name.lower().replace("_", "-"): version for name, version in pins}


def test_the_test_and_dev_extras_are_the_requirements_files(wheel):
    """`.[test]` is requirements-test.txt (no PyTorch), `.[dev]` adds requirements-dev.txt's
    PyTorch and torchvision, `.[torch]` is PyTorch alone; each pin inside its extra's range."""
    from packaging.requirements import Requirement

    extras = {}
    for text in _metadata(wheel).get_all("Requires-Dist"):
        requirement = Requirement(text)
        for extra in ("torch", "test", "dev"):
            if requirement.marker and requirement.marker.evaluate({"extra": extra}):
                extras.setdefault(extra, {})[requirement.name.lower()] = requirement
    test, dev = _pins("requirements-test.txt"), _pins("requirements-dev.txt")
    assert set(extras["test"]) == set(test) and not {"torch", "torchvision"} & set(test)
    assert set(extras["dev"]) == set(test) | set(dev) and set(dev) == {"torch", "torchvision"}
    assert set(extras["torch"]) == {"torch"}
    for extra, pins in (
        ("test", test),
        ("dev", {**test, **dev}),
        ("torch", {"torch": dev["torch"]}),
    ):
        for name, version in pins.items():
            assert extras[extra][name].specifier.contains(version), (extra, name, version)
