"""Semi-supervised evaluation: fine-tune backbone + linear head on 1% or 10% of the labels.

The labelled subset is a seeded class-balanced draw of semi_supervised.fraction of the
training split, or, with --config.semi_supervised.subset_file=FILE, the images listed in FILE
(the standard ImageNet 1% / 10% lists, one file name per line, e.g. n01440764_10026.JPEG).
The backbone trains with BatchNorm in train mode (cross-device statistics, sync_bn) at
learning_rate (0.01), the new head at head_learning_rate (1.0); SGD momentum 0.9, no weight
decay, 20 epochs, x0.2 at epochs 12 and 16, batch 256; RandomResizedCrop + flip. These are
defaults to tune (the paper gives no semi-supervised recipe); top-1 / top-5 on the whole
evaluation split.

Variants (comma-separated, in order, runlocal last): imagenet (default), cifar10, shapes,
tiny, runlocal (keeps the dataset), pct1 / pct10 (the fraction; default 1%), e.g.
--config=configs/semi_supervised.py:cifar10,pct10.

ImageNet 1% (one H100; estimate: 20 epochs of 12.8k images, well under an hour):
    python main.py --config=configs/semi_supervised.py \\
        --config.checkpoint=W/encoders/student --workdir=W/eval_semi1 \\
        --config.semi_supervised.subset_file=1percent.txt
  No reference number in method.md for this project's students.

CPU smoke run (half of rekd_shapes/tiny labelled, 2 epochs; about a minute):
    python main.py --config=configs/semi_supervised.py:tiny,runlocal \\
        --config.checkpoint=/tmp/pre/encoders/student --workdir=/tmp/eval_semi
"""
from rekd_jax.evaluation.config import VARIANTS, get_protocol_config  # noqa: F401 (help)


def get_config(arg=None):
    return get_protocol_config("semi_supervised", "imagenet", arg, "configs/semi_supervised.py")
