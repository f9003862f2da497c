"""The study's run loop and command line: the stages in order, each choice made on
validation rows, results.json / results.md / plots after every stage, the printed plan."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys

import jax

from rekd_jax.core import fileio, run_record
from rekd_jax.core import logging as logging_lib
from rekd_jax.data import prepare, sources
from rekd_jax.experiments import plan
from rekd_jax.experiments.cifar10.arms import (
    budget_arms,
    edge_arms,
    evaluation_config,
    final_arms,
    grid_arms,
    more_search_arms,
    quality_arms,
    search_arms,
    student_arms,
    teacher_arms,
)
from rekd_jax.experiments.cifar10.scales import (
    READINGS,
    SCALES,
    STUDENT_FAMILIES,
    TRAIN_EXAMPLES,
    Scale,
)
from rekd_jax.experiments.cifar10.settings import (
    ARMS,
    LR_FOLLOWS,
    MODES,
    MORE_SEARCHES,
    TUNED,
    edge_lr,
    middle_lr,
    readings,
    scale_default_seed,
    search_name,
    select_name,
    setting_of,
)
from rekd_jax.experiments.cifar10.summary import choose, choose_lr, more_search_rows, summarize
from rekd_jax.tools import study_figures, study_report


def machine() -> str:
    """The hardware and software a result was measured on, as a description."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return (
        f"{os.cpu_count()}-core {platform.machine()} CPU ({model}), Python "
        f"{platform.python_version()}, jax {jax.__version__}, {jax.devices()[0].platform}"
    )


def _cost(scale: Scale):
    """Relative cost of an arm: training steps x images x the per-image cost of its method and
    encoders (measured ratios at 16 px); an evaluation-only arm, 0.2 student-runs."""

    def cost(arm: plan.Arm) -> float:
        if not arm.trained:
            return 0.2 * scale.student_steps
        c = arm.config
        factor = {"mocov2": 1.0, "seed": 2.2, "rekd": 2.5, "supervised": 0.6}[c.method]
        if c.method == "rekd" and c.rekd.teacher == "none":
            factor = 1.0
        if arm.group == "teacher":
            factor *= 5.5
        return float(c.num_train_steps) * factor + 0.2 * scale.student_steps

    return cost


# The stages in the order they run; each reads the choices the earlier ones made.
STAGES = (
    "teachers",
    "search",
    "grid",
    "more_search",
    "lr_edge",
    "final",
    "budget",
    "quality",
    "students",
)


class Study:
    """The study's arms stage by stage, given the choices made so far (the plan a run
    follows, and the one --dry_run prints before any choice is made)."""

    def __init__(self, scale: Scale, data_dir: str, families=STUDENT_FAMILIES):
        self.scale, self.data_dir, self.families = scale, data_dir, families
        self.val = evaluation_config(scale, data_dir, "val")
        self.test = evaluation_config(scale, data_dir, "test")
        self.choices: dict = {}  # search -> chosen setting
        self.lrs = {arm: middle_lr(scale) for arm in ARMS}  # the grid's choice
        self.lrs_long = dict(self.lrs)  # ...with the edge of the grid: the longer runs'
        self.extension = True  # whether rekd_space joins the budget axis (until known)

    def arms(self, stage: str) -> list[plan.Arm]:
        s, d, c = self.scale, self.data_dir, self.choices
        return {
            "teachers": lambda: teacher_arms(s, d),
            "search": lambda: search_arms(s, d, self.val),
            "grid": lambda: grid_arms(s, d, self.val, c),
            "more_search": lambda: more_search_arms(s, d, self.val, self._with_defaults()),
            "lr_edge": lambda: edge_arms(s, d, self.val, c, self.lrs),
            "final": lambda: final_arms(s, d, self.test, c, self.lrs),
            "budget": lambda: budget_arms(
                s, d, self.test, c, self.lrs, self.lrs_long, self.extension
            ),
            "quality": lambda: quality_arms(s, d, self.test, c, self.lrs),
            "students": lambda: student_arms(s, d, self.test, c, self.lrs, self.families),
        }[stage]()

    def _with_defaults(self) -> dict:
        return {"rekd": READINGS[0][0], **self.choices}

    def plan(self, stages=STAGES) -> list[tuple[str, list[plan.Arm]]]:
        """(stage, arms) of every stage under the choices made so far."""
        if "rekd" not in self.choices:
            self.choices.update(rekd=READINGS[0][0], seed=scale_default_seed())
            try:
                return [(stage, self.arms(stage)) for stage in stages]
            finally:
                self.choices.clear()
        return [(stage, self.arms(stage)) for stage in stages]


