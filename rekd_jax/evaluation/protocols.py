"""The evaluation protocols, the one registry: config.mode -> its protocol module.

A protocol is one module plus its entry here. The module owns its config block and what runs
it:

  NAME                      the mode and the name of its config block (config.NAME)
  TRAINED                   True when it keeps a resumable state in WORKDIR/ckpt_NAME (its
                            block is then a training block: rekd_jax.evaluation.common)
  default_block()           the block's fields with their defaults
  validate(config)          ValueError naming a bad field of the block (the fields every
                            protocol shares are checked by evaluation.config.validate)
  runlocal(block)           shrinks the block for a laptop CPU (the runlocal variant)
  evaluate(config, workdir, backbone, writer) -> dict
                            runs the protocol on the loaded encoder; the dict holds 'top1' /
                            'top5' (in %) and 'count' (examples scored) plus its details

evaluation.config builds every block and validates config.mode's, evaluation.run loads the
encoder and calls evaluate, rekd_jax.app dispatches every mode of PROTOCOLS to evaluation.run.
"""

from __future__ import annotations

from rekd_jax.evaluation import conv_probe, knn, linear_probe, semi_supervised

PROTOCOLS = {module.NAME: module for module in (linear_probe, conv_probe, knn, semi_supervised)}
