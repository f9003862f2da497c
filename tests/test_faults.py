"""The faults a battery of fault and bad-input runs found, each reproduced: unrelated
incomplete.* files, a refused resume or an evaluation rewriting config.json, a full disk (a
small tmpfs), file and folder names TFDS cannot store, the importer on files that are not
state_dicts, tracebacks on expected failures, silent changes (another teacher at the same
path, a deleted run_signature.json, a flipped bit in a checkpoint, a side item edited to {}),
and evaluation metrics after a resume. Real files, processes and file systems throughout.
"""

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from commands import ROOT, fatal_line, run
from PIL import Image

from rekd_jax import config_lookup
from rekd_jax.core import checkpoint as checkpoint_lib
from rekd_jax.core import errors, fileio, run_record
from rekd_jax.core import logging as logging_lib
from rekd_jax.data import prepare
from rekd_jax.evaluation import run as eval_run
from rekd_jax.models import heads, io
from rekd_jax.readout import features
from rekd_jax.training import pretrain, resume

PRETRAIN = ["main.py", "--config=default:tiny,runlocal"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    return {"tfds": str(root / "tfds"), "cache": str(root / "cache")}


@pytest.fixture(scope="module")
def pretrained(shared, tmp_path_factory):
    """A finished pre-training workdir (default:tiny,runlocal, 8 steps)."""
    workdir = tmp_path_factory.mktemp("faults_run") / "w"
    result = run(shared, *PRETRAIN, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _images(folder, n=4, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(folder / f"{i}.png")


# ----------------------------------------------------------------------------- 1. cleanup


def test_cleanup_removes_only_this_projects_leftovers(tmp_path):
    drafts = tmp_path / "incomplete.drafts"
    drafts.mkdir()
    (drafts / "paper.tex").write_text("y")
    dead = _dead_pid()
    leftover = tmp_path / f"incomplete.{dead}.{fileio._host()}.new.enc"
    leftover.mkdir()
    old = time.time() - 3 * 24 * 3600
    for path in (drafts, drafts / "paper.tex", leftover):
        os.utime(path, (old, old))
    with fileio.atomic_dir(str(tmp_path / "enc")) as tmp:
        (open(os.path.join(tmp, "data"), "w")).write("new")
    assert (drafts / "paper.tex").read_text() == "y"  # a user's folder is never touched
    assert not leftover.exists()
    assert sorted(os.listdir(tmp_path)) == ["enc", "incomplete.drafts"]


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------- 2. config.json


def test_a_refused_resume_and_a_misdirected_evaluation_leave_config_json(shared, pretrained):
    before = (pretrained / "config.json").read_text()
    line = fatal_line(
        run(shared, *PRETRAIN, f"--workdir={pretrained}", "--config.student.arch=resnet34")
    )
    assert line.startswith("FATAL: ConfigChangedError:") and "resnet34" in line
    line = fatal_line(
        run(
            shared,
            "main.py",
            "--config=knn_eval:tiny,runlocal",
            f"--workdir={pretrained}",
            f"--config.checkpoint={pretrained / 'encoders' / 'student'}",
        )
    )
    assert line.startswith("FATAL: WorkdirModeError: ") and "holds a pretrain run" in line
    assert f"--workdir={pretrained / 'eval_knn'}" in line
    assert (pretrained / "config.json").read_text() == before


def _contents(folder):
    """Every path under `folder` with the md5 of its bytes (None for a folder)."""
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() if p.is_file() else None
        for p in folder.rglob("*")
    }


def test_a_workdir_without_config_json_stays_its_runs(shared, pretrained, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(pretrained, workdir)
    (workdir / "config.json").unlink()
    before = _contents(workdir)
    line = fatal_line(
        run(
            shared,
            "main.py",
            "--config=knn_eval:tiny,runlocal",
            f"--workdir={workdir}",
            f"--config.checkpoint={workdir / 'encoders' / 'student'}",
        )
    )
    assert line.startswith(f"FATAL: WorkdirModeError: workdir {workdir} holds a pretrain run")
    assert f"--workdir={workdir / 'eval_knn'}" in line
    assert _contents(workdir) == before
    result = run(shared, *PRETRAIN, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]


def test_what_a_run_left_decides_the_mode_of_its_workdir(tmp_path):
    evaluation = tmp_path / "e"  # a kNN evaluation's workdir without its config.json
    evaluation.mkdir()
    (evaluation / "metrics.jsonl").write_text(
        '{"step": 0, "knn/top1": 40.0}\n{"step": 0, "knn/top5": 90.0}\n'
    )
    (evaluation / "results_knn.json").write_text('{"top1": 40.0, "top5": 90.0}\n')
    (evaluation / ".lock").write_text("")  # every run leaves its lock file, emptied
    before = _contents(evaluation)
    with pytest.raises(run_record.WorkdirModeError, match=r"holds a knn run \(its results_knn"):
        pretrain.train_and_evaluate(
            config_lookup.load_config("default:tiny,runlocal"), str(evaluation)
        )
    assert _contents(evaluation) == before  # not even an empty checkpoints/
    left = tmp_path / "p"  # a pre-training's metrics, its config.json rewritten by another mode
    left.mkdir()
    (left / "metrics.jsonl").write_text(
        '{"hparams": {"mode": "pretrain"}}\n{"step": 8, "train/loss": 6.1}\n'
    )
    (left / "config.json").write_text('{"mode": "knn"}\n')
    knn = config_lookup.load_config("knn_eval:tiny,runlocal")
    with pytest.raises(run_record.WorkdirModeError, match=r"holds a pretrain run \(its metrics"):
        run_record.check_mode(str(left), knn)
    run_record.check_mode(str(evaluation), knn)  # its own mode goes on


# ----------------------------------------------------------------------------- 3. full disk


def _on_a_small_disk(tmp_path, size, script):
    """Runs the bash `script` with a `size` tmpfs mounted at DISK (a private mount namespace;
    as root, or as a user with user namespaces). Skips when neither can mount."""
    disk = tmp_path / "disk"
    disk.mkdir()
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("a small file system needs util-linux's unshare, which is not installed")
    base = [unshare, "-m"] if os.geteuid() == 0 else [unshare, "-r", "-m"]
    probe = subprocess.run(
        [*base, "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs here (no privilege and no user namespaces: "
            f"{probe.stderr.strip()})"
        )
    body = f"mount -t tmpfs -o size={size} tmpfs {disk} && cd {ROOT} && {script}"
    subprocess.run([*base, "bash", "-c", body], check=True, timeout=900)
    return disk


def _one_disk_full_line(path):
    text = path.read_text()
    assert "Traceback" not in text and "Task exception" not in text, text[-3000:]
    fatal = [line for line in text.splitlines() if line.startswith("FATAL")]
    assert len(fatal) == 1 and fatal[0].startswith(
        "FATAL: DiskFullError: no space left on the device holding "
    ), text[-3000:]
    assert "free space or choose another location" in fatal[0]
    return fatal[0]


def test_a_full_disk_is_one_line_for_every_command(shared, tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    weights = tmp_path / "mnv3.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), weights)
    _images(tmp_path / "src" / "train" / "a", 40)
    _images(tmp_path / "src" / "train" / "b", 40, seed=1)
    out = tmp_path / "out"
    out.mkdir()
    py = f"env PYTHONPATH={ROOT} JAX_PLATFORMS=cpu {sys.executable}"
    disk = tmp_path / "disk"
    main = lambda workdir: (
        f"{py} main.py --config=default:tiny,runlocal --workdir={disk}/{workdir} "
        f"--config.data.data_dir={shared['tfds']} --xla_cache={shared['cache']}"
    )
    fill = lambda left: (
        f"head -c $(( $(df --output=avail -B1 {disk} | tail -1) - {left} )) "
        f"/dev/zero >> {disk}/fill"
    )
    script = "; ".join(
        [
            f"{py} -m rekd_jax.tools.import_torch --arch mobilenetv3_small --src {weights} "
            f"--dst {disk}/enc 2> {out}/import1.err",
            fill(1_500_000),  # less than a checkpoint and an encoder of the run
            f"{main('w')} 2> {out}/pretrain.err; echo $? > {out}/pretrain.rc",
            f"{main('w')} 2> {out}/rerun.err; echo $? > {out}/rerun.rc",
            f"{py} -m rekd_jax.tools.import_torch --arch mobilenetv3_small --src {weights} "
            f"--dst {disk}/enc --overwrite 2> {out}/import.err; echo $? > {out}/import.rc",
            fill(20_000),
            f"{py} -m rekd_jax.data.prepare --src {tmp_path / 'src'} --name pictures "
            f"--data_dir {disk}/tfds 2> {out}/prepare.err; echo $? > {out}/prepare.rc",
            f"ls {disk}/enc > {out}/enc.ls",
            f"cat /dev/zero >> {disk}/fill 2> /dev/null",  # 100% full: not even the lock fits
            f"{main('fresh')} 2> {out}/full_pretrain.err; echo $? > {out}/full_pretrain.rc",
            f"{main('w')} 2> {out}/full_rerun.err; echo $? > {out}/full_rerun.rc",
            f"{py} main.py --config=knn_eval:tiny,runlocal --config.checkpoint={disk}/enc "
            f"--workdir={disk}/eval --config.data.data_dir={shared['tfds']} "
            f"--xla_cache={shared['cache']} 2> {out}/full_eval.err; echo $? > {out}/full_eval.rc",
        ]
    )
    _on_a_small_disk(tmp_path, "12m", script)
    for name in ("pretrain", "rerun", "import", "prepare"):
        assert (out / f"{name}.rc").read_text().strip() == "2", (out / f"{name}.err").read_text()
        line = _one_disk_full_line(out / f"{name}.err")
        assert str(disk) in line
    assert "spec.json" in (out / "enc.ls").read_text()  # the encoder written before is intact
    for name, workdir in (("pretrain", "fresh"), ("rerun", "w"), ("eval", "eval")):
        err = out / f"full_{name}.err"
        assert (out / f"full_{name}.rc").read_text().strip() == "2", err.read_text()
        assert f"the device holding {disk}/{workdir}," in _one_disk_full_line(err)


# ----------------------------------------------------------------------------- 4, 8: names


def test_names_tfds_cannot_store_are_skipped_and_listed(tmp_path):
    src = tmp_path / "src"
    for cls in ("a", "b", "c\nd"):
        _images(src / "train" / cls, 3)
    bad_file = os.path.join(os.fsencode(src / "train" / "a"), b"caf\xe9.png")
    shutil.copy(src / "train" / "a" / "0.png", bad_file)
    lines = []
    report = prepare.prepare(
        str(src), "names", str(tmp_path / "tfds"), num_workers=2, log=lines.append
    )
    assert report["classes"] == ["a", "b"]
    assert {(s["path"], s["reason"]) for s in report["skipped"]} == {
        ("train/c\\nd", "bad_name"),
        ("train/a/caf\\xe9.png", "bad_name"),
    }
    assert any("bad_name: train/a/caf\\xe9.png" in line for line in lines)
    assert report["splits"]["train"]["examples"] == 6


# ----------------------------------------------------------------------------- 5, 7: importer


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("torch_files")
    (root / "garbage.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save(torch.zeros(3), root / "tensor.pth")
    torch.save([torch.zeros(3)], root / "list.pth")
    torch.save({1: torch.zeros(3)}, root / "intkeys.pth")
    torch.save({"fc.weight": torch.zeros(3, 4), "fc.bias": torch.zeros(3)}, root / "small.pth")
    return root


@pytest.mark.parametrize(
    "name,extra,message",
    [
        (
            "garbage",
            [],
            "is not a PyTorch checkpoint (neither torch.save's zip format nor a pickle",
        ),
        ("tensor", [], "the checkpoint holds a Tensor, not a state_dict"),
        ("list", [], "the checkpoint holds a list, not a state_dict"),
        ("intkeys", [], "keys must be parameter names (strings); it has int keys"),
        (
            "small",
            ["--override", "width_multiplier=abc"],
            "the model overrides {'width_multiplier': 'abc'} do not fit 'resnet18'",
        ),
    ],
)
def test_importer_input_that_is_not_a_state_dict_is_one_line(
    torch_files, tmp_path, capsys, name, extra, message
):
    from rekd_jax.tools import import_torch

    status = import_torch.main(
        [
            "--arch",
            "resnet18",
            "--src",
            str(torch_files / f"{name}.pth"),
            "--dst",
            str(tmp_path / "enc"),
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and "--trust_pickle" not in err
    assert err.strip().splitlines()[-1].startswith("FATAL: ValueError: ") and message in err


# ----------------------------------------------------------------------------- 7: prepare


def test_prepare_with_no_decodable_image_or_no_worker_is_one_line(tmp_path, capsys):
    for cls in ("a", "b"):  # headers that read, data that does not decode (truncated)
        _images(tmp_path / "src" / cls, 2)
        for png in (tmp_path / "src" / cls).iterdir():
            os.truncate(png, os.path.getsize(png) // 2)
    args = ["--src", str(tmp_path / "src"), "--name", "broken", "--data_dir", str(tmp_path / "d")]
    assert prepare.main(args) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("FATAL: PrepareError: no image of split train of ")
    )
    assert prepare.main([*args, "--num_workers", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "FATAL: PrepareError: --num_workers 0: give at least 1 (the reading and decoding "
        "threads; e.g. the number of CPU cores)"
    )


# ----------------------------------------------------------------------------- 7: damaged files


def test_a_truncated_dataset_file_is_one_line(shared, tmp_path):
    data = tmp_path / "tfds"
    made = run(
        shared,
        "-c",
        f"from rekd_jax.data import embedded; embedded.build_rekd_shapes({str(data)!r}, 'tiny')",
    )
    assert made.returncode == 0, made.stderr[-2000:]
    (record,) = (data / "rekd_shapes" / "tiny" / "2.0.0").glob("*train.array_record*")
    os.truncate(record, os.path.getsize(record) // 2)
    line = fatal_line(
        run(
            shared,
            "main.py",
            "--config=knn_eval:tiny,runlocal",
            f"--workdir={tmp_path / 'e'}",
            f"--config.data.data_dir={data}",
            "--config.checkpoint=init:alexnet:cifar_stem=true",
        )
    )
    assert line.startswith("FATAL: DatasetCorruptError: dataset 'rekd_shapes/tiny' split 'train'")
    assert "truncated or damaged; delete " in line


def test_an_unreadable_feature_cache_is_recomputed(tmp_path, caplog):
    path = str(tmp_path / "pooled_test.npz")
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 truncated")
    fresh = ({"features": np.ones((2, 3), np.float32)}, np.array([0, 1], np.int32))
    feats, labels = features.cached_features(path, "key", lambda: fresh)
    assert np.array_equal(feats["features"], fresh[0]["features"])
    assert "cannot be read" in caplog.text
    again, _ = features.cached_features(path, "key", lambda: pytest.fail("not recomputed"))
    assert np.array_equal(again["features"], fresh[0]["features"])


def test_study_and_report_failures_are_one_line(shared, tmp_path):
    line = fatal_line(
        run(
            shared,
            "-m",
            "rekd_jax.experiments.cifar10",
            "--scale=cpu",
            f"--workdir={tmp_path / 's'}",
            f"--data_dir={tmp_path / 'd'}",
            f"--src={tmp_path / 'nowhere'}",
        )
    )
    assert line.startswith("FATAL: PrepareError: --src ")
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(
        '{"step": 1, "train/loss": 1.0}\n{"step": 2, "tr\n{"step": 3, "train/loss": 0.5}\n'
    )
    line = fatal_line(run(shared, "-m", "rekd_jax.tools.report", str(run_dir)))
    assert "metrics.jsonl line 2 is not JSON" in line and "repair or delete that line" in line
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "features").mkdir()
    (run_dir / "features" / "pooled_test.npz").write_bytes(b"not a zip")
    line = fatal_line(run(shared, "-m", "rekd_jax.tools.report", str(run_dir)))
    assert "is not a readable feature cache" in line and "delete it" in line
    # a study's results.json: unreadable, of another kind, or with no stage that has a figure
    bad, other, early = tmp_path / "bad.json", tmp_path / "other.json", tmp_path / "early.json"
    bad.write_text("{not json")
    other.write_text('{"seeds": [0, 1], "rows": {}}')  # a quick start over seeds
    early.write_text('{"scale": "cpu", "rows": [], "mechanism": {}, "quality": []}')
    for path, expected in (
        (bad, "is not readable JSON"),
        (other, "is not a CIFAR-10 study's results.json; for a quick start or a run, give its"),
        (early, "nothing to plot"),
        (tmp_path / "missing.json", "no such file"),
    ):
        result = run(shared, "-m", "rekd_jax.tools.report", str(path))
        assert result.returncode == 2 and "Traceback" not in result.stderr, path
        assert expected in fatal_line(result), path


# ----------------------------------------------------------------------------- 8: silent changes


def _encoder(path, seed):
    spec = {
        "arch": "resnet18",
        "overrides": {"cifar_stem": True, "width_multiplier": 0.125},
        "projector": {"hidden": 64, "dim": 16, "bn": False, "layers": 2},
        "source": "test",
    }
    variables = heads.build_encoder(spec).init(
        jax.random.PRNGKey(seed), jnp.zeros((1, 16, 16, 3)), train=False
    )
    io.save_encoder(str(path), spec, variables)


def test_another_teacher_at_the_same_path_is_a_change(tmp_path):
    teacher = tmp_path / "teacher"
    _encoder(teacher, 0)
    config = config_lookup.load_config("alexnet:offline,tiny,runlocal")
    config.teacher.checkpoint = str(teacher)
    workdir = str(tmp_path / "w")
    os.makedirs(workdir)
    first = resume.check_signature(config, workdir, resuming=False)
    assert resume.TEACHER_FINGERPRINT in first
    shutil.copytree(teacher, tmp_path / "copy")  # the same weights elsewhere: the same teacher
    config.teacher.checkpoint = str(tmp_path / "copy")
    resume.check_signature(config, workdir, resuming=True)
    shutil.rmtree(teacher)
    _encoder(teacher, 1)
    config.teacher.checkpoint = str(teacher)
    with pytest.raises(resume.ConfigChangedError, match="is not the teacher this run was trained"):
        resume.check_signature(config, workdir, resuming=True)


def test_a_deleted_signature_is_rebuilt_from_the_newest_checkpoint(shared, pretrained, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(pretrained, workdir)
    (workdir / resume.SIGNATURE_FILE).unlink()
    result = run(
        shared, *PRETRAIN, f"--workdir={workdir}", "--config.optimizer.base_learning_rate=0.5"
    )
    line = fatal_line(result)
    assert line.startswith("FATAL: ConfigChangedError:")
    assert "base_learning_rate: 0.03 -> 0.5" in line
    assert "rebuilt from the newest checkpoint" in result.stderr


def _two_checkpoints(directory):
    ckpt = checkpoint_lib.Checkpointer(directory, async_save=False)
    first = {"w": np.arange(4000, dtype=np.float32).reshape(40, 100), "s": np.int32(1)}
    second = {"w": first["w"] + 1, "s": np.int32(2)}
    ckpt.save(1, first, {"data": {"epoch": 1}})
    ckpt.save(2, second, {"data": {"epoch": 2}})
    ckpt.close()
    return first, second


def test_a_flipped_bit_in_checkpoint_data_falls_back(tmp_path):
    directory = str(tmp_path / "ckpt")
    first, second = _two_checkpoints(directory)
    data = max(
        (p for p in (tmp_path / "ckpt" / "2").rglob("*") if p.is_file() and "/d/" in str(p)),
        key=os.path.getsize,
    )
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))
    ckpt = checkpoint_lib.Checkpointer(directory, async_save=False)
    with pytest.raises(checkpoint_lib.CheckpointCorruptError, match="does not match its checksums"):
        ckpt.restore(first, 2)
    tree, extra, step = ckpt.restore_newest(first)
    assert step == 1 and extra == {"data": {"epoch": 1}} and np.array_equal(tree["w"], first["w"])
    assert os.listdir(tmp_path / "ckpt_unrestorable")[0].startswith("2.")
    ckpt.close()


def test_a_side_item_edited_to_nothing_falls_back(tmp_path):
    directory = str(tmp_path / "ckpt")
    first, _ = _two_checkpoints(directory)
    (tmp_path / "ckpt" / "2" / "extra" / "metadata").write_text("{}")
    ckpt = checkpoint_lib.Checkpointer(directory, async_save=False)
    _, extra, step = ckpt.restore_newest(first)
    assert step == 1 and extra["data"] == {"epoch": 1}
    ckpt.close()


# ----------------------------------------------------------------------------- 9: minor


def test_the_nan_message_says_how_to_resume_with_another_learning_rate(tmp_path):
    ckpt = checkpoint_lib.Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    with pytest.raises(pretrain.NonFiniteError, match="--config.allow_config_change=True"):
        pretrain._check_finite([(4, {"loss": float("nan")})], ckpt)
    ckpt.close()


def test_evaluation_metrics_hold_each_epoch_once_after_a_resume(tmp_path):
    config = config_lookup.load_config("linear_eval:tiny,runlocal")
    config.checkpoint = "init:alexnet:cifar_stem=true"
    config.data.data_dir = str(tmp_path / "tfds")
    config.linear.update(fast=True, epochs=3)
    config.tensorboard = "off"
    workdir = tmp_path / "e"
    eval_run.evaluate(config, str(workdir))
    shutil.rmtree(workdir / "ckpt_linear" / "3")  # as if killed after epoch 3's record
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "linear/tr')  # and in the middle of a write
    eval_run.evaluate(config, str(workdir))
    records = logging_lib.read_jsonl(str(workdir / "metrics.jsonl"))
    epochs = [r["step"] for r in records if "linear/train_loss" in r]
    assert epochs == [1, 2, 3]
    assert all(
        line.startswith("{") and line.endswith("}")
        for line in (workdir / "metrics.jsonl").read_text().splitlines()
    )


def test_tfds_advice_to_install_opencv_is_not_shown():
    flt = logging_lib._LibraryInfoFilter()
    record = logging.LogRecord(
        "absl",
        logging.WARNING,
        "/x/tensorflow_datasets/core/features/image_feature.py",
        1,
        "OpenCV is not installed. We recommend using OpenCV because it is faster",
        None,
        None,
    )
    assert not flt.filter(record)


def test_disk_full_reports_name_the_folder_being_written():
    nested = RuntimeError(
        'Failed to finalize writing of split "train": write() failed: No space '
        "left on device; writing /d/tfds/x/incomplete.1.h.new.1.0.0/_build/f"
    )
    assert errors.disk_full_path(nested) == "/d/tfds/x"
    assert errors.one_line(OSError(28, "No space left on device", "/w/checkpoints")).startswith(
        "FATAL: DiskFullError: no space left on the device holding /w/checkpoints, free space"
    )