def import_rows(path: str, workdir: str, scale_name: str, teachers: dict) -> int:
    """Writes WORKDIR/<name>/row.json for each row of the results.json at PATH that the
    workdir has not run (a student's row holds its scores, not its checkpoints), after checking
    that the file is of the same scale and that TEACHERS, the rows of the teachers trained in
    WORKDIR (whose checkpoints the later stages distil), score exactly as the file's: the
    study is deterministic for a given machine, so equal teachers mean the same study. Returns
    the number of rows written; ValueError naming the difference otherwise."""
    found = run_record.read_json(path)
    if found.get("scale") != scale_name:
        raise ValueError(
            f"--rows_from={path} holds scale {found.get('scale')!r}, not {scale_name!r}; "
            "give a results.json of the same scale"
        )
    theirs = {r["name"]: r for r in found["rows"]}
    missing = [n for n, r in theirs.items() if r["group"] == "teacher" and n not in teachers]
    if missing:
        raise ValueError(
            f"--rows_from={path}: the teachers {missing} have not been trained in {workdir}; "
            "add teachers to --stages"
        )
    for name, row in teachers.items():
        if name in theirs and theirs[name]["eval"] != row["eval"]:
            raise ValueError(
                f"--rows_from={path}: the teacher row {name} scores {row['eval']} here and "
                f"{theirs[name]['eval']} there, so the file's students distilled another "
                "teacher; run the study without --rows_from"
            )
    written = 0
    for name, row in theirs.items():
        target = os.path.join(workdir, name, "row.json")
        if row["group"] == "teacher" or os.path.exists(target):
            continue
        fileio.write_json(target, {**row, "rows_from": path}, sort_keys=True, default=float)
        written += 1
    return written


def _new_result(scale_name: str, scale: Scale, data_dir: str) -> dict:
    """The results dict before any stage: the scale, where the data is, what ran it."""
    return {
        "scale": scale_name,
        "scale_settings": dataclasses.asdict(scale),
        "data_dir": data_dir,
        "command": " ".join(sys.argv),
        "machine": machine(),
        "chance": None,
        "choices": {},
        "rows": [],
    }


def _chosen(search: str, candidates: list[dict], needs: str) -> str:
    """The setting of the best validation row of CANDIDATES; ValueError naming the stage whose
    rows are missing when there are none."""
    if not candidates:
        raise ValueError(
            f"the study's {search!r} choice needs the {needs} stage's validation rows; "
            f"add {needs} to --stages"
        )
    return choose(candidates)["name"].split("/")[2]


