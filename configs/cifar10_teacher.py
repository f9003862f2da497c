"""CIFAR-10 MoCo v2 teacher (CIFAR-stem ResNet-50 by default; `:resnet18` for ResNet-18).

Command (prepare CIFAR-10 first: `python -m rekd_jax.data.prepare`, see docs/data.md):
  python main.py --config=configs/cifar10_teacher.py --workdir=/ckpt/c10_teacher
The teacher is WORKDIR/encoders/student; give it to configs/cifar10_student.py as
--config.teacher.checkpoint. Variants (comma-separated): resnet18, ep400 (teachers may train
longer, method.md), shapes / tiny (the embedded rekd_shapes / its 200-image toy split),
runlocal (shrink steps and sizes for a laptop CPU, keeping CIFAR-10); the smoke run without
CIFAR-10 is :tiny,runlocal (about a minute).
Recipe: the MoCo CIFAR-10 demo (facebookresearch/moco, colab/moco_cifar10_demo.ipynb), cited
with its departures in rekd_jax.recipes.cifar10(): 32 px, batch 512, lr 0.06 cosine per
epoch, wd 5e-4, K 4096, m 0.99, tau 0.1, linear 128-d head, SplitBN 8 (query and keys), crop
scale 0.08-1, CIFAR mean/std, no blur, 200 epochs. The demo trains a ResNet-18 (`:resnet18`);
ResNet-50 is our default teacher (method.md).
Hardware / time: one GPU (an estimate, not measured: about 2 h for ResNet-18 and 5 h for
ResNet-50 on one H100 at 200 epochs).
Expected result (the demo's published number, not measured by us): ResNet-18 weighted kNN
(k 200, tau 0.1) 82.6% after 200 epochs; the ResNet-50 teacher should be at least as good.
"""

from rekd_jax import recipes
from rekd_jax.variants import config_getter

VARIANTS = recipes.CIFAR10_TEACHER_VARIANTS
get_config = config_getter(recipes.cifar10_teacher, VARIANTS, "configs/cifar10_teacher.py")
