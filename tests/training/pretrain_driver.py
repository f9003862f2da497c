"""Subprocess driver for the training tests (not collected by pytest).

  python tests/training/pretrain_driver.py WORKDIR [--checkpoint_every N] [--pause_after_save S]
      [--nan_at_step K] [--process_id I --num_processes P --port PORT]

Runs configs/quickstart.py:tiny's teacher stage (MoCo v2, 0.125-width CIFAR ResNet-18, 16 px,
rekd_shapes/tiny, 6 steps) with rekd_jax.training.pretrain.train_and_evaluate, so every test
shares one compiled step through the persistent compilation cache. Test hooks (host side only,
the compiled step is unchanged): --pause_after_save sleeps after each checkpoint save (so the
test can SIGKILL the run mid-way), --nan_at_step makes the reported loss of that step NaN.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--checkpoint_every", type=int, default=2)
    parser.add_argument("--pause_after_save", type=float, default=0.0)
    parser.add_argument("--nan_at_step", type=int, default=0)
    parser.add_argument("--process_id", type=int, default=-1)
    parser.add_argument("--num_processes", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    from configs import quickstart
    from rekd_jax.core import checkpoint as checkpoint_lib
    from rekd_jax.training import config as config_lib
    from rekd_jax.training import pretrain
    from rekd_jax.training import step as step_lib

    config = quickstart.get_config("tiny").runs.teacher
    config.checkpoint_every_steps = args.checkpoint_every
    config.log_every_steps = 1
    config.keep_checkpoints = 10
    config.async_checkpointing = False
    config.export_encoder_steps = (3,)  # a kept encoder snapshot between checkpoints
    if args.process_id >= 0:
        config.distributed.update(
            enabled=True,
            coordinator_address=f"127.0.0.1:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    config_lib.validate(config) if config.mode == "pretrain" else None

    if args.pause_after_save:
        save = checkpoint_lib.Checkpointer.save

        def save_then_pause(self, step, tree, extra=None):
            out = save(self, step, tree, extra)
            self.wait()
            print(f"saved step {step}", flush=True)
            time.sleep(args.pause_after_save)
            return out

        checkpoint_lib.Checkpointer.save = save_then_pause

    if args.nan_at_step:
        make = step_lib.make_pmapped_step

        def make_with_nan(cfg):
            p_step = make(cfg)
            calls = {"n": 0}

            def wrapped(state, batch, teacher, resident):
                state, metrics = p_step(state, batch, teacher, resident)
                calls["n"] += 1
                if calls["n"] + int(os.environ.get("DRIVER_START_STEP", "0")) == args.nan_at_step:
                    metrics = dict(metrics, loss=metrics["loss"] * float("nan"))
                return state, metrics

            return wrapped

        step_lib.make_pmapped_step = make_with_nan

    summary = pretrain.train_and_evaluate(config, args.workdir)
    print("final step", summary["step"], flush=True)


if __name__ == "__main__":
    main()
