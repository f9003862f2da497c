"""Learning-rate schedule (linear warmup + cosine) and SGD with momentum and weight decay.

lr(step) = base_learning_rate * global_batch / lr_scaling_batch, reached linearly over the
warmup steps, then cosine-decayed to 0 at the last step (MoCo v2 recipe: 0.03 x batch/256,
cosine, no warmup). Weight decay is added to the gradient before momentum, as PyTorch's SGD does.

`optimizer.cosine_unit` says how often the cosine moves:
  'step'   every optimiser step (smooth; the default);
  'epoch'  once per epoch, as MoCo does: facebookresearch/moco main_moco.py
           `adjust_learning_rate` sets lr = lr0 * 0.5 * (1 + cos(pi * epoch / epochs)) at the
           start of each epoch, so the whole of epoch e runs at that value (epoch 0 at the peak).
           Warm-up, if any, still ramps per step; the cosine after it counts whole epochs.
"""

from __future__ import annotations

import jax
import ml_collections
import optax


def peak_learning_rate(opt_cfg: ml_collections.ConfigDict, global_batch_size: int) -> float:
    return opt_cfg.base_learning_rate * global_batch_size / opt_cfg.lr_scaling_batch


COSINE_UNITS = ("step", "epoch")


def learning_rate_schedule(
    opt_cfg: ml_collections.ConfigDict,
    global_batch_size: int,
    total_steps: int,
    warmup_steps: int,
    steps_per_epoch: int | None = None,
) -> optax.Schedule:
    """Linear warmup from 0 over `warmup_steps`, then cosine decay to 0 at `total_steps`,
    updated every step or, with opt_cfg.cosine_unit='epoch', every `steps_per_epoch` steps."""
    peak = peak_learning_rate(opt_cfg, global_batch_size)
    unit = opt_cfg.cosine_unit
    if unit not in COSINE_UNITS:
        raise ValueError(f"config.optimizer.cosine_unit={unit!r}: use one of {COSINE_UNITS}")
    cosine = optax.cosine_decay_schedule(peak, max(1, total_steps - warmup_steps))
    if unit == "epoch":
        if not steps_per_epoch or steps_per_epoch < 1:
            raise ValueError("learning_rate_schedule: cosine_unit='epoch' needs steps_per_epoch")
        per_step, every = cosine, int(steps_per_epoch)
        cosine = lambda count: per_step(count - count % every)
    if warmup_steps <= 0:
        return cosine
    warmup = optax.linear_schedule(0.0, peak, warmup_steps)
    return optax.join_schedules([warmup, cosine], [warmup_steps])


def weight_decay_mask(params):
    """True for kernels; False for 1-D leaves (BatchNorm scale/bias and biases)."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def create_optimizer(
    opt_cfg: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """SGD(momentum, nesterov) with weight decay added to the gradient (PyTorch-style)."""
    mask = weight_decay_mask if opt_cfg.exclude_bn_and_bias_from_weight_decay else None
    return optax.chain(
        optax.add_decayed_weights(opt_cfg.weight_decay, mask=mask),
        optax.sgd(schedule, momentum=opt_cfg.momentum or None, nesterov=opt_cfg.nesterov),
    )
