"""The CIFAR-10 study: the plan of every scale (teachers first, validation before test, equal
student steps, seeds, snapshots), the choices made on validation rows only, and a real run of
the tiny scale that writes results, tables and figures, then skips everything when rerun; the
committed CPU results and docs/results.md's tables of them."""

import json
import os

import pytest

from rekd_jax.experiments.cifar10 import arms, scales, settings, study, summary
from rekd_jax.tools import report, study_figures, study_report


@pytest.mark.parametrize("scale", sorted(scales.SCALES))
def test_plan_of_every_scale(scale):
    s = scales.SCALES[scale]
    val = arms.evaluation_config(s, "/data", "val")
    test = arms.evaluation_config(s, "/data", "test")
    assert (val.data.train_split, val.data.eval_split) == (s.val_bank_split, s.val_split)
    assert (test.data.train_split, test.data.eval_split) == (s.train_split, s.test_split)
    teachers = arms.teacher_arms(s, "/data")
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
    lrs = {arm: s.lr_grid[0] for arm in settings.ARMS}
    search = arms.search_arms(s, "/data", val)
    grid = arms.grid_arms(s, "/data", val, choices)
    final = arms.final_arms(s, "/data", test, choices, lrs)
    quality = arms.quality_arms(s, "/data", test, choices, lrs)
    students = arms.student_arms(s, "/data", test, choices, lrs)
    assert all(a.evaluation is val for a in search + grid)
    assert all(a.evaluation is test for a in final + quality + students)
    assert len(search) == 1 + len(s.readings) + len(s.seed_temperatures)
    # The search is a shorter proxy at the middle lr; the grid tunes the methods only.
    assert {a.config.num_train_steps for a in search if a.trained} == {s.search_steps}
    assert {a.config.optimizer.base_learning_rate for a in search if a.trained} == {
        settings.middle_lr(s)
    }
    assert s.search_steps < s.student_steps
    assert len(grid) == len(settings.TUNED) * len(s.lr_grid)
    assert {a.config.num_train_steps for a in grid} == {s.student_steps}
    # Seed 0 of each tuned method re-scores its grid run at the chosen lr and setting; the
    # ablations that take ReKD's lr train every seed.
    reused = {a.name: a.reuse for a in final if a.reuse}
    assert reused["final/rekd/s0"] == settings.select_name("rekd", s.readings[-1], s.lr_grid[0])
    assert set(reused) == {f"final/{arm}/s0" for arm in settings.TUNED}
    assert len([a for a in final if a.trained]) == len(settings.ARMS) * s.seeds - len(
        settings.TUNED
    )
    rekd = [a for a in final if a.name == "final/rekd/s1"][0].config
    assert rekd.optimizer.base_learning_rate == s.lr_grid[0] and rekd.rekd.teacher == "offline"
    oracle = [a for a in final if a.name == "final/rekd_oracle/s1"][0].config
    assert oracle.rekd.relation == "oracle" and oracle.rekd.teacher == "none"
    assert {a.teacher_encoder for a in quality} == {f"student_step{n}" for n in s.snapshot_steps()}
    assert len(quality) == 2 * s.quality_seeds * len(s.teacher_snapshots)
    trained = [a for a in students if a.trained]
    assert {a.config.num_train_steps for a in trained} == {s.five_student_steps}
    assert len(trained) == 3 * (len(scales.STUDENT_FAMILIES) - 1)
    for arm in teachers + search + grid + final + quality + students:
        if arm.trained:  # a run's kNN monitor scores validation, never the test split
            assert arm.config.knn_monitor.query_split == s.val_split


def test_choices_read_validation_rows_only():
    rows = [
        {"name": "a", "eval": {"knn": {"top1": 50.0}, "linear": {"top1": 60.0}}},
        {"name": "b", "eval": {"knn": {"top1": 52.0}, "linear": {"top1": 40.0}}},
        {"name": "c", "eval": {"knn": {"top1": 52.0}, "linear": {"top1": 41.0}}},
    ]
    assert summary.choose(rows)["name"] == "c"
    ours = [{"seed": s, "eval": {"knn": {"top1": v}}} for s, v in enumerate((60.0, 61.0, 62.0))]
    theirs = [{"seed": s, "eval": {"knn": {"top1": v}}} for s, v in enumerate((55.0, 59.5, 56.0))]
    m = summary.margin(ours, theirs, "knn")
    assert m["mean"] == pytest.approx(4.1666, abs=1e-3)
    assert (m["paired_min"], m["paired_max"]) == (1.5, 6.0) and m["outside_seed_spread"]
    assert not summary.margin(ours, ours, "knn")["outside_seed_spread"]


