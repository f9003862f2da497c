"""The README's install paths, without the dev extras: `pip install .` into a fresh virtualenv,
then the console command `rekd-jax` and the README's Python snippet run outside any clone (the
command exists, --help exits 0, recipes are found by name, bad input is one FATAL line, a run
ends with a "Next" line naming `rekd-jax`, app.run logs its progress, the persistent compilation
cache fills, the PyTorch importer without PyTorch is one line); `pip install -r requirements.txt`
into another, where a second smoke run from the clone reads the compilation cache without a
warning; and `pip install -r requirements-test.txt`, where every test module is collected and
those that need PyTorch are skipped.

The virtualenvs are new, but their dependencies (JAX, TFDS, ... several GB) are not installed
again: a .pth file lends each the test interpreter's copies of exactly the distributions that
its requirements pull in (followed through their own requirements, extras and markers), so pip
finds every requirement satisfied and installs the project alone, as it would into an
environment that has them. What the test interpreter holds only for the dev extras (PyTorch and
what PyTorch alone brings, such as filelock) is not lent: a runtime requirement missing from
requirements.txt or pyproject.toml is missing here too. The build backend (setuptools) comes from
pip's configured index or wheel cache.
"""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from commands import ROOT, env
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PACKAGE_FILES = ("pyproject.toml", "README.md", "rekd_jax", "configs")
# A tiny command-line run that compiles (the smoke run of the README's evaluation commands).
KNN_SMOKE = (
    "--config=knn_eval:tiny,runlocal",
    "--config.checkpoint=init:alexnet:cifar_stem=true,width_multiplier=0.25",
)
TORCH_TEST_MODULES = (  # the tests that need PyTorch: skipped without it
    "tests/models/test_parity_every_torchvision_arch.py",
    "tests/models/test_registry_heads_io.py",
    "tests/models/test_mobile_families.py",
    "tests/models/test_resnet_alexnet.py",
    "tests/data/test_data_augment.py",
    "tests/data/test_host_crop.py",
    "tests/tools/test_import_torch.py",
)


def requirements_file(name: str) -> list[str]:
    """The requirement lines of a requirements file of the clone, `-r` includes followed."""
    out = []
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line.startswith("-r"):
                out += requirements_file(line[2:].strip())
            elif line:
                out.append(line)
    return out


