"""The CIFAR-10 study: the plan of every scale (teachers first, validation before test, equal
student steps, seeds, snapshots), the choices made on validation rows only, and a real run of
the tiny scale that writes results, tables and figures, then skips everything when rerun; the
committed CPU results and docs/results.md's tables of them."""

import json
import os

import pytest

from rekd_jax.experiments import cifar10, study_report
from rekd_jax.tools import report


@pytest.mark.parametrize("scale", sorted(cifar10.SCALES))
def test_plan_of_every_scale(scale):
    s = cifar10.SCALES[scale]
    val = cifar10.evaluation_config(s, "/data", "val")
    test = cifar10.evaluation_config(s, "/data", "test")
    assert (val.data.train_split, val.data.eval_split) == (s.val_bank_split, s.val_split)
    assert (test.data.train_split, test.data.eval_split) == (s.train_split, s.test_split)
    teachers = cifar10.teacher_arms(s, "/data")
    assert [a.name for a in teachers[:3]] == [
        "random_init/teacher",
        "teacher/mocov2",
        "teacher/supervised",
    ]
    mocov2, supervised = teachers[1].config, teachers[2].config
    assert mocov2.data.train_split == s.train_split and mocov2.method == "mocov2"
    assert tuple(mocov2.export_encoder_steps) == s.snapshot_steps()
    # The labelled teacher never sees the validation images.
    assert supervised.method == "supervised" and supervised.data.train_split == s.val_bank_split
    assert [a.source for a in teachers[3:]] == [
        f"teacher/mocov2/encoders/student_step{n}" for n in s.snapshot_steps()
    ]
    choices = {"rekd": s.readings[-1], "seed": s.seed_temperatures[-1]}
    lrs = {arm: s.lr_grid[0] for arm in cifar10.ARMS}
    search = cifar10.search_arms(s, "/data", val)
    grid = cifar10.grid_arms(s, "/data", val, choices)
    final = cifar10.final_arms(s, "/data", test, choices, lrs)
    quality = cifar10.quality_arms(s, "/data", test, choices, lrs)
    students = cifar10.student_arms(s, "/data", test, choices, lrs)
    assert all(a.evaluation is val for a in search + grid)
    assert all(a.evaluation is test for a in final + quality + students)
    assert len(search) == 1 + len(s.readings) + len(s.seed_temperatures)
    # The search is a shorter proxy at the middle lr; the grid tunes the methods only.
    assert {a.config.num_train_steps for a in search if a.trained} == {s.search_steps}
    assert {a.config.optimizer.base_learning_rate for a in search if a.trained} == {
        cifar10.middle_lr(s)
    }
    assert s.search_steps < s.student_steps
    assert len(grid) == len(cifar10.TUNED) * len(s.lr_grid)
    assert {a.config.num_train_steps for a in grid} == {s.student_steps}
    # Seed 0 of each tuned method re-scores its grid run at the chosen lr and setting; the
    # ablations that take ReKD's lr train every seed.
    reused = {a.name: a.reuse for a in final if a.reuse}
    assert reused["final/rekd/s0"] == cifar10.select_name("rekd", s.readings[-1], s.lr_grid[0])
    assert set(reused) == {f"final/{arm}/s0" for arm in cifar10.TUNED}
    assert len([a for a in final if a.trained]) == len(cifar10.ARMS) * s.seeds - len(cifar10.TUNED)
    rekd = [a for a in final if a.name == "final/rekd/s1"][0].config
    assert rekd.optimizer.base_learning_rate == s.lr_grid[0] and rekd.rekd.teacher == "offline"
    oracle = [a for a in final if a.name == "final/rekd_oracle/s1"][0].config
    assert oracle.rekd.relation == "oracle" and oracle.rekd.teacher == "none"
    assert {a.teacher_encoder for a in quality} == {f"student_step{n}" for n in s.snapshot_steps()}
    assert len(quality) == 2 * s.quality_seeds * len(s.teacher_snapshots)
    trained = [a for a in students if a.trained]
    assert {a.config.num_train_steps for a in trained} == {s.five_student_steps}
    assert len(trained) == 3 * (len(cifar10.STUDENT_FAMILIES) - 1)
    for arm in teachers + search + grid + final + quality + students:
        if arm.trained:  # a run's kNN monitor scores validation, never the test split
            assert arm.config.knn_monitor.query_split == s.val_split


