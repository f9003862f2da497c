"""Train-step throughput: images/s and estimated FLOP utilisation of the MoCo v2, SEED and ReKD
steps on synthetic data. Prints a table with the device; never asserts.

  python benchmarks/train_step.py --student=resnet18 --teacher=resnet50 --image_size=224 \
      --batch_size=256 --dtype=bfloat16 --methods=mocov2,seed,rekd
  python benchmarks/train_step.py --student=resnet18 --cifar_stem --width=0.125 \
      --teacher=resnet18 --teacher_width=0.25 --image_size=32 --batch_size=32 --steps=3

The step is the real one (rekd_jax.training.step: augmentation, shuffle-BN key encoders,
teacher forward, loss, pmean, SGD, EMA, queue updates) under pmap over all local devices; the
global batch is split across them. FLOPs per step come from XLA's cost analysis of the compiled
per-device program; utilisation = FLOPs / step time / the device's peak (dense bf16 tensor-core
peak for bfloat16, the float32 peak for float32; 'n/a' on devices without a known peak, e.g.
CPU). The SEED and offline-ReKD teachers get random weights (their speed does not depend on
them). ReKD runs with the teacher of --rekd_teacher (online: trained in the same step).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np
from absl import app, flags

from rekd_jax import methods, recipes
from rekd_jax.core import parallel
from rekd_jax.training import optim
from rekd_jax.training import state as state_lib
from rekd_jax.training import step as step_lib

flags.DEFINE_list("methods", ["mocov2", "seed", "rekd"], "steps to time")
flags.DEFINE_string("student", "resnet18", "student architecture")
flags.DEFINE_string("teacher", "resnet50", "teacher architecture (SEED, ReKD)")
flags.DEFINE_float("width", 0.0, "ResNet student width_multiplier (0 = the name's)")
flags.DEFINE_float("teacher_width", 0.0, "ResNet teacher width_multiplier (0 = the name's)")
flags.DEFINE_bool("cifar_stem", False, "32x32 stems for student and teacher")
flags.DEFINE_integer("image_size", 224, "training view resolution (the stored images too)")
flags.DEFINE_integer("batch_size", 256, "global batch size")
flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "compute dtype")
flags.DEFINE_enum("rekd_teacher", "online", ["online", "offline"], "ReKD teacher mode")
flags.DEFINE_integer("queue_size", 0, "queue size (0 = 16 x batch)")
flags.DEFINE_integer("steps", 10, "timed steps (after one warm-up step)")
FLAGS = flags.FLAGS

# Dense per-chip peaks in FLOP/s: (bfloat16 tensor core, float32).
PEAKS = {
    "H100": (989e12, 67e12),
    "H200": (989e12, 67e12),
    "A100": (312e12, 19.5e12),
    "V100": (125e12, 15.7e12),
    "TPU v4": (275e12, 275e12 / 2),
    "TPU v5": (459e12, 229e12),
}


def peak_flops(device, dtype: str) -> float | None:
    kind = device.device_kind
    for name, (bf16, fp32) in PEAKS.items():
        if name.lower() in kind.lower():
            return bf16 if dtype == "bfloat16" else fp32
    return None


def make_config(method: str):
    config = recipes.base_config()
    config.method = method
    config.dtype = FLAGS.dtype
    config.data.image_size = FLAGS.image_size
    config.global_batch_size = FLAGS.batch_size
    recipes.set_queue_size(config, FLAGS.queue_size or 16 * FLAGS.batch_size)
    config.rekd.teacher = FLAGS.rekd_teacher
    for part, arch, width in (
        (config.student, FLAGS.student, FLAGS.width),
        (config.teacher, FLAGS.teacher, FLAGS.teacher_width),
    ):
        part.arch = arch
        overrides = {"cifar_stem": True} if FLAGS.cifar_stem else {}
        if width:
            overrides["width_multiplier"] = width
        part.overrides = overrides
    return config


def bench(method: str) -> dict:
    config = make_config(method)
    mode = methods.teacher_plan(config).mode
    teacher_spec = teacher_vars = None
    if mode == "offline":
        teacher_spec = state_lib.encoder_spec(config.teacher, "benchmark (random weights)")
        module = state_lib.build_encoder_module(teacher_spec, dtype="float32", bn_axis_name=None)
        dummy = np.zeros((1, FLAGS.image_size, FLAGS.image_size, 3), np.float32)
        teacher_vars = module.init(jax.random.PRNGKey(1), dummy, train=False)
    modules = state_lib.build_modules(config, teacher_spec)
    devices = jax.local_devices()
    n = len(devices)
    schedule = optim.learning_rate_schedule(config.optimizer, FLAGS.batch_size, 1000, 0)
    tx = optim.create_optimizer(config.optimizer, schedule)
    state = state_lib.create_train_state(config, modules, tx)
    step_cfg = step_lib.make_step_config(config, modules, tx, schedule, FLAGS.batch_size, n)
    p_step = step_lib.make_pmapped_step(step_cfg)
    rng = np.random.RandomState(0)
    size = FLAGS.image_size
    batch = {
        "image": rng.randint(0, 256, (n, FLAGS.batch_size // n, size, size, 3), np.uint8),
        "label": rng.randint(0, 10, (n, FLAGS.batch_size // n)).astype(np.int32),
    }
    p_state = parallel.replicate(state)
    p_teacher = parallel.replicate(teacher_vars or {})
    batch = jax.pmap(lambda b: b)(batch)  # on the devices once, sharded like the step's input
    t0 = time.time()
    compiled = p_step.lower(p_state, batch, p_teacher, None).compile()
    compile_s = time.time() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    p_state, metrics = p_step(p_state, batch, p_teacher, None)  # warm-up
    jax.block_until_ready(metrics)
    t0 = time.time()
    for _ in range(FLAGS.steps):
        p_state, metrics = p_step(p_state, batch, p_teacher, None)
    jax.block_until_ready((p_state, metrics))
    step_s = (time.time() - t0) / FLAGS.steps
    peak = peak_flops(devices[0], FLAGS.dtype)
    return {
        "method": method + (f" ({mode})" if mode else ""),
        "compile_s": compile_s,
        "step_ms": step_s * 1e3,
        "images_per_s": FLAGS.batch_size / step_s,
        "gflop_per_device_step": flops / 1e9,
        "utilisation": (flops / step_s / peak) if (peak and flops) else None,
    }


def main(argv):
    del argv
    dev = jax.local_devices()[0]
    print(
        f"device: {jax.local_device_count()} x {dev.device_kind} ({dev.platform}); "
        f"student {FLAGS.student} teacher {FLAGS.teacher} {FLAGS.image_size}px "
        f"batch {FLAGS.batch_size} {FLAGS.dtype}"
    )
    header = (
        f"{'method':<16} {'compile s':>9} {'step ms':>9} {'images/s':>10} "
        f"{'GFLOP/dev/step':>15} {'FLOP util':>9}"
    )
    print(header)
    print("-" * len(header))
    for method in FLAGS.methods:
        r = bench(method)
        util = "n/a" if r["utilisation"] is None else f"{100 * r['utilisation']:.1f}%"
        print(
            f"{r['method']:<16} {r['compile_s']:>9.1f} {r['step_ms']:>9.1f} "
            f"{r['images_per_s']:>10.1f} {r['gflop_per_device_step']:>15.2f} {util:>9}",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