def test_quality_summary_of_a_stage_cut_after_one_arm():
    """Rows of an interrupted teacher-quality stage: SEED ran from the 5% snapshot, ReKD not."""
    scale = scales.SCALES["cpu"]

    def row(name, knn, linear, **extra):
        return {"name": name, "eval": {"knn": {"top1": knn}, "linear": {"top1": linear}}, **extra}

    rows = [row(f"final/mocov2/s{s}", 48.0 + s, 46.0) for s in range(2)]
    rows += [row(settings.snapshot_arm_name(0.05), 39.0, 41.0)]
    rows += [row(f"quality/5pct/seed/s{s}", 40.0 + s, 42.0, method="seed") for s in range(2)]
    (point,) = summary.quality_summary(scale, rows)
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
    summary.summarize(scales.SCALES[committed["scale"]], recomputed)
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
        scores = [f"{rows[name]['eval'][mode]['top1']:.1f}" for mode in settings.MODES]
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
    for arch, entries in committed["students"].items():
        (cells,) = [c for name, c in students.items() if name.lower().startswith(arch[:6])]
        assert cells[0] == f"{max(a['steps'] for a in entries.values()):,}", arch
        for column, arm in enumerate(("random_init", "mocov2", "seed", "rekd"), 1):
            expected = f"{entries[arm]['knn']:.1f} / {entries[arm]['linear']:.1f}"
            assert cells[column] == expected, (arch, arm)
        for column, other in ((5, "mocov2"), (6, "seed")):
            gain = {m: entries["rekd"][m] - entries[other][m] for m in settings.MODES}
            assert cells[column] == f"{gain['knn']:+.1f} / {gain['linear']:+.1f}", (arch, other)


def test_tiny_study_runs_end_to_end_and_reruns_skip(tmp_path):
    workdir, data_dir = str(tmp_path / "study"), str(tmp_path / "data")
    lines = []
    result = study.run("tiny", workdir, data_dir, families=("alexnet",), log=lines.append)
    scale = scales.SCALES["tiny"]
    assert set(result["choices"]["settings"]) == {"rekd", "seed", "space", "rekd_long"}
    assert set(result["choices"]["lr_long"]) == set(settings.ARMS)
    lrs = result["choices"]["lr"]
    assert set(lrs) == set(settings.ARMS)
    assert all(lr in scale.lr_grid for lr in lrs.values())
    assert lrs["rekd_supervised"] == lrs["rekd_oracle"] == lrs["rekd"]
    assert set(result["grid"]) == set(settings.TUNED)
    mechanism = result["mechanism"]
    assert set(mechanism["arms"]) == set(settings.ARMS)
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
        "ReKD in the teacher's space (an extension), beta x k",
        "## Budget axis",
        "## Gain against the teacher's lead",
    ):
        assert section in text
    budget = result["budget"]["arms"]
    assert set(budget) >= set(settings.BUDGET_ARMS)
    assert [p["steps"] for p in budget["mocov2"]["points"]][-1] == scale.budget_steps[-1]
    assert budget["rekd"]["points"][-1]["label_precision"] is not None
    assert {p["source"] for p in result["lead"]} == {"budget", "quality"}
    assert len(mechanism["arms"]["rekd_oracle_k"]["knn"]["values"]) == scale.seeds
    for name in ("mechanism", "quality", "selection", "budget", "lead"):
        assert os.path.getsize(os.path.join(workdir, "plots", f"{name}.png")) > 10000
    redrawn = tmp_path / "redrawn"  # the committed results.json alone redraws the figures
    assert report.main([os.path.join(workdir, "results.json"), "--out", str(redrawn)]) == 0
    for name in ("mechanism", "quality", "selection"):
        assert os.path.getsize(redrawn / f"{name}.png") > 10000
    assert any("ETA" in line for line in lines)
    rerun = []
    study.run("tiny", workdir, data_dir, families=("alexnet",), plots=False, log=rerun.append)
    done = [line for line in rerun if line.startswith("[")]
    assert done and all("skipped (done)" in line for line in done)
    # A new workdir takes the rows from results.json once its own teachers score the same.
    again, taken = str(tmp_path / "again"), []
    study.run(
        "tiny",
        again,
        data_dir,
        families=("alexnet",),
        rows_from=os.path.join(workdir, "results.json"),
        plots=False,
        log=taken.append,
    )
    trained = [line for line in taken if line.startswith("[") and "skipped" not in line]
    assert trained and all("teacher" in line for line in trained), trained
    assert any(line.startswith("took ") for line in taken)
    with open(os.path.join(again, "results.json")) as f:
        assert json.load(f)["mechanism"] == saved["mechanism"]


