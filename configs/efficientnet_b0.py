"""ReKD on ImageNet: an EfficientNet-B0 student and an online ResNet-50 teacher trained alongside.

Command:
  python main.py --config=configs/efficientnet_b0.py --workdir=/ckpt/rekd_efficientnet_b0
Then evaluate WORKDIR/encoders/student with configs/linear_eval.py.
Variants: those of every ImageNet student (rekd_jax.recipes.STUDENT_VARIANTS; `python main.py
--help` describes each): offline (a frozen teacher, --config.teacher.checkpoint=DIR), mocov2
and seed (the baselines), shapes / tiny (the embedded data), runlocal (laptop sizes); the smoke
run is --config=configs/efficientnet_b0.py:offline,tiny,runlocal (about a minute).
Hardware / time: 8 GPUs of H100 class (global batch 256, bf16); an estimate, not measured:
roughly 1-2 days with the online teacher (about 2.2x MoCo v2, paper), less offline.
Expected result (approximate reference from secondary summaries of the paper, not measured
by us): ImageNet linear top-1 about 67% (MoCo v2 EfficientNet-B0 42.2% plus about +25 points).
"""

import functools

from rekd_jax import recipes
from rekd_jax.variants import config_getter

VARIANTS = recipes.STUDENT_VARIANTS
get_config = config_getter(
    functools.partial(recipes.imagenet_student, "efficientnet_b0"),
    VARIANTS,
    "configs/efficientnet_b0.py",
)