def project_dependencies() -> list[str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


def installed_closure(requirements: list[str]) -> list[importlib.metadata.Distribution]:
    """The test interpreter's distributions that `requirements` pull in: each requirement, then
    the requirements of its distribution (with the extras asked for, markers evaluated here)."""
    found: dict[str, tuple[importlib.metadata.Distribution, set[str]]] = {}
    todo = [Requirement(text) for text in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        distribution, extras = found.get(name, (None, set()))
        if distribution is not None and set(requirement.extras) <= extras:
            continue
        distribution = distribution or importlib.metadata.distribution(requirement.name)
        extras = extras | set(requirement.extras)
        found[name] = (distribution, extras)
        for text in distribution.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append(sub)
    return [distribution for distribution, _ in found.values()]


def lend(requirements: list[str], folder) -> str:
    """A folder of links to the installed files of `requirements`' distributions (top-level
    packages, modules and .dist-info folders): what a .pth file lends a new virtualenv."""
    os.makedirs(folder)
    for distribution in installed_closure(requirements):
        site = str(distribution.locate_file(""))
        for path in distribution.files or []:
            top = path.parts[0]
            link = os.path.join(folder, top)
            if top not in ("..", "__pycache__") and not os.path.lexists(link):
                os.symlink(os.path.join(site, top), link)
    return str(folder)


def new_venv(root, requirements: list[str]):
    """(bin folder, environment) of a fresh virtualenv in `root` that is lent the installed
    distributions of `requirements` (and nothing else of the test interpreter)."""
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=300)
    bin_dir = root / "venv" / "bin"
    purelib = subprocess.run(
        [bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with open(os.path.join(purelib, "lent_site_packages.pth"), "w") as f:
        f.write(lend(requirements, root / "lent") + "\n")
    activated = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": None,
        "VIRTUAL_ENV": str(root / "venv"),
    }
    return bin_dir, activated


def pip_install(bin_dir, *args):
    """`pip install ARGS` in the virtualenv; skips the module when pip cannot fetch the build
    backend here."""
    install = subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "-q", *map(str, args)],
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
    bin_dir, activated = new_venv(root, project_dependencies())
    pip_install(bin_dir, src)
    return bin_dir, activated


@pytest.fixture(scope="module")
def requirements_venv(tmp_path_factory):
    """(bin folder, environment) of a fresh virtualenv after `pip install -r
    requirements.txt`, for running the clone's main.py."""
    root = tmp_path_factory.mktemp("requirements_txt")
    bin_dir, activated = new_venv(root, requirements_file("requirements.txt"))
    pip_install(bin_dir, "-r", os.path.join(ROOT, "requirements.txt"))
    return bin_dir, activated


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("pip_install_runs")
    return {"tfds": str(root / "tfds"), "cache": str(root / "cache")}


def _env(venv, shared, **extra) -> dict:
    """The child's environment: the virtualenv activated, the checkout not importable."""
    bin_dir, activated = venv
    return env(shared, **activated, **extra)


# The compilation cache as a user gets it: the command line's own (--xla_cache, with its size
# bound), not one configured through JAX's environment variables.
OWN_CACHE = {"JAX_COMPILATION_CACHE_DIR": None, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": None}


def _run(venv, shared, cwd, program, *args, **extra):
    bin_dir, _ = venv
    return subprocess.run(
        [str(bin_dir / program), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env=_env(venv, shared, **extra),
    )


def _console(venv, shared, cwd, *args, **extra):
    return _run(venv, shared, cwd, "rekd-jax", *args, **extra)


def _no_cache_warning(stderr: str) -> None:
    assert "filelock" not in stderr and "compilation cache" not in stderr, stderr[-3000:]


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


def test_a_recipe_by_name_runs_names_rekd_jax_next_and_fills_the_cache(venv, shared, tmp_path):
    cache = tmp_path / "xla"
    result = _console(
        venv,
        shared,
        tmp_path,
        *KNN_SMOKE,
        f"--workdir={tmp_path / 'knn'}",
        f"--xla_cache={cache}",
        **OWN_CACHE,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "knn evaluation of init:alexnet" in result.stderr.splitlines()[0]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(
        "Next, another protocol: rekd-jax --config=linear_eval:tiny,runlocal "
    ), last
    _no_cache_warning(result.stderr)
    assert os.listdir(cache)


def test_the_torch_importer_without_torch_is_one_line(venv, shared, tmp_path):
    bin_dir, _ = venv
    absent = subprocess.run(
        [str(bin_dir / "python"), "-c", "import torch"], capture_output=True, env=_env(venv, shared)
    )
    assert absent.returncode != 0  # the dev extras' PyTorch is not lent
    src = tmp_path / "moco.pth.tar"
    src.write_bytes(b"PK\x03\x04 a checkpoint")
    result = _run(
        venv,
        shared,
        tmp_path,
        "python",
        "-m",
        "rekd_jax.tools.import_torch",
        "--arch=alexnet",
        f"--src={src}",
        f"--dst={tmp_path / 'encoder'}",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
    line = result.stderr.strip()
    assert line.startswith("FATAL: ModuleNotFoundError: ") and "PyTorch" in line
    assert "pip install torch" in line and '".[torch]"' in line
    assert not (tmp_path / "encoder").exists()


def test_after_requirements_txt_a_second_run_reads_the_cache(requirements_venv, shared, tmp_path):
    """`pip install -r requirements.txt`, then the clone's main.py twice with the command
    line's own compilation cache: the cache fills, and neither run warns about it (the second
    reads the entries of the first; JAX bounds the cache's size with filelock)."""
    cache = tmp_path / "xla"
    for name in ("first", "second"):
        result = _run(
            requirements_venv,
            shared,
            ROOT,
            "python",
            "main.py",
            *KNN_SMOKE,
            f"--workdir={tmp_path / name}",
            f"--xla_cache={cache}",
            **OWN_CACHE,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        _no_cache_warning(result.stderr)
        assert os.listdir(cache)


def test_the_readmes_python_snippet_logs_its_progress(venv, shared, tmp_path):
    bin_dir, _ = venv
    code = (
        "from rekd_jax import app\n"
        "from rekd_jax import config_lookup\n"
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


def test_without_torch_every_test_module_is_collected_and_the_torch_ones_skip(tmp_path):
    """`pip install -r requirements-test.txt` (the tests without PyTorch): pytest collects every
    test module, and those that need PyTorch are skipped rather than failing to import."""
    bin_dir, activated = new_venv(tmp_path, requirements_file("requirements-test.txt"))
    pip_install(bin_dir, "-r", os.path.join(ROOT, "requirements-test.txt"))
    result = subprocess.run(
        [str(bin_dir / "python"), "-m", "pytest", "--collect-only", "-q", "-rs", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={
            **env({"tfds": str(tmp_path / "tfds"), "cache": str(tmp_path / "cache")}, **activated)
        },
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    skips = re.findall(r"^SKIPPED \[(\d+)\] (\S+?):\d+: (.*)$", result.stdout, re.M)
    assert all("could not import 'torch'" in reason for _, _, reason in skips), skips
    assert sum(int(count) for count, _, _ in skips) == len(TORCH_TEST_MODULES), skips
    for module in TORCH_TEST_MODULES:
        assert f"{module}::" not in result.stdout
    assert "tests/evaluation/test_eval_protocols.py::" in result.stdout  # one test needs torch
