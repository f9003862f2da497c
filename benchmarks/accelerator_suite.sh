#!/usr/bin/env bash
# The accelerator suite: on a machine with an NVIDIA GPU and the project installed
# (pip install ".[gpu]"), from the repository root:
#   bash benchmarks/accelerator_suite.sh
# It records the environment, times the train steps (benchmarks/train_step.py: MoCo v2, SEED and
# ReKD with an offline teacher; ResNet-50 teacher, ResNet-18 student, 224 px, batch 256, bf16)
# and the input pipeline (benchmarks/input_pipeline.py), then, when the CIFAR-10 JPEG tarball is
# at $CIFAR10_TARBALL, runs the GPU scale of the CIFAR-10 study for the students in $STUDENTS
# (rerun with the same $OUT to continue: finished runs are skipped; their checkpoints are
# deleted at the end to keep $OUT small). Everything is written under $OUT.
#   OUT              output folder (default /tmp/rekd_accelerator_suite)
#   STUDENTS         comma-separated study students (default resnet18, the mechanism student)
#   STUDY_SECONDS    time limit of the study part (default 420)
#   CIFAR10_TARBALL  cifar10/{train,test}/<class>/*.jpg as .tar.gz (default .data/cifar10-jpeg.tar.gz)
#   WHEEL_DIR        wheels to install first without an index, for a machine with no internet
#                    access (default .whl; skipped when it holds none)
# docs/benchmarks.md explains the output.
set -uo pipefail
OUT=${OUT:-/tmp/rekd_accelerator_suite}
STUDENTS=${STUDENTS:-resnet18}
STUDY_SECONDS=${STUDY_SECONDS:-420}
CIFAR10_TARBALL=${CIFAR10_TARBALL:-.data/cifar10-jpeg.tar.gz}
WHEEL_DIR=${WHEEL_DIR:-.whl}
mkdir -p "$OUT"
if ls "$WHEEL_DIR"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEEL_DIR"/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-} || exit 1
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total --format=csv; python3 -c "import jax, flax, optax; print('jax', jax.__version__, jax.devices())"; } 2>&1 | tee "$OUT/env.txt"
timeout 150 python3 benchmarks/train_step.py --student=resnet18 --teacher=resnet50 \
  --image_size=224 --batch_size=256 --dtype=bfloat16 --methods=mocov2,seed,rekd \
  --rekd_teacher=offline 2>&1 | tee "$OUT/train_step.txt"
timeout 60 python3 benchmarks/input_pipeline.py 2>&1 | tee "$OUT/input_pipeline.txt"
if [ -f "$CIFAR10_TARBALL" ]; then
  mkdir -p /tmp/c10 && tar -xzf "$CIFAR10_TARBALL" -C /tmp/c10
  timeout "$STUDY_SECONDS" python3 -m rekd_jax.experiments.cifar10 --scale=gpu \
    --workdir="$OUT/study" --data_dir=/tmp/tfds --src=/tmp/c10/cifar10 \
    --students="$STUDENTS" 2>&1 | grep -v "^I1\|^W1" | tee "$OUT/study.log"
  find "$OUT/study" -name "checkpoints" -type d -prune -exec rm -rf {} +
fi
