"""Weighted kNN (InstDisc) on frozen backbone features: k 200, tau 0.1, cosine similarity,
votes exp(sim / tau); the same function as the online monitor of pre-training.

Features of the whole training split (evaluation transform, no augmentation) form the
memory bank; every evaluation image is classified and counted once (top-1 / top-5).

Variants: cifar10 (default), imagenet, shapes, tiny, runlocal (comma-separated; runlocal
applies last and keeps the dataset).

CIFAR-10 (one GPU, about a minute):
    python main.py --config=configs/knn_eval.py \\
        --config.checkpoint=W/encoders/student --workdir=W/eval_knn
  Reference (method.md): MoCo v2 ResNet-18, 200 epochs, batch 512: about 85 top-1.

ImageNet (one H100; estimate: two feature passes, well under an hour; the 1.28M-row bank is
scanned in train_chunk_size blocks):
    python main.py --config=configs/knn_eval.py:imagenet \\
        --config.checkpoint=W/encoders/student --workdir=W/eval_knn

CPU smoke run (seconds):
    python main.py --config=configs/knn_eval.py:tiny,runlocal \\
        --config.checkpoint=/tmp/pre/encoders/student --workdir=/tmp/eval_knn
  (/tmp/pre from `python main.py --config=configs/default.py:tiny,runlocal --workdir=/tmp/pre`.)
"""

from rekd_jax.recipes.evaluation import VARIANTS, get_protocol_config  # noqa: F401 (help)


def get_config(arg=None):
    return get_protocol_config("knn", "cifar10", arg, "configs/knn_eval.py")
