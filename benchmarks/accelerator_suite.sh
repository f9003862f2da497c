#!/usr/bin/env bash
# One prepared call on the lent GPU machine (device tool): environment check, the train-step and
# input-pipeline benchmarks, then the CIFAR-10 study at --scale=gpu for the students in
# $STUDENTS (default: the mechanism student only), all written under $OUT. See docs/results.md
# for how to prepare .whl/ (tfds, ml-collections, clu, ... for Python 3.12) and .data/ (the
# CIFAR-10 JPEG tarball), and for the exact device command.
set -uo pipefail
OUT=${OUT:-/tmp/rekd_gpu_out}
STUDENTS=${STUDENTS:-resnet18}
STUDY_SECONDS=${STUDY_SECONDS:-420}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-} || exit 1
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total --format=csv; python3 -c "import jax, flax, optax; print('jax', jax.__version__, jax.devices())"; } 2>&1 | tee "$OUT/env.txt"
timeout 150 python3 benchmarks/train_step.py --student=resnet18 --teacher=resnet50 \
  --image_size=224 --batch_size=256 --dtype=bfloat16 --methods=mocov2,seed,rekd \
  --rekd_teacher=offline 2>&1 | tee "$OUT/train_step.txt"
timeout 60 python3 benchmarks/input_pipeline.py 2>&1 | tee "$OUT/input_pipeline.txt"
if [ -f .data/cifar10-jpeg.tar.gz ]; then
  mkdir -p /tmp/c10 && tar -xzf .data/cifar10-jpeg.tar.gz -C /tmp/c10
  timeout "$STUDY_SECONDS" python3 -m rekd_jax.experiments.cifar10 --scale=gpu \
    --workdir="$OUT/study" --data_dir=/tmp/tfds --src=/tmp/c10/cifar10 \
    --students="$STUDENTS" 2>&1 | grep -v "^I1\|^W1" | tee "$OUT/study.log"
  find "$OUT/study" -name "checkpoints" -type d -prune -exec rm -rf {} +
fi
