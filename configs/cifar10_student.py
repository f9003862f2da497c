"""CIFAR-10 ReKD student from an offline CIFAR teacher; the student architecture is the argument.

Command (teacher from configs/cifar10_teacher.py in /ckpt/c10_teacher):
  python main.py --config=configs/cifar10_student.py:alexnet --workdir=/ckpt/c10_alexnet \
      --config.teacher.checkpoint=/ckpt/c10_teacher/encoders/student
Arguments (comma-separated): one architecture (alexnet, mobilenetv3_large, shufflenetv2_x1_0,
efficientnet_b0, resnet18; any registered name works), then optional variants: online (train a
ResNet-50 teacher alongside instead; no checkpoint needed), mocov2 (baseline: the student alone
with MoCo v2), seed (SEED from the offline teacher), shapes / tiny (the embedded rekd_shapes /
its 200-image toy split), runlocal (shrink steps and sizes for a laptop CPU, keeping the
dataset: real CIFAR-10), e.g. :alexnet,online,tiny,runlocal for a smoke run.
Recipe: the MoCo CIFAR-10 demo (rekd_jax.recipes.cifar10() cites it and lists the
departures): 32 px, CIFAR stems, batch 512, lr 0.06 cosine per epoch, wd 5e-4, K 4096, m 0.99,
tau 0.1, linear head, SplitBN 8, no blur, 200 epochs; ReKD's 100 prototypes are ours. The same
student at a CPU budget, beside every baseline: `python -m rekd_jax.experiments.cifar10
--scale=cpu` (docs/results.md).
Hardware / time: one GPU; an estimate, not measured: under an hour to a few hours per student
on one H100 (offline teacher forwards add about one student-sized forward of ResNet-50).
Expected result: no CIFAR-10 numbers for ReKD are known to us; the reference point is the
demo's MoCo v2 ResNet-18 kNN 82.6%. Compare each student with its `:mocov2` baseline and its
random init (`--config.checkpoint=init:ARCH:cifar_stem=true` in any evaluation config).
"""

from rekd_jax import recipes

VARIANTS = recipes.STUDENT_VARIANTS


def get_config(arg=None):
    return recipes.cifar10_student(arg, "configs/cifar10_student.py")
