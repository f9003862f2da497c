"""The CIFAR-10 study: ReKD against SEED and MoCo v2 for five lightweight students, one command.

    python -m rekd_jax.experiments.cifar10 --scale=cpu --workdir=/tmp/c10_study \
        --data_dir=/data/tfds [--src=/data/cifar10]

What runs (every arm is a row of ROOT/results.md and ROOT/results.json; rerunning skips finished
arms; progress lines carry an ETA):
  teachers   MoCo v2 teacher; a *supervised* teacher (SupCon with a MoCo queue: ReKD's loss with
             true-label relations and no teacher) -- an ORACLE ABLATION for the mechanism check
             only, never a self-supervised result.
  students   alexnet, mobilenetv3_large, shufflenetv2, efficientnet_b0, resnet18 (CIFAR stems),
             each with every arm at equal student steps: random init, MoCo v2, SEED (offline
             MoCo v2 teacher), ReKD offline (same teacher), ReKD online (teacher trained
             alongside, from scratch).
  mechanism  (question 4 of the study) on the mechanism student, over `--seeds` seeds:
             MoCo v2, ReKD offline from the MoCo v2 teacher, ReKD offline from the supervised
             teacher, ReKD with oracle relations (true labels: the SupCon upper bound).
             Does ReKD's loss turn good relations into a better student than MoCo v2 at equal
             steps? results.json 'mechanism' answers with kNN / linear mean and spread.
Each run is scored with weighted kNN (k 200, tau 0.1) and the fast linear probe; the label
precision of ReKD's mined positives is reported beside it. Plots (rekd_jax.tools.report):
training curves, a bar chart per student, relation diagnostics over time, and same-class /
different-class cosine-similarity histograms of the MoCo v2 and ReKD students (the paper's
Figure 4).

Recipe: cifar10() of configs/default.py (the MoCo CIFAR-10 demo, cited there) with the scale's
documented departures (SCALES below): subset, image size, widths, batch, steps.
Scales:
  tiny  seconds; rekd_shapes/tiny; what the tests run.
  cpu   the mechanism study on a 2-core CPU (about an hour): CIFAR-10 train[:10000] /
        test[:2000] at 16 px, eighth/quarter-width ResNets, MobileNetV3 and EfficientNet,
        ShuffleNetV2 x0.5, batch 128, students at the demo's linearly scaled lr (peak 0.015),
        teachers at its unscaled peak 0.06, 800 teacher and 200 student steps.
  gpu   full CIFAR-10 at 32 px, full widths, 200 teacher epochs, sized (an estimate, not yet
        measured) for one 10-minute call on one H200; see docs/results.md.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

import ml_collections
import numpy as np

from rekd_jax import errors
from rekd_jax.experiments import plan

STUDENT_FAMILIES = ("alexnet", "mobilenetv3_large", "shufflenetv2", "efficientnet_b0", "resnet18")


@dataclasses.dataclass(frozen=True)
class Scale:
    """Everything a scale changes from the CIFAR-10 recipe (each a documented departure)."""
    dataset: str
    train_split: str
    eval_split: str
    image_size: int
    batch: int
    teacher_arch: str
    teacher_overrides: dict
    teacher_steps: int
    student_steps: int
    student_overrides: dict          # arch -> overrides (cifar_stem is always set)
    queue_batches: int               # queue = queue_batches x batch (fresh keys at small batch)
    num_prototypes: int
    linear_epochs: int
    mechanism_student: str
    eval_batch: int
    shufflenet: str = "shufflenetv2_x1_0"  # the ShuffleNetV2 width of this scale
    # The demo's lr 0.06 is for batch 512, linearly scaled. Students follow that rule at every
    # scale. At a CPU batch it leaves a short teacher run where it started (peak 0.015 at 128),
    # so small scales give the teachers the demo's peak 0.06 itself (lr_scaling_batch = batch);
    # AlexNet students collapse at that peak (quick-start measurements, docs/results.md).
    teacher_lr_scaling_batch: int = 512
    # The demo's query SplitBN (8 groups) and per-epoch cosine; small scales run cross-batch
    # BN and a per-step cosine (a few hundred steps are a handful of epochs).
    student_bn: str = "split:8"
    cosine_unit: str = "epoch"

    def students(self, families=STUDENT_FAMILIES) -> tuple[str, ...]:
        return tuple(self.shufflenet if f == "shufflenetv2" else f for f in families)


SCALES = {
    "tiny": Scale(dataset="rekd_shapes/tiny", train_split="train", eval_split="test",
                  image_size=16, batch=16, teacher_arch="resnet18",
                  teacher_overrides={"width_multiplier": 0.125}, teacher_steps=4,
                  student_steps=3,
                  student_overrides={"resnet18": {"width_multiplier": 0.125},
                                     "mobilenetv3_large": {"width_multiplier": 0.25},
                                     "efficientnet_b0": {"width_multiplier": 0.25}},
                  queue_batches=4, num_prototypes=10, linear_epochs=2,
                  mechanism_student="alexnet", eval_batch=16, shufflenet="shufflenetv2_x0_5",
                  teacher_lr_scaling_batch=16, student_bn="global", cosine_unit="step"),
    "cpu": Scale(dataset="cifar10", train_split="train[:10000]", eval_split="test[:2000]",
                 image_size=16, batch=128, teacher_arch="resnet18",
                 teacher_overrides={"width_multiplier": 0.125}, teacher_steps=800,
                 student_steps=200,
                 student_overrides={"resnet18": {"width_multiplier": 0.125},
                                    "mobilenetv3_large": {"width_multiplier": 0.25},
                                    "efficientnet_b0": {"width_multiplier": 0.25}},
                 queue_batches=8, num_prototypes=100, linear_epochs=30,
                 mechanism_student="alexnet", eval_batch=256, shufflenet="shufflenetv2_x0_5",
                 teacher_lr_scaling_batch=128, student_bn="global", cosine_unit="step"),
    "gpu": Scale(dataset="cifar10", train_split="train", eval_split="test", image_size=32,
                 batch=512, teacher_arch="resnet18", teacher_overrides={},
                 teacher_steps=200 * 97, student_steps=50 * 97, student_overrides={},
                 queue_batches=8, num_prototypes=100, linear_epochs=100,
                 mechanism_student="resnet18", eval_batch=1024),
}


def _recipe(scale: Scale, data_dir: str, seed: int) -> ml_collections.ConfigDict:
    """cifar10() of configs/default.py with the scale's departures."""
    from configs import default
    config = default.cifar10(default.get_config())
    config.rng_seed = seed
    config.data.update(dataset=scale.dataset, data_dir=data_dir, train_split=scale.train_split,
                       eval_split=scale.eval_split, image_size=scale.image_size,
                       eval_resize=scale.image_size)
    config.global_batch_size = scale.batch
    config.student_bn = scale.student_bn
    config.optimizer.cosine_unit = scale.cosine_unit
    default.set_queue_size(config, scale.queue_batches * scale.batch)
    config.rekd.num_prototypes = scale.num_prototypes
    config.knn_monitor.every_epochs = 0
    config.log_every_steps = max(1, min(50, scale.student_steps // 8))
    config.checkpoint_every_steps = max(scale.teacher_steps, scale.student_steps)
    config.tensorboard = "off"
    return config


def _encoder(arch: str, overrides: dict) -> dict:
    return {"cifar_stem": True, **overrides}


def student_config(scale: Scale, arch: str, arm: str, data_dir: str,
                   seed: int) -> ml_collections.ConfigDict:
    """One student arm: 'mocov2' | 'seed' | 'rekd_offline' | 'rekd_online' | 'rekd_oracle'."""
    config = _recipe(scale, data_dir, seed)
    config.num_train_steps = scale.student_steps
    config.student.arch = arch
    config.student.overrides = _encoder(arch, scale.student_overrides.get(arch, {}))
    config.teacher.arch = scale.teacher_arch
    config.teacher.overrides = _encoder(scale.teacher_arch, scale.teacher_overrides)
    config.method = {"mocov2": "mocov2", "seed": "seed"}.get(arm, "rekd")
    if arm == "rekd_offline":
        config.rekd.teacher = "offline"
    elif arm == "rekd_online":
        config.rekd.teacher = "online"
    elif arm == "rekd_oracle":
        config.rekd.update(teacher="none", relation="oracle")
    return config


def teacher_config(scale: Scale, kind: str, data_dir: str,
                   seed: int = 0) -> ml_collections.ConfigDict:
    """'mocov2' (the self-supervised teacher) or 'supervised' (SupCon: oracle ablation)."""
    config = student_config(scale, scale.teacher_arch,
                            "mocov2" if kind == "mocov2" else "rekd_oracle", data_dir, seed)
    config.student.overrides = _encoder(scale.teacher_arch, scale.teacher_overrides)
    config.num_train_steps = scale.teacher_steps
    config.optimizer.lr_scaling_batch = scale.teacher_lr_scaling_batch
    return config


STUDENT_ARMS = (("mocov2", "MoCo v2", ""), ("seed", "SEED", "teacher/mocov2"),
                ("rekd_offline", "ReKD (offline)", "teacher/mocov2"),
                ("rekd_online", "ReKD (online)", ""))
MECHANISM_ARMS = (("mocov2", "MoCo v2", ""),
                  ("rekd_offline", "ReKD (offline)", "teacher/mocov2"),
                  ("rekd_supervised", "ReKD (sup. teacher)", "teacher/supervised"),
                  ("rekd_oracle", "ReKD (oracle rel.)", ""))


def build_plan(scale: Scale, data_dir: str, families=STUDENT_FAMILIES,
               seeds: int = 2) -> list[plan.Arm]:
    """Teachers, then the mechanism arms (question 4 first: it answers even if stopped early),
    then every student's arms. Arms shared by both (seed 0) appear once."""
    teacher_arch = f"{scale.teacher_arch}_teacher"  # its own row label: other widths/steps
    mocov2_teacher = teacher_config(scale, "mocov2", data_dir)
    arms = [dataclasses.replace(plan.random_init_arm(mocov2_teacher, "random_init/teacher",
                                                     group="teacher"), arch=teacher_arch),
            plan.Arm(name="teacher/mocov2", arch=teacher_arch, label="MoCo v2 (teacher)",
                     config=mocov2_teacher, group="teacher"),
            plan.Arm(name="teacher/supervised", arch=teacher_arch, label="SupCon (oracle)",
                     config=teacher_config(scale, "supervised", data_dir), group="teacher")]
    students = scale.students(families)
    ordered = sorted(students, key=lambda arch: arch != scale.mechanism_student)
    for arch in ordered:
        first = student_config(scale, arch, "mocov2", data_dir, 0)
        arms.append(plan.random_init_arm(first, f"random_init/{arch}", group="student"))
        if arch == scale.mechanism_student:
            for seed in range(seeds):
                for arm, label, teacher in MECHANISM_ARMS:
                    kind = "rekd_offline" if arm == "rekd_supervised" else arm
                    arms.append(plan.Arm(
                        name=f"{arch}/{arm}/s{seed}", arch=arch, label=label, teacher=teacher,
                        config=student_config(scale, arch, kind, data_dir, seed), seed=seed,
                        group="mechanism"))
        for arm, label, teacher in STUDENT_ARMS:
            name = f"{arch}/{arm}/s0"
            if not any(a.name == name for a in arms):
                arms.append(plan.Arm(name=name, arch=arch, label=label, teacher=teacher,
                                     config=student_config(scale, arch, arm, data_dir, 0),
                                     group="student"))
    return arms


def evaluation_config(scale: Scale, data_dir: str) -> ml_collections.ConfigDict:
    from rekd_jax.evaluation import config as eval_config
    config = eval_config.default_eval_config()
    config.data.update(dataset=scale.dataset, data_dir=data_dir, train_split=scale.train_split,
                       eval_split=scale.eval_split, image_size=scale.image_size,
                       eval_resize=scale.image_size, host_size=0)
    from configs import default
    config.data.augment = default.cifar10(default.get_config()).data.augment
    config.eval_batch_size = scale.eval_batch
    config.tensorboard = "off"
    config.linear.update(fast=True, epochs=scale.linear_epochs, batch_size=scale.eval_batch,
                         learning_rate=1.0, schedule="cosine", milestones=())
    config.knn.chunk_size = 256
    return config


def mechanism_summary(rows: list[dict]) -> dict:
    """Question 4: per mechanism arm, kNN / linear mean and spread (max - min) over seeds, and
    each ReKD arm's gain over MoCo v2 at equal steps."""
    out = {}
    for arm, label, _ in MECHANISM_ARMS:
        chosen = [r for r in rows if r["group"] == "mechanism" and f"/{arm}/" in r["name"]]
        if not chosen:
            continue
        entry = {"label": label, "seeds": [r["seed"] for r in chosen]}
        for mode in ("knn", "linear"):
            values = [r["eval"][mode]["top1"] for r in chosen if mode in r["eval"]]
            if values:
                entry[mode] = {"mean": float(np.mean(values)),
                               "spread": float(np.max(values) - np.min(values)),
                               "values": values}
        precision = [r["diagnostics"].get("positive_label_precision") for r in chosen
                     if r.get("method") == "rekd"]
        if precision and None not in precision:
            entry["label_precision"] = float(np.mean(precision))
        out[arm] = entry
    if "mocov2" in out:
        for arm, entry in out.items():
            if arm != "mocov2":
                for mode in ("knn", "linear"):
                    if mode in entry and mode in out["mocov2"]:
                        entry[f"{mode}_gain_over_mocov2"] = (entry[mode]["mean"]
                                                             - out["mocov2"][mode]["mean"])
    return out


def format_mechanism(summary: dict) -> str:
    lines = [f"{'mechanism arm':<22} {'kNN mean':>9} {'spread':>7} {'vs MoCo':>8} "
             f"{'linear mean':>12} {'spread':>7} {'vs MoCo':>8} {'label prec.':>11}"]
    for arm, e in summary.items():
        k, l = e.get("knn", {}), e.get("linear", {})
        f = lambda v, s=".1f": "-" if v is None else format(v, s)
        lines.append(f"{e['label']:<22} {f(k.get('mean')):>9} {f(k.get('spread')):>7} "
                     f"{f(e.get('knn_gain_over_mocov2'), '+.1f'):>8} {f(l.get('mean')):>12} "
                     f"{f(l.get('spread')):>7} {f(e.get('linear_gain_over_mocov2'), '+.1f'):>8} "
                     f"{f(e.get('label_precision'), '.3f'):>11}")
    return "\n".join(lines)


def run(scale_name: str, workdir: str, data_dir: str, *, families=STUDENT_FAMILIES,
        seeds: int = 2,
        plots: bool = True, log=print) -> dict:
    """Runs the study into WORKDIR; writes results.json, results.md and plots/; returns the
    results dict."""
    scale = SCALES[scale_name]
    start = time.time()
    arms = build_plan(scale, data_dir, families, seeds)
    evaluation = evaluation_config(scale, data_dir)
    cost = lambda a: (float(a.config.num_train_steps)
                      * (2.0 if a.config.method == "rekd" and a.config.rekd.teacher == "online"
                         else 1.0) if a.trained else 0.1 * scale.student_steps)
    rows = plan.run_plan(arms, workdir, evaluation, ("knn", "linear"), cost=cost, log=log)
    chance = plan.label_chance(evaluation.data, scale.eval_split)
    mechanism = mechanism_summary(rows)
    result = {"scale": scale_name, "scale_settings": dataclasses.asdict(scale),
              "data_dir": data_dir, "rows": rows, "chance": chance, "mechanism": mechanism,
              "seconds_this_invocation": round(time.time() - start, 1),
              "command": " ".join(sys.argv)}
    table = plan.format_table(rows, chance)
    mech = format_mechanism(mechanism)
    if plots:
        from rekd_jax.tools import report
        result["plots"] = report.study_plots(workdir, rows)
    from rekd_jax import fileio
    fileio.write_text(os.path.join(workdir, "results.md"),
                      f"# CIFAR-10 study, scale {scale_name}\n\n```\n{table}\n```\n\n"
                      f"Mechanism (question 4), {seeds} seeds:\n\n```\n{mech}\n```\n")
    fileio.write_json(os.path.join(workdir, "results.json"), result, default=float)
    log(table)
    log(mech)
    log(f"wrote {os.path.join(workdir, 'results.json')}, results.md and plots/")
    return result


def _ensure_dataset(scale: Scale, data_dir: str, src: str) -> None:
    """Prepares CIFAR-10 from a JPEG folder when it is not in data_dir yet."""
    from rekd_jax.data import sources
    if scale.dataset.startswith("rekd_shapes") or sources.find_dataset_dir(scale.dataset,
                                                                           data_dir):
        return
    if not src:
        raise SystemExit(f"FATAL: CIFAR-10 is not prepared in {data_dir!r}; pass --src=DIR "
                         "(a folder of cifar10/{train,test}/<class>/*.jpg, e.g. extracted from "
                         "cifar10-jpeg.tar.gz) to prepare it, or run `python -m "
                         "rekd_jax.data.prepare --src DIR --name cifar10 --data_dir "
                         f"{data_dir}` first.")
    from rekd_jax.data import prepare
    prepare.prepare(src, "cifar10", data_dir)


def main(argv=None) -> None:
    import argparse
    parser = argparse.ArgumentParser(
        prog="python -m rekd_jax.experiments.cifar10",
        description="ReKD vs SEED vs MoCo v2 on CIFAR-10 for five lightweight students, with "
                    "random-init baselines and the oracle mechanism check (see the module "
                    "docstring). Rerunning the same command skips finished runs.")
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--data_dir", default="", help="TFDS data dir holding cifar10")
    parser.add_argument("--src", default="", help="CIFAR-10 JPEG folder to prepare if needed")
    parser.add_argument("--students", default=",".join(STUDENT_FAMILIES),
                        help="comma-separated student families (shufflenetv2 takes the "
                             "scale's width)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds of the mechanism arms")
    parser.add_argument("--no_plots", action="store_true")
    args = parser.parse_args(argv)
    families = tuple(s for s in args.students.split(",") if s)
    unknown = [s for s in families if s not in STUDENT_FAMILIES]
    if unknown:
        raise SystemExit(f"FATAL: unknown student(s) {unknown}; use some of "
                         f"{','.join(STUDENT_FAMILIES)}")
    if args.seeds < 1:
        raise SystemExit("FATAL: --seeds must be >= 1")
    from rekd_jax.training import logging as logging_lib
    logging_lib.quiet_library_logs()
    _ensure_dataset(SCALES[args.scale], args.data_dir, args.src)
    os.makedirs(args.workdir, exist_ok=True)
    run(args.scale, args.workdir, args.data_dir, families=families, seeds=args.seeds,
        plots=not args.no_plots)


if __name__ == "__main__":
    sys.exit(errors.run_cli(main, debug=False))