def test_choices_read_validation_rows_only():
    rows = [
        {"name": "a", "eval": {"knn": {"top1": 50.0}, "linear": {"top1": 60.0}}},
        {"name": "b", "eval": {"knn": {"top1": 52.0}, "linear": {"top1": 40.0}}},
        {"name": "c", "eval": {"knn": {"top1": 52.0}, "linear": {"top1": 41.0}}},
    ]
    assert cifar10.choose(rows)["name"] == "c"
    ours = [{"seed": s, "eval": {"knn": {"top1": v}}} for s, v in enumerate((60.0, 61.0, 62.0))]
    theirs = [{"seed": s, "eval": {"knn": {"top1": v}}} for s, v in enumerate((55.0, 59.5, 56.0))]
    m = cifar10.margin(ours, theirs, "knn")
    assert m["mean"] == pytest.approx(4.1666, abs=1e-3)
    assert (m["paired_min"], m["paired_max"]) == (1.5, 6.0) and m["outside_seed_spread"]
    assert not cifar10.margin(ours, ours, "knn")["outside_seed_spread"]


def test_quality_summary_of_a_stage_cut_after_one_arm():
    """Rows of an interrupted teacher-quality stage: SEED ran from the 5% snapshot, ReKD not."""
    scale = cifar10.SCALES["cpu"]

    def row(name, knn, linear, **extra):
        return {"name": name, "eval": {"knn": {"top1": knn}, "linear": {"top1": linear}}, **extra}

    rows = [row(f"final/mocov2/s{s}", 48.0 + s, 46.0) for s in range(2)]
    rows += [row(cifar10.snapshot_arm_name(0.05), 39.0, 41.0)]
    rows += [row(f"quality/5pct/seed/s{s}", 40.0 + s, 42.0, method="seed") for s in range(2)]
    (point,) = cifar10.quality_summary(scale, rows)
    assert point["teacher"] == "5%" and point["label_precision"] is None and "rekd" not in point
    assert point["seed"]["knn"]["values"] == [-8.5, -7.5]
    table = "\n".join(study_report.quality_table({"quality": [point], "chance": 0.1}))
    assert "| 5% | 39.0 | - | -8.0 [-8.5, -7.5] | -4.0 [-4.0, -4.0] | - | - |" in table


def _rounded(value):
    """VALUE with every float rounded to 6 decimals (JSON's float text round trip)."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return round(value, 6) if isinstance(value, float) else value


def test_committed_cpu_results_hold_their_rows_summaries_and_redraw(tmp_path):
    """docs/study_cifar10_cpu/results.json: its grid, mechanism, quality, students and time
    summaries are those of its own rows, and the report redraws its figures from the file alone."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "study_cifar10_cpu")
    path = os.path.join(path, "results.json")
    with open(path) as f:
        committed = json.load(f)
    recomputed = {"rows": committed["rows"], "choices": committed["choices"]}
    cifar10.summarize(cifar10.SCALES[committed["scale"]], recomputed)
    for key in ("grid", "mechanism", "quality", "students", "seconds"):
        assert _rounded(recomputed[key]) == _rounded(committed[key]), key
    assert report.main([path, "--out", str(tmp_path)]) == 0
    for name in ("mechanism", "quality", "selection", "mocov2_curve", "students"):
        assert os.path.getsize(tmp_path / f"{name}.png") > 10000


def _markdown_rows(text: str, header: str) -> dict[str, list[str]]:
    """First cell -> the other cells (bold marks dropped) of the Markdown table whose header
    row starts with HEADER."""
    lines = text[text.index(header) :].splitlines()
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("**", "") for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def _spread(stats: dict, signed: bool = False) -> str:
    f = "+.1f" if signed else ".1f"
    return f"{stats['mean']:{f}} [{stats['min']:{f}}, {stats['max']:{f}}]"