def test_later_searches_lr_edge_and_budget_axis_plan():
    s = scales.SCALES["cpu"]
    val = arms.evaluation_config(s, "/data", "val")
    test = arms.evaluation_config(s, "/data", "test")
    choices = {"rekd": "topk", "seed": settings.scale_default_seed()}
    more = arms.more_search_arms(s, "/data", val, choices)
    space = [a for a in more if a.name.startswith("search/space/")]
    long = [a for a in more if a.name.startswith("search/rekd_long/")]
    assert len(space) == len(s.space_betas) * len(s.space_topks)
    assert {a.config.rekd.candidates for a in space} == {"teacher"}
    assert {a.config.rekd.beta for a in space} == set(s.space_betas)
    # temperature 0.2 with k 10, and the embedding of the key view, are the chosen reading
    # itself (search/rekd/topk): not run again
    joint = len(s.joint_temperatures) * len(s.joint_topks) - 1
    miner = len(s.miner_inputs) * len(s.miner_views) - 1
    assert len(long) == joint + miner
    assert "search/rekd_long/topk_tau_0.2_k_10" not in {a.name for a in long}
    assert {a.config.rekd.relation for a in long} == {"topk"}
    assert {(a.config.rekd.miner_input, a.config.rekd.miner_view) for a in long} == {
        (i, v) for i in s.miner_inputs for v in s.miner_views
    }
    assert all(a.evaluation is val and a.config.num_train_steps == s.search_steps for a in more)
    assert {a.config.optimizer.base_learning_rate for a in more} == {settings.middle_lr(s)}

    lrs = {arm: s.lr_grid[-1] for arm in settings.ARMS} | {"mocov2": s.lr_grid[1]}
    edge = arms.edge_arms(s, "/data", val, choices, lrs)
    assert settings.edge_lr(s) == 0.12
    assert [a.name for a in edge] == [
        settings.select_name("seed", settings.scale_default_seed(), 0.12),
        settings.select_name("rekd", "topk", 0.12),
    ]
    assert {a.config.num_train_steps for a in edge} == {s.student_steps}

    choices |= {"space": "beta_0.5_k_10", "rekd_long": "topk_tau_0.1_k_20"}
    budget = arms.budget_arms(s, "/data", test, choices, lrs, dict(lrs), extension=False)
    per_arm = sum(s.budget_seeds)
    assert len(budget) == len(settings.BUDGET_ARMS) * per_arm + s.budget_seeds[0] * 3
    by_name = {a.name: a.config for a in budget}
    # ReKD's reading changed after the final stage: its arms run at the student budget too
    assert {n.split("/")[1] for n in by_name if f"/{s.student_steps}/" in n} == {
        "rekd",
        "rekd_supervised",
        "rekd_oracle",
    }
    long_rekd = by_name[settings.budget_name("rekd", 15000, 0)]
    assert long_rekd.num_train_steps == 15000 and long_rekd.optimizer.cosine_unit == "step"
    assert (long_rekd.rekd.temperature, long_rekd.rekd.relation_topk) == (0.1, 20)
    assert by_name[settings.budget_name("seed_supervised", 6000, 1)].rng_seed == 1
    oracle = by_name[settings.budget_name("rekd_oracle", 6000, 0)].rekd
    assert (oracle.relation, oracle.teacher, oracle.relation_topk) == ("oracle", "none", 20)
    assert all(a.evaluation is test for a in budget)
    with_space = arms.budget_arms(s, "/data", test, choices, lrs, dict(lrs), extension=True)
    space_arm = [a for a in with_space if a.name.startswith("budget/rekd_space/")]
    assert len(space_arm) == per_arm and space_arm[0].config.rekd.beta == 0.5

    final = arms.final_arms(s, "/data", test, choices, lrs)
    k_oracle = [a.config.rekd for a in final if a.name.startswith("final/rekd_oracle_k/")]
    assert len(k_oracle) == s.seeds
    assert {(c.relation, c.relation_topk, c.teacher) for c in k_oracle} == {
        ("oracle_topk", 20, "none")
    }
    seed_sup = [a for a in final if a.name.startswith("final/seed_supervised/")]
    assert {a.teacher for a in seed_sup} == {"teacher/supervised"}


