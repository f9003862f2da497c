"""ReKD on ImageNet: an AlexNet student and an online ResNet-50 teacher trained alongside.

Command:
  python main.py --config=configs/alexnet.py --workdir=/ckpt/rekd_alexnet
Variants (comma-separated after ':'): offline (frozen teacher from
--config.teacher.checkpoint=T/encoders/student of a configs/teacher_resnet50.py run, or an
import_torch output), mocov2 (baseline: the student alone with MoCo v2), seed (SEED from a
frozen teacher), shapes / tiny (the embedded rekd_shapes / its 200-image toy split, CIFAR
stems), runlocal (shrink steps and sizes for a laptop CPU, keeping the dataset), e.g. the
smoke run --config=configs/alexnet.py:offline,tiny,runlocal (about a minute).
Then evaluate WORKDIR/encoders/student with configs/conv_probe.py.
Hardware / time: 8 GPUs of H100 class (global batch 256, bf16); an estimate, not measured:
MoCo v2 ResNet-50 for 200 epochs took about 53 h on 8 V100s (MoCo v2 paper), and ReKD with an
online ResNet-50 teacher costs about 2.2x MoCo v2 (paper), so plan on roughly 1-2 days on
8 H100s; the offline variant costs about the student's MoCo v2 time plus teacher forwards.
Expected result (reference number from the paper, not measured by us): ImageNet linear
top-1 of the best conv layer under the AlexNet conv protocol (configs/conv_probe.py) 50.1%
(previous best self-supervised 44.7%, supervised 50.5%).
"""

import functools

from rekd_jax import recipes
from rekd_jax.variants import config_getter

VARIANTS = recipes.STUDENT_VARIANTS
get_config = config_getter(
    functools.partial(recipes.imagenet_student, "alexnet"), VARIANTS, "configs/alexnet.py"
)