class StudyRun:
    """One run of the study into a workdir: each stage's rows (run when the stage is in
    STAGES_TO_RUN, else read from its finished arms), the rows by name, the results dict
    written after every stage that runs, and the ETA's budget."""

    def __init__(self, scale_name, workdir, data_dir, families, stages_to_run, plots, log):
        self.scale = SCALES[scale_name]
        self.study = Study(self.scale, data_dir, families)
        self.workdir, self.stages_to_run, self.plots, self.log = workdir, stages_to_run, plots, log
        self.cost = _cost(self.scale)
        self.budget = plan.Budget.of(
            self._arms([s for s in STAGES if s in stages_to_run]), self.cost, workdir
        )
        self.result = _new_result(scale_name, self.scale, data_dir)
        self.rows: dict[str, dict] = {}

    def _arms(self, stages) -> list[plan.Arm]:
        return [a for _, arms in self.study.plan(stages) for a in arms]

    def replan(self, stages) -> None:
        """The ETA's budget over STAGES under the choices made so far."""
        self.budget.replan(self._arms(stages), self.cost, self.workdir)

    def stage(self, name: str) -> None:
        """Runs (or reads) stage NAME's rows; writes the results when it ran."""
        arms = self.study.arms(name)
        if name in self.stages_to_run:
            self.log(f"stage {name}: {len(arms)} runs")
            found = plan.run_plan(
                arms,
                self.workdir,
                self.study.test,
                MODES,
                cost=self.cost,
                log=self.log,
                budget=self.budget,
            )
        else:
            found = [
                plan.read_row(self.workdir, a) for a in arms if plan.is_finished(self.workdir, a)
            ]
        self.rows.update({row["name"]: row for row in found})
        self.result["rows"] = list(self.rows.values())
        if name in self.stages_to_run:
            test_data = self.study.test.data
            self.result["chance"] = self.result["chance"] or plan.label_chance(
                test_data, self.scale.test_split
            )
            self.result["train_examples"] = self.result.get("train_examples") or plan.split_size(
                test_data, self.scale.train_split
            )
            _write(self.workdir, self.scale, self.result, self.plots)


def choose_searched(run: StudyRun) -> None:
    """ReKD's reading and SEED's temperatures: the best validation rows of the search."""
    study, rows = run.study, run.rows
    for arm in ("rekd", "seed"):
        names = [search_name(arm, v) for v in readings(run.scale, arm, {})]
        study.choices[arm] = _chosen(arm, [rows[n] for n in names if n in rows], "search")
    run.result["choices"]["settings"] = dict(study.choices)


def choose_lrs(run: StudyRun) -> None:
    """Each tuned method's peak lr: the best validation row of the grid; the arms that follow a
    method take its lr."""
    study, scale = run.study, run.scale
    for arm in TUNED:
        variant, _ = setting_of(arm, study.choices, scale)
        if not any(select_name(arm, variant, lr) in run.rows for lr in scale.lr_grid):
            _chosen(f"{arm} lr", [], "grid")
        study.lrs[arm] = choose_lr(scale, run.rows, arm, variant, scale.lr_grid)
    study.lrs.update({arm: study.lrs[method] for arm, method in LR_FOLLOWS.items()})
    run.result["choices"]["lr"] = dict(study.lrs)
    run.log(f"chosen on validation: settings {study.choices}, peak lr {study.lrs}")


def choose_more_searched(run: StudyRun) -> None:
    """The later searches' settings, and whether ReKD in the teacher's space beats the chosen
    reading on validation (then it joins the budget axis)."""
    study, rows = run.study, run.rows
    for search in MORE_SEARCHES:
        study.choices[search] = _chosen(
            search, more_search_rows(run.scale, rows, search, study.choices), "more_search"
        )
    space = rows[search_name("space", study.choices["space"])]
    long = study.choices["rekd_long"]
    reading = rows[search_name("rekd" if long == study.choices["rekd"] else "rekd_long", long)]
    study.extension = choose([reading, space]) is space
    run.result["choices"]["settings"] = dict(study.choices)
    run.result["choices"]["space_beats_reading"] = study.extension


def choose_long_lrs(run: StudyRun) -> None:
    """The longer runs' peak lr: the grid's choice, or the step above the grid (lr_edge)."""
    study, scale = run.study, run.scale
    for arm in TUNED:
        variant, _ = setting_of(arm, study.choices, scale)
        study.lrs_long[arm] = choose_lr(
            scale, run.rows, arm, variant, scale.lr_grid + (edge_lr(scale),)
        )
    study.lrs_long.update({arm: study.lrs_long[m] for arm, m in LR_FOLLOWS.items()})
    run.result["choices"]["lr_long"] = dict(study.lrs_long)
    run.log(
        f"chosen on validation: settings {study.choices}, longer runs' peak lr {study.lrs_long}"
    )