def test_results_md_study_tables_are_the_committed_numbers():
    """docs/results.md's teachers, mechanism, teacher-quality and five-student tables print the
    numbers of docs/study_cifar10_cpu/results.json (each cell rounded as the table shows it)."""
    docs = os.path.join(os.path.dirname(__file__), "..", "..", "docs")
    with open(os.path.join(docs, "study_cifar10_cpu", "results.json")) as f:
        committed = json.load(f)
    with open(os.path.join(docs, "results.md")) as f:
        text = f.read()

    teachers = _markdown_rows(text, "| teacher | steps | kNN (test) |")
    rows = {r["name"]: r for r in committed["rows"]}
    for name, label in (
        ("random_init/teacher", "random init"),
        ("teacher/mocov2", "MoCo v2 (self-supervised"),
        ("teacher/mocov2_5pct", "MoCo v2 at 5%"),
        ("teacher/mocov2_15pct", "MoCo v2 at 15%"),
        ("teacher/mocov2_40pct", "MoCo v2 at 40%"),
        ("teacher/supervised", "supervised cross-entropy"),
    ):
        (cells,) = [c for first, c in teachers.items() if first.startswith(label)]
        scores = [f"{rows[name]['eval'][mode]['top1']:.1f}" for mode in cifar10.MODES]
        assert cells[1:3] == scores, name

    mechanism = _markdown_rows(text, "| arm | setting | peak lr |")
    labels = {
        "mocov2": "MoCo v2",
        "seed": "SEED",
        "rekd": "ReKD (offline)",
        "rekd_supervised": "ReKD from the supervised teacher (oracle ablation)",
        "rekd_oracle": "ReKD with true-label relations (oracle ablation: SupCon, no teacher)",
    }
    for arm, label in labels.items():
        stats = committed["mechanism"]["arms"][arm]
        lr = committed["choices"]["lr"][arm]
        assert mechanism[label][1].split(" ")[0] == f"{lr:g}", arm
        for column, mode in ((2, "knn"), (3, "linear")):
            m = stats[mode]
            expected = f"{m['mean']:.1f} ± {m['std']:.1f} [{m['min']:.1f}, {m['max']:.1f}]"
            assert mechanism[label][column] == expected, (arm, mode)

    quality = _markdown_rows(text, "| teacher | teacher kNN | mined-positive precision |")
    assert len(quality) == len(committed["quality"])
    for point, cells in zip(committed["quality"], quality.values()):
        if point["teacher_eval"] is not None:
            assert cells[0] == f"{point['teacher_eval']['knn']['top1']:.1f}", point["teacher"]
            assert cells[1].startswith(f"{point['label_precision']:.2f}"), point["teacher"]
        for column, (arm, mode) in enumerate(
            (("seed", "knn"), ("seed", "linear"), ("rekd", "knn"), ("rekd", "linear")), 2
        ):
            expected = _spread(point[arm][mode], signed=True) if arm in point else "-"
            assert cells[column] == expected, (point["teacher"], arm, mode)

    students = _markdown_rows(text, "| student | steps | random init |")
    assert len(students) == len(committed["students"])
    for arch, arms in committed["students"].items():
        (cells,) = [c for name, c in students.items() if name.lower().startswith(arch[:6])]
        assert cells[0] == f"{max(a['steps'] for a in arms.values()):,}", arch
        for column, arm in enumerate(("random_init", "mocov2", "seed", "rekd"), 1):
            expected = f"{arms[arm]['knn']:.1f} / {arms[arm]['linear']:.1f}"
            assert cells[column] == expected, (arch, arm)
        for column, other in ((5, "mocov2"), (6, "seed")):
            gain = {m: arms["rekd"][m] - arms[other][m] for m in cifar10.MODES}
            assert cells[column] == f"{gain['knn']:+.1f} / {gain['linear']:+.1f}", (arch, other)


def test_tiny_study_runs_end_to_end_and_reruns_skip(tmp_path):
    workdir, data_dir = str(tmp_path / "study"), str(tmp_path / "data")
    lines = []
    result = cifar10.run("tiny", workdir, data_dir, families=("alexnet",), log=lines.append)
    scale = cifar10.SCALES["tiny"]
    assert set(result["choices"]["settings"]) == {"rekd", "seed"}
    lrs = result["choices"]["lr"]
    assert set(lrs) == set(cifar10.ARMS)
    assert all(lr in scale.lr_grid for lr in lrs.values())
    assert lrs["rekd_supervised"] == lrs["rekd_oracle"] == lrs["rekd"]
    assert set(result["grid"]) == set(cifar10.TUNED)
    mechanism = result["mechanism"]
    assert set(mechanism["arms"]) == set(cifar10.ARMS)
    assert mechanism["arms"]["rekd_oracle"]["label_precision"] == pytest.approx(1.0)
    assert len(mechanism["arms"]["rekd"]["knn"]["values"]) == scale.seeds
    assert {"rekd_over_mocov2", "rekd_over_seed"} == set(mechanism["margins"])
    assert [p["teacher"] for p in result["quality"]] == ["50%", "100%", "true labels (oracle)"]
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    assert saved["mechanism"] == json.loads(json.dumps(mechanism))
    text = open(os.path.join(workdir, "results.md")).read()
    assert text == study_report.markdown(saved)
    for section in (
        "## Teachers",
        "## Choices on validation",
        "## Mechanism arms",
        "## Teacher quality",
        "(chosen)",
        "one run each at peak lr 0.02 for 2 steps",
        "random init",
    ):
        assert section in text
    for name in ("mechanism", "quality", "selection"):
        assert os.path.getsize(os.path.join(workdir, "plots", f"{name}.png")) > 10000
    redrawn = tmp_path / "redrawn"  # the committed results.json alone redraws the figures
    assert report.main([os.path.join(workdir, "results.json"), "--out", str(redrawn)]) == 0
    for name in ("mechanism", "quality", "selection"):
        assert os.path.getsize(redrawn / f"{name}.png") > 10000
    assert any("ETA" in line for line in lines)
    rerun = []
    cifar10.run("tiny", workdir, data_dir, families=("alexnet",), plots=False, log=rerun.append)
    done = [line for line in rerun if line.startswith("[")]
    assert done and all("skipped (done)" in line for line in done)
