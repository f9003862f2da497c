"""`pip install .` into a fresh virtualenv, then the console command `rekd-jax` and the README's
Python snippet run outside any clone: the command exists, --help exits 0, recipes are found by
name, bad input is one FATAL line, a run ends with a "Next" line naming `rekd-jax`, and app.run
logs its progress.

The virtualenv is new, but its dependencies (JAX, TFDS, ... several GB) are not installed
again: a .pth file lends it the test interpreter's site-packages, so pip finds every
requirement satisfied and installs the project alone, as it would into an environment that
has them. The build backend (setuptools) comes from pip's configured index or wheel cache.
"""

import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
from commands import ROOT, env

PACKAGE_FILES = ("pyproject.toml", "README.md", "rekd_jax", "configs")


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """(bin folder, environment) of a fresh virtualenv with the project pip-installed."""
    root = tmp_path_factory.mktemp("pip_install")
    src = root / "src"  # a copy: pip builds in the source tree
    src.mkdir()
    for name in PACKAGE_FILES:
        source = os.path.join(ROOT, name)
        if os.path.isdir(source):
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, src / name)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=300)
    bin_dir = root / "venv" / "bin"
    purelib = subprocess.run(
        [bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    lent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    with open(os.path.join(purelib, "lent_site_packages.pth"), "w") as f:
        f.write("\n".join(sorted(lent)) + "\n")
    install = subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "-q", str(src)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if (
        install.returncode != 0
        and "setuptools" in install.stderr
        and (
            "Could not find a version" in install.stderr
            or "No matching distribution" in install.stderr
        )
    ):
        pytest.skip(
            "pip cannot fetch the build backend (setuptools>=69) from its configured "
            f"index or cache here: {install.stderr.strip().splitlines()[-1]}"
        )
    assert install.returncode == 0, install.stderr[-3000:]
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": None,
        "VIRTUAL_ENV": str(root / "venv"),
    }
    return bin_dir, env


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("pip_install_runs")
    return {"tfds": str(root / "tfds"), "cache": str(root / "cache")}


def _env(venv, shared) -> dict:
    """The child's environment: the virtualenv activated, the checkout not importable."""
    bin_dir, activated = venv
    return env(shared, **activated)


def _console(venv, shared, cwd, *args):
    bin_dir, _ = venv
    return subprocess.run(
        [str(bin_dir / "rekd-jax"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env=_env(venv, shared),
    )


def test_the_console_command_is_installed_and_imports_the_installed_package(venv, shared, tmp_path):
    bin_dir, _ = venv
    assert os.access(bin_dir / "rekd-jax", os.X_OK)
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import rekd_jax; print(rekd_jax.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env=_env(venv, shared),
    )
    assert where.stdout.startswith(str(bin_dir.parent)), where.stdout


def test_help_and_bad_input_outside_a_clone(venv, shared, tmp_path):
    help_ = _console(venv, shared, tmp_path, "--help")
    assert help_.returncode == 0 and "Usage: rekd-jax --config=NAME" in help_.stdout
    assert "alexnet.py" in help_.stdout and "knn_eval.py" in help_.stdout
    bad = _console(venv, shared, tmp_path, "--config=alexnt", "--workdir=w")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("FATAL: ConfigNotFoundError: --config=alexnt")
    assert "did you mean 'alexnet'?" in bad.stderr


def test_a_recipe_by_name_runs_and_names_rekd_jax_next(venv, shared, tmp_path):
    result = _console(
        venv,
        shared,
        tmp_path,
        "--config=knn_eval:tiny,runlocal",
        "--config.checkpoint=init:alexnet:cifar_stem=true",
        f"--workdir={tmp_path / 'knn'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "knn evaluation of init:alexnet" in result.stderr.splitlines()[0]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(
        "Next, another protocol: rekd-jax --config=linear_eval:tiny,runlocal "
    ), last


def test_the_readmes_python_snippet_logs_its_progress(venv, shared, tmp_path):
    bin_dir, _ = venv
    code = (
        "from rekd_jax import app\n"
        "from rekd_jax.core import config_lookup\n"
        "config = config_lookup.load_config('knn_eval:tiny,runlocal')\n"
        "config.checkpoint = 'init:alexnet:cifar_stem=true'\n"
        f"app.run(config, {str(tmp_path / 'py')!r})\n"
    )
    result = subprocess.run(
        [str(bin_dir / "python"), "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env=_env(venv, shared),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "knn evaluation of init:alexnet" in result.stderr
    assert "compiling the feature extractor" in result.stderr
    assert "Next, another protocol: rekd-jax " in result.stdout
