"""Evaluation entry point: `evaluate(config, workdir)` runs the protocol config.mode names
(rekd_jax.evaluation.protocols).

    python main.py --config=configs/linear_eval.py --config.checkpoint=W/encoders/student \
        --workdir=W/eval_linear

Writes WORKDIR/results_<mode>.json, prints a table, logs to WORKDIR/metrics.jsonl (and
TensorBoard with TensorFlow), caches frozen features under WORKDIR/features and checkpoints
probe / fine-tuning state under WORKDIR/ckpt_<mode>: rerunning the same command resumes from
the latest checkpoint (and, once training is done, only re-scores); metrics.jsonl then loses
the records logged after that checkpoint and any torn last line, so each epoch appears once.

Before anything is loaded, extracted or trained, a workdir that holds another kind of run
(run_record.check_mode) or a probe checkpoint written under other settings (another image
size, encoder, dataset or protocol field: epoch_loop.check_signature) stops the run with one line
that names the differences and the flags to use; config.json is written only after these checks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import jax

from rekd_jax.core import distributed, fileio, run_record, workdir_lock
from rekd_jax.core import logging as metric_logging
from rekd_jax.evaluation import common, protocols
from rekd_jax.evaluation import config as eval_config
from rekd_jax.readout import features


def evaluate(config, workdir: str) -> dict:
    """Run the evaluation protocol of `config.mode` on `config.checkpoint`; returns the results.

    The results dict (also written as WORKDIR/results_<mode>.json) holds 'top1' / 'top5' (in %)
    and 'count' (examples scored: the whole evaluation split) plus protocol details; the conv
    probe adds a per-layer table under 'layers'.
    """
    eval_config.validate(config)
    distributed.initialize(config.distributed)
    with workdir_lock.WorkdirLock(workdir, "evaluation", primary=jax.process_index() == 0):
        return _evaluate(config, workdir)


def _evaluate(config, workdir: str) -> dict:
    fileio.makedirs(workdir)
    primary = jax.process_index() == 0
    folder = f"eval_{config.mode}"  # the workdir a refused run is pointed to instead
    run_record.check_mode(workdir, config, folder)
    protocol = protocols.PROTOCOLS[config.mode]
    resumed_epoch = common.check_saved_settings(config, workdir) if protocol.TRAINED else 0
    if primary:
        run_record.write_config(workdir, config, folder)
        metric_logging.trim_metrics(os.path.join(workdir, "metrics.jsonl"), resumed_epoch)
    writer = metric_logging.create_writer(
        workdir, is_primary=primary, tensorboard=config.tensorboard
    )
    start = time.time()
    backbone = features.load_backbone(config.checkpoint, dtype=config.dtype)
    result = protocol.evaluate(config, workdir, backbone, writer)
    result = {
        "mode": config.mode,
        "checkpoint": features.checkpoint_identity(config.checkpoint)["checkpoint"],
        "arch": backbone.spec["arch"],
        "dataset": config.data.dataset,
        "eval_split": config.data.eval_split,
        **result,
        "seconds": round(time.time() - start, 1),
    }
    writer.write_scalars(0, {f"{config.mode}/{k}": result[k] for k in ("top1", "top5")})
    writer.flush()
    writer.close()
    if primary:
        fileio.write_json(
            os.path.join(workdir, f"results_{config.mode}.json"), result, sort_keys=True
        )
        print(format_table(result))
    return result


def format_table(result: Mapping[str, Any]) -> str:
    """A small text table of the results (one row per head for the conv probe)."""
    rows = result.get("layers") or {result["mode"]: result}
    lines = [
        f"{result['mode']} evaluation of {result['arch']} ({result['checkpoint']}) on "
        f"{result['dataset']}/{result['eval_split']}",
        f"{'head':<16} {'top-1 %':>8} {'top-5 %':>8} {'examples':>9}",
    ]
    for name, r in rows.items():
        lines.append(f"{name:<16} {r['top1']:>8.2f} {r['top5']:>8.2f} {r['count']:>9d}")
    return "\n".join(lines)
