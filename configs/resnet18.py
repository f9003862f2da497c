"""ReKD on ImageNet: a ResNet-18 student and an online ResNet-50 teacher trained alongside.

Command:
  python main.py --config=configs/resnet18.py --workdir=/ckpt/rekd_resnet18
Variants (comma-separated after ':'): offline (frozen teacher from
--config.teacher.checkpoint=T/encoders/student of a configs/teacher_resnet50.py run, or an
import_torch output), mocov2 (baseline: the student alone with MoCo v2), seed (SEED from a
frozen teacher), shapes / tiny (the embedded rekd_shapes / its 200-image toy split, CIFAR
stems), runlocal (shrink steps and sizes for a laptop CPU, keeping the dataset), e.g. the
smoke run --config=configs/resnet18.py:offline,tiny,runlocal (about a minute).
Then evaluate WORKDIR/encoders/student with configs/linear_eval.py.
Hardware / time: 8 GPUs of H100 class (global batch 256, bf16); an estimate, not measured:
MoCo v2 ResNet-50 for 200 epochs took about 53 h on 8 V100s (MoCo v2 paper), and ReKD with an
online ResNet-50 teacher costs about 2.2x MoCo v2 (paper), so plan on roughly 1-2 days on
8 H100s; the offline variant costs about the student's MoCo v2 time plus teacher forwards.
Expected result: not reported for ReKD in what we know of the paper. References (not
measured by us): MoCo v2 ResNet-18 52.5%, SEED ResNet-18 with a ResNet-50x2 teacher 63.0%
ImageNet linear top-1; ReKD should land above MoCo v2.
"""

import functools

from rekd_jax import recipes
from rekd_jax.variants import config_getter

VARIANTS = recipes.STUDENT_VARIANTS
get_config = config_getter(
    functools.partial(recipes.imagenet_student, "resnet18"), VARIANTS, "configs/resnet18.py"
)
