"""Bytes each device sends per step for shuffle-BN of one key encoder, by config.key_shuffle mode,
read from the XLA HLO of the real pmapped `step.shuffled_key_forward` over fake CPU devices.
Prints a table (mode x devices -> MB sent per device per step, and the ratio); never asserts.

  python benchmarks/shuffle_bytes.py                       # 8, 32, 256 devices; 224 px; b=32
  python benchmarks/shuffle_bytes.py --devices=4,8 --compile_devices=4,8 --per_device_batch=128

It runs on CPU (JAX_PLATFORMS=cpu) with 256 fake devices unless XLA_FLAGS is already set.
Lowering takes seconds per cell; compiling the 224 px ResNet-18 on CPU 10-40 s.

Every cell lowers the pmapped key forward (ResNet-18 + MoCo v2 projector by default, BN groups
and shuffle exactly as in training) for D fake devices and sums the collectives of its HLO: the
image exchange (all-gather / collective-permute of the input), the embedding exchange, and the
all-reduce (pmean) of the BN statistics. Per device, as a ring implementation sends them:
all-gather of B bytes per device over G devices: (G-1) B; collective-permute: B (every device
sends in a ring rotation); all-reduce: 2 (G-1)/G B. The HLO is XLA's (before optimisation:
`lowered`; or after: `compiled`, slower on CPU; --compile_devices picks where both are read
and compared). `analytic` is the closed form (b images per device of H x W x 3 in the compute
dtype, E=128 float32 embeddings, S bytes of BN statistics, P = key_shuffle_devices):
  all_gather: (D-1) b (img + 4E) + 2 (D-1)/D S
  ppermute:   (P-1)/P b (img + 4E) + 2 (D-1)/D S
For context the table ends with the gradient all-reduce of the train step (the encoder's
float32 parameters, 2 (D-1)/D x bytes, analytic), which both modes pay. A MoCo v2 step, or
ReKD with an offline teacher, runs one key encoder; ReKD with an online teacher two (student's
and teacher's); SEED none.
"""

from __future__ import annotations

import os
import re
import sys
import time

os.environ["JAX_PLATFORMS"] = "cpu"  # the HLO's collectives do not depend on the platform
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=256")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from rekd_jax import recipes
from rekd_jax.core import parallel
from rekd_jax.training import config as config_lib
from rekd_jax.training import state as state_lib
from rekd_jax.training import step as step_lib

flags.DEFINE_list("devices", ["8", "32", "256"], "device counts D")
flags.DEFINE_list(
    "compile_devices",
    ["8"],
    "device counts where the compiled HLO is read too "
    "and compared with the lowered one (empty: none)",
)
flags.DEFINE_list("modes", list(step_lib.KEY_SHUFFLES), "config.key_shuffle modes")
flags.DEFINE_list("dtypes", ["bfloat16", "float32"], "compute dtypes (the images' dtype)")
flags.DEFINE_string("arch", "resnet18", "key encoder architecture (ImageNet stem)")
flags.DEFINE_integer("image_size", 224, "view resolution")
flags.DEFINE_integer("per_device_batch", 32, "images per device b")
flags.DEFINE_integer("key_bn_splits", 0, "config.key_bn_splits (0 = auto)")
flags.DEFINE_integer("key_shuffle_devices", 0, "config.key_shuffle_devices (0 = auto)")
FLAGS = flags.FLAGS

DTYPE_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
}
COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "all-to-all")
_OP = re.compile(
    r"=\s*(?P<out>.*?)\s(?P<op>all-gather|all-reduce|collective-permute|all-to-all)"
    r"(?P<start>-start)?\((?P<args>[^)]*)\)(?P<attrs>.*)$"
)
_SHAPE = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([0-9,]*)\]")


def _bytes(text: str) -> int:
    return sum(
        DTYPE_BYTES[t] * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
        for t, dims in _SHAPE.findall(text)
    )


def _group_size(attrs: str, num_devices: int) -> int:
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", attrs)
    if iota:
        return int(iota.group(2))
    groups = re.search(r"replica_groups=\{\{([0-9,]*)\}", attrs)
    return len(groups.group(1).split(",")) if groups else num_devices


def collective_bytes(hlo_text: str, num_devices: int) -> dict:
    """Per-device bytes sent by each kind of collective of an HLO module (ring model, above)."""
    sent = {op: 0.0 for op in COLLECTIVES}
    for line in hlo_text.splitlines():
        m = _OP.search(line)
        if not m:
            continue
        # Operand bytes from the result shape (the text before optimisation does not print
        # operand shapes): the same, or 1/G of it for all-gather. An async -start returns
        # (operand, result[, ...]): its first shape is the operand.
        op, out = m.group("op"), m.group("out")
        operand = _bytes(_SHAPE.search(out).group(0)) if m.group("start") else _bytes(out)
        g = _group_size(m.group("attrs"), num_devices)
        if op == "all-gather":
            operand = operand if m.group("start") else operand / g
            sent[op] += (g - 1) * operand
        elif op == "all-reduce":
            sent[op] += 2 * (g - 1) / g * operand
        elif op == "all-to-all":
            sent[op] += (g - 1) / g * operand
        else:
            pairs = re.findall(r"\{(\d+),(\d+)\}", m.group("attrs"))
            moving = sum(1 for s, t in pairs if s != t)
            sent[op] += operand * moving / num_devices
    return sent


