"""The command line (rekd_jax.cli, main.py): exit statuses and one-line messages for bad input,
configs by file or recipe name from anywhere, the console (plain lines, short metric lines, a
first line before anything is built), the persistent XLA compilation cache, the filter of
XLA's slow-compilation banner, and app.run from Python logging like the command line."""

import os
import re
import subprocess
import sys

import pytest
from commands import ROOT, fatal_line, run

from rekd_jax import cli, config_lookup
from rekd_jax.core import invocation, run_record

MAIN = os.path.join(ROOT, "main.py")
TIME = re.compile(r"^\d\d:\d\d:\d\d ")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {"tfds": str(root / "tfds"), "cache": str(root / "cache")}


def test_help_exits_0_and_shows_both_ways_of_naming_a_config(shared):
    result = run(shared, MAIN, "-h")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Usage: python " in result.stdout and "--config=NAME[:VARIANT,...]" in result.stdout
    assert "alexnet:tiny,runlocal" in result.stdout and "--xla_cache" in result.stdout


@pytest.mark.parametrize(
    "args,error,words",
    [
        ((), "FlagError", ["--config is missing", "--workdir=DIR"]),
        (("--config=alexnet:tiny",), "FlagError", ["--workdir is missing"]),
        (
            ("--config=configs/alexnet.py:runlokal", "--workdir=w"),
            "ConfigError",
            ["unknown variant 'runlokal'", "did you mean 'runlocal'?", "offline, online, mocov2"],
        ),
        (
            ("--config=configs/alexnt.py", "--workdir=w"),
            "ConfigNotFoundError",
            [
                "no config file 'configs/alexnt.py'",
                "did you mean 'alexnet'?",
                "alexnet, cifar10_student",
            ],
        ),
        (
            ("--config=alexnet:tiny", "--workdir=w", "--bogus=1"),
            "FlagError",
            ["Unknown command line flag 'bogus'"],
        ),
        (
            ("--config=alexnet:tiny", "--workdir=w", "--config.global_batch_size=abc"),
            "FlagError",
            ["--config.global_batch_size=abc"],
        ),
        (
            ("--config=alexnet:tiny", "--workdir=w", "--config.nosuch=1"),
            "FlagError",
            [
                "--config.nosuch=1: unknown config field 'nosuch'",
                "the fields of config are allow_config_change,",
            ],
        ),
        (
            ("--config=alexnet:tiny", "--workdir=w", "--config.num_train_step=3"),
            "FlagError",
            ["unknown config field 'num_train_step'; did you mean 'num_train_steps'?"],
        ),
        (
            ("--config=alexnet:tiny", "--workdir=w", "--config.optimizer.base_lr=1"),
            "FlagError",
            [
                "unknown config field 'base_lr'",
                "the fields of config.optimizer are base_learning_rate,",
            ],
        ),
        (
            ("--config=alexnet:tiny", "--workdir=w", "leftover"),
            "FlagError",
            ["unexpected arguments leftover"],
        ),
    ],
)
def test_bad_input_is_one_fatal_line_with_exit_2(shared, tmp_path, args, error, words):
    line = fatal_line(run(shared, MAIN, *args, cwd=tmp_path))  # from outside the clone
    assert line.startswith(f"FATAL: {error}: ")
    assert "Traceback" not in line and 'File "' not in line and len(line) < 600
    for word in words:
        assert word in line


def test_a_config_file_that_fails_is_one_line(shared, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import nosuchmodule\n")
    line = fatal_line(run(shared, MAIN, f"--config={bad}", "--workdir=w", cwd=tmp_path))
    assert line.startswith("FATAL: ConfigError: ") and "ModuleNotFoundError at bad.py:1" in line


def test_configs_are_found_by_file_or_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    by_name = config_lookup.load_config("knn_eval:tiny,runlocal")
    assert by_name.mode == "knn" and by_name.data.dataset == "rekd_shapes/tiny"
    path, variant = config_lookup.find_config("configs/alexnet.py:tiny")  # not here: the clone's
    assert path == os.path.join(ROOT, "configs", "alexnet.py") and variant == "tiny"
    assert invocation.config_argument("knn_eval", "tiny") == "knn_eval:tiny"
    monkeypatch.chdir(ROOT)
    assert invocation.config_argument("knn_eval", "tiny") == "configs/knn_eval.py:tiny"
    assert invocation.entry_command() == "python main.py"


def test_installed_configs_are_found_when_the_package_has_them(tmp_path, monkeypatch):
    """rekd_jax/configs (configs shipped in the package) is the folder after the clone's."""
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "only_packaged.py").write_text(
        "import ml_collections\n\n\ndef get_config(arg=None):\n"
        "    return ml_collections.ConfigDict({'mode': 'knn', 'arg': arg})\n"
    )
    monkeypatch.setattr(config_lookup, "INSTALLED_CONFIGS", str(folder))
    assert config_lookup.config_folders()[-1] == str(folder)
    assert config_lookup.load_config("only_packaged:x").arg == "x"