def run(
    scale_name: str,
    workdir: str,
    data_dir: str,
    *,
    families=STUDENT_FAMILIES,
    stages=STAGES,
    rows_from: str = "",
    plots: bool = True,
    log=print,
) -> dict:
    """Runs the study's STAGES into WORKDIR (resuming; a stage left out runs nothing, and its
    finished rows still make its choices); writes results.json, results.md and plots/ after
    every stage; returns the results dict. ROWS_FROM (a results.json of the same scale) gives
    the rows of arms the workdir has not run, once the teachers trained here score exactly as
    that file's (import_rows)."""
    study_run = StudyRun(scale_name, workdir, data_dir, families, stages, plots, log)
    study_run.stage("teachers")
    if rows_from:
        imported = import_rows(rows_from, workdir, scale_name, study_run.rows)
        log(f"took {imported} finished rows from {rows_from}")
    study_run.stage("search")
    choose_searched(study_run)
    study_run.replan(STAGES[2:])
    study_run.stage("grid")
    choose_lrs(study_run)
    study_run.stage("more_search")
    choose_more_searched(study_run)
    study_run.stage("lr_edge")
    choose_long_lrs(study_run)
    study_run.replan(STAGES[5:])
    for name in STAGES[5:]:
        study_run.stage(name)
    log(f"wrote {os.path.join(workdir, 'results.json')}, results.md and plots/")
    return study_run.result


def _write(workdir: str, scale: Scale, result: dict, plots: bool) -> None:
    summarize(scale, result)
    fileio.write_text(os.path.join(workdir, "results.md"), study_report.markdown(result))
    fileio.write_json(os.path.join(workdir, "results.json"), result, default=float)
    if plots:
        result["plots"] = study_figures.draw(result, os.path.join(workdir, "plots"))
        fileio.write_json(os.path.join(workdir, "results.json"), result, default=float)


def plan_text(
    scale: Scale, data_dir: str, stages=STAGES, families=STUDENT_FAMILIES, step_ms: float = 0.0
) -> str:
    """The plan of STAGES under the default settings (the choices are made as the study runs;
    the budget axis is counted with rekd_space, which joins it only when it wins on
    validation): per arm, its steps, epochs and images seen; per stage and in all, hours at
    STEP_MS ms per MoCo v2 step of the mechanism student, scaled by the study's relative costs
    (benchmarks/train_step.py measures the step on the target machine)."""
    cost = _cost(scale)
    size = TRAIN_EXAMPLES.get(scale.dataset)
    hours = (lambda c: f"{c * step_ms / 3.6e6:.1f}") if step_ms else (lambda c: "-")
    header = f"{'arm':<52} {'steps':>7} {'epochs':>7} {'images':>12} {'hours':>6}"
    lines = [header, "-" * len(header)]
    total = {"cost": 0.0, "images": 0}
    for stage, arms in Study(scale, data_dir, families).plan(stages):
        steps = [a.config.num_train_steps if a.trained else 0 for a in arms]
        images = sum(steps) * scale.batch
        stage_cost = sum(cost(a) for a in arms)
        total["cost"] += stage_cost
        total["images"] += images
        for arm, n in zip(arms, steps):
            epochs = f"{scale.epochs(n, size):.1f}" if size and n else "-"
            lines.append(
                f"{arm.name:<52.52} {n or '-':>7} {epochs:>7} {n * scale.batch or '-':>12} "
                f"{hours(cost(arm)):>6}"
            )
        lines.append(
            f"{'= stage ' + stage + f' ({len(arms)} arms)':<52} {sum(steps):>7} {'':>7} "
            f"{images:>12} {hours(stage_cost):>6}"
        )
    lines.append(
        f"{'= in all':<52} {'':>7} {'':>7} {total['images']:>12} {hours(total['cost']):>6}"
    )
    if not step_ms:
        lines.append("(hours: give --mocov2_step_ms from benchmarks/train_step.py)")
    return "\n".join(lines)


