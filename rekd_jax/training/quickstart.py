"""The quick start: train a teacher, distil a student with ReKD, train the MoCo v2 baseline,
evaluate all three (kNN + linear probe) and print a table. Runs on a laptop CPU.

`run(config, workdir) -> dict` (mode 'quickstart', configs/quickstart.py). Layout of WORKDIR:
  teacher/, student/, baseline/      pre-training workdirs (checkpoints, encoders, metrics)
  <run>/eval_<mode>/                 evaluation workdirs (rekd_jax.evaluation.run)
  results.json                       the table below as JSON
Each stage resumes like any pre-training run, so rerunning the command after an interruption
continues where it stopped. The student's offline teacher is teacher/encoders/student.
"""
from __future__ import annotations

import json
import os
import time

import ml_collections

from rekd_jax.training import pretrain


def _evaluate(config, encoder_dir: str, workdir: str) -> dict:
    from rekd_jax.evaluation import run as eval_run
    out = {}
    for mode in config.eval_modes:
        cfg = config.evaluation.copy_and_resolve_references()
        cfg.mode = mode
        cfg.checkpoint = encoder_dir
        result = eval_run.evaluate(cfg, os.path.join(workdir, f"eval_{mode}"))
        out[mode] = {"top1": float(result["top1"]), "top5": float(result["top5"])}
    return out


def format_table(rows: list[dict]) -> str:
    header = f"{'run':<9} {'method':<7} {'arch':<10} {'steps':>5} {'train s':>8} " \
             f"{'kNN top1':>9} {'linear top1':>12}"
    lines = [header, "-" * len(header)]
    for r in rows:
        knn = r["eval"].get("knn", {}).get("top1")
        lin = r["eval"].get("linear", {}).get("top1")
        fmt = lambda v: "n/a" if v is None else f"{v:.1f}"
        lines.append(f"{r['run']:<9} {r['method']:<7} {r['arch']:<10} {r['steps']:>5} "
                     f"{r['train_seconds']:>8.0f} {fmt(knn):>9} {fmt(lin):>12}")
    return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs every stage; returns {'rows': [...], 'seconds': total}."""
    start = time.time()
    rows = []
    teacher_encoder = os.path.join(workdir, "teacher", "encoders", "student")
    for name in ("teacher", "student", "baseline"):
        if name not in config.runs:
            continue
        run_cfg = config.runs[name].copy_and_resolve_references()
        if run_cfg.method in ("seed", "rekd") and name != "teacher":
            run_cfg.teacher.checkpoint = teacher_encoder
        run_dir = os.path.join(workdir, name)
        summary = pretrain.train_and_evaluate(run_cfg, run_dir)
        rows.append({"run": name, "method": run_cfg.method, "arch": run_cfg.student.arch,
                     # summed over the first run and its resumes (a finished stage adds 0)
                     "steps": summary["step"], "train_seconds": summary["train_seconds"],
                     "final_loss": summary["metrics"].get("train/loss"),
                     "encoder": summary["encoders"]["student"]})
        rows[-1]["eval"] = _evaluate(config, summary["encoders"]["student"], run_dir)
    result = {"rows": rows, "seconds": round(time.time() - start, 1)}
    table = format_table(rows)
    print(table)
    print(f"total {result['seconds']:.0f} s; results in {os.path.join(workdir, 'results.json')}")
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result
