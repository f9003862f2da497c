"""ReKD on ImageNet: a ShuffleNetV2 1.0x student and an online ResNet-50 teacher trained alongside.

Command:
  python main.py --config=configs/shufflenetv2.py --workdir=/ckpt/rekd_shufflenetv2
Then evaluate WORKDIR/encoders/student with configs/linear_eval.py.
Variants: those of every ImageNet student (rekd_jax.recipes.STUDENT_VARIANTS; `python main.py
--help` describes each): offline (a frozen teacher, --config.teacher.checkpoint=DIR), mocov2
and seed (the baselines), shapes / tiny (the embedded data), runlocal (laptop sizes); the smoke
run is --config=configs/shufflenetv2.py:offline,tiny,runlocal (about a minute).
Hardware / time: 8 GPUs of H100 class (global batch 256, bf16); an estimate, not measured:
roughly 1-2 days with the online teacher (about 2.2x MoCo v2, paper), less offline.
Expected result (approximate reference from secondary summaries of the paper, not measured
by us): about +10 points ImageNet linear top-1 over the MoCo v2 ShuffleNetV2 baseline
(`:mocov2` variant); the absolute number is not known to us.
"""

import functools

from rekd_jax import recipes
from rekd_jax.variants import config_getter

VARIANTS = recipes.STUDENT_VARIANTS
get_config = config_getter(
    functools.partial(recipes.imagenet_student, "shufflenetv2_x1_0"),
    VARIANTS,
    "configs/shufflenetv2.py",
)