def _ensure_dataset(scale: Scale, data_dir: str, src: str) -> None:
    """Prepares CIFAR-10 from a JPEG folder when it is not in data_dir yet."""
    if scale.dataset.startswith("rekd_shapes") or sources.find_dataset_dir(scale.dataset, data_dir):
        return
    if not src:
        raise SystemExit(
            f"FATAL: CIFAR-10 is not prepared in {data_dir!r}; pass --src=DIR "
            "(a folder of cifar10/{train,test}/<class>/*.jpg, e.g. extracted from "
            "cifar10-jpeg.tar.gz) to prepare it, or run `python -m "
            "rekd_jax.data.prepare --src DIR --name cifar10 --data_dir "
            f"{data_dir}` first."
        )
    prepare.prepare(src, "cifar10", data_dir)


def _parser() -> argparse.ArgumentParser:
    """The study's command line (`python -m rekd_jax.experiments.cifar10 --help`)."""
    parser = argparse.ArgumentParser(
        prog="python -m rekd_jax.experiments.cifar10",
        description="Does ReKD beat MoCo v2 and SEED with a teacher that knows something? "
        "Teachers, a validation search, seeded test runs, teacher quality and five "
        "students on CIFAR-10 (see the module docstring). Rerunning the same "
        "command skips finished runs.",
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--data_dir", default="", help="TFDS data dir holding cifar10")
    parser.add_argument("--src", default="", help="CIFAR-10 JPEG folder to prepare if needed")
    parser.add_argument(
        "--students",
        default=",".join(STUDENT_FAMILIES),
        help="comma-separated student families of the five-student stage "
        "(shufflenetv2 takes the scale's width)",
    )
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        help="comma-separated stages to run, in the study's order "
        f"({','.join(STAGES)}); a stage left out runs nothing, its finished rows still count",
    )
    parser.add_argument(
        "--dry_run",
        action="store_true",
        help="print the plan (arms, steps, epochs, images seen; hours with --mocov2_step_ms) "
        "and exit",
    )
    parser.add_argument(
        "--mocov2_step_ms",
        type=float,
        default=0.0,
        help="ms per MoCo v2 step of the mechanism student on the target machine "
        "(benchmarks/train_step.py): prices the plan in hours",
    )
    parser.add_argument(
        "--rows_from",
        default="",
        help="a results.json of the same scale whose rows stand for the arms this workdir "
        "has not run, once its teachers, trained here, score exactly as the file's",
    )
    parser.add_argument("--no_plots", action="store_true")
    return parser


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    families = tuple(s for s in args.students.split(",") if s)
    unknown = [s for s in families if s not in STUDENT_FAMILIES]
    if unknown:
        raise SystemExit(
            f"FATAL: unknown student(s) {unknown}; use some of {','.join(STUDENT_FAMILIES)}"
        )
    stages = tuple(s for s in args.stages.split(",") if s)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"FATAL: unknown stage(s) {unknown}; use some of {','.join(STAGES)}")
    scale = SCALES[args.scale]
    if args.dry_run:
        print(plan_text(scale, args.data_dir, stages, families, args.mocov2_step_ms))
        return
    logging_lib.setup_console()
    _ensure_dataset(scale, args.data_dir, args.src)
    os.makedirs(args.workdir, exist_ok=True)
    run(
        args.scale,
        args.workdir,
        args.data_dir,
        families=families,
        stages=stages,
        rows_from=args.rows_from,
        plots=not args.no_plots,
    )
