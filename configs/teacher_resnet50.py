"""MoCo v2 ResNet-50 teacher on ImageNet (the offline teacher of the ReKD / SEED recipes).

Command:
  python main.py --config=configs/teacher_resnet50.py --workdir=/ckpt/teacher_r50
It exports WORKDIR/encoders/student: pass that directory as --config.teacher.checkpoint of an
offline ReKD or SEED run. (Or skip training: import the official MoCo v2 weights with
`python -m rekd_jax.tools.import_torch`.)
Variants: ep800 (800 epochs), shapes / tiny (the embedded rekd_shapes / its 200-image toy
split), runlocal (shrink steps and sizes: 16 px, 0.125-width ResNet-50, 8 steps); the laptop
smoke run is :tiny,runlocal (about a minute).
Hardware / time: 8 GPUs of H100 class, global batch 256, bf16. An estimate, not measured: the
MoCo v2 paper reports about 53 h for 200 epochs on 8 V100s; H100s should need well under a day.
Expected result (reference numbers from method.md / the MoCo v2 paper, not measured by us):
ImageNet linear top-1 67.5% after 200 epochs, 71.1% after 800 (configs/linear_eval.py).
"""

from rekd_jax import recipes
from rekd_jax.variants import config_getter

VARIANTS = recipes.IMAGENET_TEACHER_VARIANTS
get_config = config_getter(recipes.imagenet_teacher, VARIANTS, "configs/teacher_resnet50.py")