def cell(mode: str, num_devices: int, dtype: str, compiled: bool):
    config = recipes.base_config()
    config.update(
        key_shuffle=mode,
        key_bn_splits=FLAGS.key_bn_splits,
        dtype=dtype,
        key_shuffle_devices=FLAGS.key_shuffle_devices if mode == "ppermute" else 0,
        global_batch_size=num_devices * FLAGS.per_device_batch,
    )
    config.data.image_size = FLAGS.image_size
    config.student.arch, config.student.overrides = FLAGS.arch, {}
    config_lib.check_devices(config, num_devices)
    spec = state_lib.encoder_spec(config.student, "benchmarks/shuffle_bytes.py")
    module = state_lib.build_encoder_module(
        spec, dtype=state_lib.compute_dtype(config), bn_axis_name=None
    )
    cfg = step_lib.make_step_config(config, None, None, None, config.global_batch_size, num_devices)
    size, b = FLAGS.image_size, FLAGS.per_device_batch
    variables = jax.eval_shape(
        lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((2, size, size, 3)), train=False)
    )
    f = jax.pmap(
        lambda x, v, rng: step_lib.shuffled_key_forward(cfg, module, v, x, rng, rng),
        axis_name=parallel.AXIS_NAME,
        in_axes=(0, None, None),
        devices=jax.devices()[:num_devices],
    )
    x = jax.ShapeDtypeStruct((num_devices, b, size, size, 3), state_lib.compute_dtype(config))
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    lowered = f.lower(x, variables, key)
    text = lowered.compile().as_text() if compiled else lowered.as_text(dialect="hlo")
    sent = collective_bytes(text, num_devices)
    image_bytes = size * size * 3 * jnp.dtype(state_lib.compute_dtype(config)).itemsize
    emb_bytes = 4 * spec["projector"]["dim"]
    stats = sum(
        int(np.prod(v.shape)) * v.dtype.itemsize
        for v in jax.tree_util.tree_leaves(variables.get("batch_stats", {}))
    )
    params = sum(int(np.prod(v.shape)) * 4 for v in jax.tree_util.tree_leaves(variables["params"]))
    d, p = num_devices, cfg.key_shuffle_devices
    moved = (d - 1) * b if mode == "all_gather" else (p - 1) * b / p
    analytic = moved * (image_bytes + emb_bytes) + 2 * (d - 1) / d * stats
    as_float32 = analytic + moved * (size * size * 3 * 4 - image_bytes)
    return {
        "sent": sent,
        "total": sum(sent.values()),
        "analytic": analytic,
        "as_float32": as_float32,
        "P": p,
        "grad_allreduce": 2 * (d - 1) / d * params,
    }


def match(r) -> str:
    if abs(r["total"] - r["analytic"]) < 1:
        return "yes"
    return "f32 (*)" if abs(r["total"] - r["as_float32"]) < 1 else "NO"


def main(argv):
    del argv
    devices = [int(d) for d in FLAGS.devices]
    compile_at = {int(d) for d in FLAGS.compile_devices}
    if max(devices + list(compile_at)) > jax.device_count():
        raise SystemExit(
            f"{jax.device_count()} fake devices; set XLA_FLAGS="
            f"--xla_force_host_platform_device_count={max(devices)}"
        )
    print(
        f"shuffle-BN of one {FLAGS.arch} key encoder, {FLAGS.image_size} px, "
        f"b={FLAGS.per_device_batch} images per device; MB = 1e6 bytes sent per device per "
        f"step (ring model), from XLA's HLO over fake CPU devices (jax {jax.__version__})"
    )
    header = (
        f"{'dtype':<9} {'D':>4} {'mode':<11} {'P':>2} {'hlo':<9} {'all-gather':>10} "
        f"{'c-permute':>10} {'all-reduce':>10} {'total MB':>10} {'analytic':>10} "
        f"{'ratio':>7} {'=analytic':>9}"
    )
    print(header)
    print("-" * len(header))
    context, upcast = {}, False
    for dtype in FLAGS.dtypes:
        for d in devices:
            totals = {}
            for mode in FLAGS.modes:
                kinds = ["lowered"] + (["compiled"] if d in compile_at else [])
                for kind in kinds:
                    t0 = time.time()
                    r = cell(mode, d, dtype, kind == "compiled")
                    totals.setdefault(mode, r["total"])
                    context[d] = r["grad_allreduce"]
                    upcast |= match(r) == "f32 (*)"
                    ratio = totals.get("all_gather", r["total"]) / max(r["total"], 1)
                    print(
                        f"{dtype:<9} {d:>4} {mode:<11} {r['P'] or '-':>2} {kind:<9} "
                        f"{r['sent']['all-gather'] / 1e6:>10.2f} "
                        f"{r['sent']['collective-permute'] / 1e6:>10.2f} "
                        f"{r['sent']['all-reduce'] / 1e6:>10.3f} {r['total'] / 1e6:>10.2f} "
                        f"{r['analytic'] / 1e6:>10.2f} {ratio:>7.1f} "
                        f"{match(r):>9}"
                        f"  ({time.time() - t0:.0f} s)",
                        flush=True,
                    )
    if upcast:
        print(
            "(*) XLA:CPU converts bfloat16 collective operands to float32 before sending (its "
            "compiled HLO moves 4-byte images); on TPU and GPU, whose collectives take "
            "bfloat16, the lowered HLO's bytes apply."
        )
    print(
        "context, analytic: the train step's gradient all-reduce of the float32 "
        f"{FLAGS.arch} + projector parameters, MB per device per step: "
        + ", ".join(f"D={d}: {v / 1e6:.1f}" for d, v in sorted(context.items()))
    )


if __name__ == "__main__":
    app.run(main)