def test_the_console_is_plain_short_and_starts_with_what_runs(shared, tmp_path):
    result = run(shared, MAIN, "--config=default:tiny,runlocal", f"--workdir={tmp_path / 'w'}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert lines[0].endswith(
        f"pre-training mocov2 (resnet18 student) on rekd_shapes/tiny, 8 "
        f"steps at batch 32, in {tmp_path / 'w'}"
    ), lines[:3]
    assert "building the models" in lines[1]
    assert all(TIME.match(line) for line in lines), lines  # no absl prefix, no stray output
    metrics = [line for line in lines if "] loss=" in line]
    assert metrics and all(len(line) <= 9 + 120 for line in metrics), metrics
    nxt = result.stdout.splitlines()[-1]
    assert nxt.startswith(
        "Next, evaluate the student: python main.py --config=configs/linear_eval.py:tiny,runlocal "
    )


def test_the_xla_cache_is_on_by_default_in_the_user_cache_and_can_be_turned_off(shared, tmp_path):
    env = {
        "XDG_CACHE_HOME": str(tmp_path / "home_cache"),
        "JAX_COMPILATION_CACHE_DIR": None,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": None,
        "REKD_JAX_XLA_CACHE": None,
    }
    args = ["--config=knn_eval:tiny,runlocal", "--config.checkpoint=init:alexnet:cifar_stem=true"]
    first = run(shared, MAIN, *args, f"--workdir={tmp_path / 'a'}", extra_env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    cache = tmp_path / "home_cache" / "rekd-jax" / "xla"
    assert len(os.listdir(cache)) > 0
    off = run(
        shared,
        MAIN,
        *args,
        f"--workdir={tmp_path / 'b'}",
        "--xla_cache=off",
        extra_env={**env, "XDG_CACHE_HOME": str(tmp_path / "other")},
    )
    assert off.returncode == 0, off.stderr[-3000:]
    assert not (tmp_path / "other").exists()


BANNER = (
    b"E1205 01:45:12.123456   12345 slow_operation_alarm.cc:140] \n"
    b"********************************\n"
    b"[Compiling module jit_step] Very slow compile? If you want to file a bug, run with "
    b"envvar XLA_FLAGS=--xla_dump_to=/tmp/foo and attach the results.\n"
    b"********************************\n"
)


def test_the_slow_compile_banner_is_dropped_and_everything_else_passes():
    other = b"E1205 01:45:13.000000   12345 other.cc:1] a real error\n"
    stars = b"********************************\nnot a banner\n"
    out = subprocess.run(
        [sys.executable, "-S", "-I", "-c", cli._BANNER_FILTER],
        input=other + BANNER + stars + other,
        capture_output=True,
        timeout=60,
    )
    assert out.stdout == other + stars + other


def test_native_stderr_goes_through_the_filter_and_python_stderr_does_not(tmp_path):
    code = (
        f"import os, sys; sys.path.insert(0, {ROOT!r}); from rekd_jax import cli; "
        "cli.hide_slow_compile_banner(); os.write(2, " + repr(BANNER) + "); "
        "os.write(2, b'native line\\n'); print('python line', file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    err = out.stderr.decode()
    assert out.returncode == 0 and "native line" in err and "python line" in err
    assert "Very slow compile" not in err


def test_app_run_from_python_logs_like_the_command_line(shared, tmp_path):
    code = (
        "from rekd_jax import app, config_lookup; "
        "c = config_lookup.load_config('knn_eval:tiny,runlocal'); "
        "c.checkpoint = 'init:alexnet:cifar_stem=true'; "
        f"app.run(c, {str(tmp_path / 'w')!r})"
    )
    result = run(shared, "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert TIME.match(lines[0]) and "knn evaluation of init:alexnet" in lines[0], lines[:3]
    assert any("compiling the feature extractor" in line for line in lines)


def test_the_teacher_note_about_a_recipe_default_is_not_a_console_line(tmp_path, caplog):
    spec = {"arch": "resnet18", "overrides": {}, "source": "rekd_jax mocov2 step 6"}
    with caplog.at_level("INFO"):
        run_record.record_teacher(str(tmp_path), str(tmp_path / "t"), spec, "resnet50")
    assert "offline teacher: resnet18" in caplog.text and "is not used" not in caplog.text