def test_gpu_scale_tests_a_lightweight_student_and_the_plan_prints(capsys):
    gpu = scales.SCALES["gpu"]
    assert gpu.mechanism_student != gpu.teacher_arch and gpu.budget_steps
    study.main(["--scale=gpu", "--workdir=/unused", "--dry_run", "--mocov2_step_ms=20"])
    text = capsys.readouterr().out
    assert f"budget/rekd/{gpu.budget_steps[-1]}/s0" in text
    total = [line for line in text.splitlines() if line.startswith("= in all")]
    assert total and float(total[0].split()[-1]) > 0  # hours
    study.main(["--scale=cpu", "--workdir=/unused", "--dry_run", "--stages=budget"])
    text = capsys.readouterr().out
    assert "76.8" in text and "= stage budget" in text and "= stage final" not in text
    assert "give --mocov2_step_ms" in text


def test_a_stage_left_out_needs_the_rows_it_chooses_from(tmp_path):
    with pytest.raises(ValueError, match="add search to --stages"):
        study.run("tiny", str(tmp_path), str(tmp_path / "data"), stages=("grid",))


def test_budget_and_lead_summaries_tables_and_figures(tmp_path):
    s = scales.SCALES["cpu"]

    def row(name, knn, seed=0, method="", **extra):
        linear = knn - 1.0
        evals = {"knn": {"top1": knn}, "linear": {"top1": linear}}
        return {"name": name, "seed": seed, "method": method, "eval": evals, **extra}

    rows = [row("teacher/mocov2", 61.0), row("teacher/supervised", 78.0)]
    rows += [row(f"random_init/{s.mechanism_student}", 35.0)]
    rows += [row(f"final/mocov2/s{i}", 48.0 + i, i) for i in range(3)]
    rows += [row(f"final/seed/s{i}", 56.0, i) for i in range(3)]
    rows += [row(settings.budget_name("mocov2", 6000, i), 60.0 + 2 * i, i) for i in range(2)]
    rows += [row(settings.budget_name("seed", 6000, i), 59.0, i) for i in range(2)]
    precision = {"diagnostics": {"positive_label_precision": 0.4}}
    rows += [row(settings.budget_name("rekd", 6000, 0), 63.0, 0, "rekd", **precision)]
    axis = summary.budget_summary(s, rows, 50000)
    assert set(axis["arms"]) == {"mocov2", "seed", "rekd"}
    mocov2 = axis["arms"]["mocov2"]["points"]
    assert [p["steps"] for p in mocov2] == [1500, 6000]  # the final stage at the student budget
    assert mocov2[0]["knn"]["mean"] == 49.0 and mocov2[1]["knn"]["mean"] == 61.0
    assert mocov2[1]["epochs"] == pytest.approx(30.72)
    assert axis["arms"]["rekd"]["points"][0]["label_precision"] == 0.4
    assert axis["teachers"]["teacher/mocov2"]["knn"] == 61.0
    quality = [
        {
            "teacher": "5%",
            "teacher_eval": {"knn": {"top1": 40.0}},
            "seed": {"knn": {"mean": -8.0}, "linear": {"mean": -4.0}},
        }
    ]
    finals = [r for r in rows if r["name"].startswith("final/mocov2/")]
    lead = summary.lead_summary(axis, quality, finals)
    seed_6000 = [p for p in lead if p["arm"] == "seed" and p["steps"] == 6000][0]
    assert (seed_6000["lead"], seed_6000["knn"]) == (0.0, -2.0)
    seed_1500 = [p for p in lead if p["arm"] == "seed" and p["steps"] == 1500][0]
    assert (seed_1500["lead"], seed_1500["knn"]) == (12.0, 7.0)
    snapshot = [p for p in lead if p["source"] == "quality"][0]
    assert (snapshot["lead"], snapshot["knn"]) == (-9.0, -8.0)
    result = {"budget": axis, "lead": lead, "chance": 0.1}
    table = "\n".join(study_report.budget_table(result))
    assert "| ReKD | 6,000 | 30.7 | 1 | 63.0 ± 0.0 [63.0, 63.0] |" in table
    assert "0.400 (4.0x)" in table and "MoCo v2 teacher: kNN 61.0" in table
    assert "| seed | teacher/mocov2 | 6,000 | +0.0 | -2.0 | -2.0 |" in "\n".join(
        study_report.lead_table(result)
    )
    assert summary.budget_summary(s, rows[:5], 50000) == {}
    result |= {"rows": [], "scale_settings": {"mechanism_student": s.mechanism_student}}
    drawn = study_figures.draw(result, str(tmp_path))
    assert set(drawn) == {"budget", "lead"}
    assert all(os.path.getsize(path) > 10000 for path in drawn.values())
