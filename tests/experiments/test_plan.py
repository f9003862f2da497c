"""Experiment plans: random-init rows are required in every table, gains are computed against
them, init texts round-trip, metrics are summarised from metrics.jsonl."""

import json
import pathlib

import pytest

from rekd_jax.experiments import plan
from rekd_jax.readout import features


def row(name, arch, label, knn, lin, **extra):
    return {
        "name": name,
        "arch": arch,
        "label": label,
        "steps": 0 if label == plan.RANDOM_INIT else 10,
        "train_seconds": 1.0,
        "eval": {"knn": {"top1": knn}, "linear": {"top1": lin}},
        **extra,
    }


def test_table_needs_a_random_init_row_per_arch_and_shows_gains():
    rows = [
        row("random_init/alexnet", "alexnet", plan.RANDOM_INIT, 20.0, 18.0),
        row("a/mocov2", "alexnet", "MoCo v2", 25.5, 17.0),
        row(
            "a/rekd",
            "alexnet",
            "ReKD (offline)",
            30.0,
            31.0,
            method="rekd",
            diagnostics={"positive_label_precision": 0.25},
        ),
    ]
    table = plan.format_table(rows, chance=0.1)
    lines = table.splitlines()
    assert "+5.5" in lines[3] and "-1.0" in lines[3]
    assert "+10.0" in lines[4] and "+13.0" in lines[4] and "0.250 (2.5x)" in lines[4]
    with pytest.raises(ValueError, match="no random-init row for \\['resnet18'\\]"):
        plan.format_table(rows + [row("r/mocov2", "resnet18", "MoCo v2", 30.0, 30.0)])


def test_init_text_round_trips_through_the_evaluation_parser():
    text = plan.init_text("resnet18", {"cifar_stem": True, "width_multiplier": 0.25}, seed=3)
    spec, seed = features.parse_init_checkpoint(text)
    assert seed == 3 and spec["arch"] == "resnet18"
    assert spec["overrides"] == {"cifar_stem": True, "width_multiplier": 0.25}


def test_summarize_metrics_means_the_last_quarter(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with open(path, "w") as f:
        for step, value in enumerate([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.5, 0.7], 1):
            f.write(json.dumps({"step": step, "train/positive_label_precision": value}) + "\n")
        f.write(json.dumps({"hparams": {"x": 1}}) + "\n")
    assert plan.summarize_metrics(str(path))["positive_label_precision"] == pytest.approx(0.6)


def test_format_duration():
    assert plan.format_duration(3725.4) == "1:02:05"


def test_the_plan_eta_waits_for_a_trained_arm_and_is_then_within_half(tmp_path, monkeypatch):
    """Two random-init arms (evaluation only, the first building the dataset: 3 minutes), then
    arms of 1,700, 700 and 700 steps at 0.1 s a step plus 20 s of evaluation each: no ETA
    before the first trained arm, then one within 50% of the time really left."""
    import ml_collections

    now = [0.0]
    monkeypatch.setattr(plan.time, "time", lambda: now[0])

    def fake_run_arm(arm, root, evaluation, modes, clear_caches=True):
        now[0] += (
            (180.0 if arm.name.endswith("a") else 20.0)
            if not arm.trained
            else (0.1 * arm.config.num_train_steps + 20.0)
        )
        return {"eval": {}}

    monkeypatch.setattr(plan, "run_arm", fake_run_arm)
    trained = lambda name, steps: plan.Arm(
        name=name,
        arch="x",
        label="MoCo v2",
        config=ml_collections.ConfigDict({"num_train_steps": steps}),
    )
    arms = [
        plan.Arm(name="init_a", arch="x", label=plan.RANDOM_INIT, init="init:x"),
        plan.Arm(name="init_b", arch="y", label=plan.RANDOM_INIT, init="init:y"),
        trained("teacher", 1700),
        trained("student", 700),
        trained("baseline", 700),
    ]
    lines = []
    plan.run_plan(arms, str(tmp_path), None, (), log=lambda line: lines.append((now[0], line)))
    assert all(line.endswith("ETA ?") for _, line in lines[:2])
    when, line = lines[2]
    h, m, sec = (int(x) for x in line.split("ETA ")[1].split(":"))
    left = now[0] - when
    assert 0.5 * left <= 3600 * h + 60 * m + sec <= 1.5 * left, (line, left)


def test_a_replanned_budget_ends_at_eta_zero(tmp_path, monkeypatch):
    """A study resumed after its choice on validation: the budget is made with the arms
    guessed under the default setting, which never run, while the arms of the chosen setting
    are already done. Without replanning the guessed arms keep the ETA above zero after the
    last arm; after `Budget.replan` with the arms really left it is 0:00:00."""
    import ml_collections

    now = [0.0]
    monkeypatch.setattr(plan.time, "time", lambda: now[0])

    def finish(root, arm):
        (root / arm.name).mkdir(parents=True)
        (root / arm.name / "row.json").write_text("{}")

    def fake_run_arm(arm, root, evaluation, modes, clear_caches=True):
        if not plan.is_finished(root, arm):
            now[0] += 0.1 * arm.config.num_train_steps
            finish(pathlib.Path(root), arm)
        return {"eval": {}}

    monkeypatch.setattr(plan, "run_arm", fake_run_arm)
    trained = lambda name: plan.Arm(
        name=name,
        arch="x",
        label="MoCo v2",
        config=ml_collections.ConfigDict({"num_train_steps": 1000}),
    )
    first = [trained("search")]
    guessed = [trained("grid/default/lr1"), trained("grid/default/lr2")]
    chosen = [trained("grid/chosen/lr1"), trained("grid/chosen/lr2")]
    final = [trained("final")]
    cost = plan.default_cost(first)

    def last_eta(replan):
        root = tmp_path / f"replan_{replan}"
        for arm in first + chosen:
            finish(root, arm)
        budget = plan.Budget.of(first + guessed + final, cost, str(root))
        lines = []
        plan.run_plan(first, str(root), None, (), log=lines.append, budget=budget)
        if replan:
            budget.replan(chosen + final, cost, str(root))
        plan.run_plan(chosen + final, str(root), None, (), log=lines.append, budget=budget)
        return lines[-1].split("ETA ")[1]

    assert last_eta(replan=False) == "0:03:20"
    assert last_eta(replan=True) == "0:00:00"
