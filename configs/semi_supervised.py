"""Semi-supervised evaluation: fine-tune backbone + linear head on 1% or 10% of the labels.

The labelled subset is a seeded class-balanced draw of semi_supervised.fraction of the
training split, or, with --config.semi_supervised.subset_file=FILE, the images listed in FILE
(the standard ImageNet 1% / 10% lists, one file name per line, e.g. n01440764_10026.JPEG).
The backbone trains with BatchNorm in train mode (cross-device statistics, sync_bn) at
learning_rate (0.01), the new head at head_learning_rate (0.1); SGD momentum 0.9, no weight
decay, 20 epochs, x0.2 at epochs 12 and 16, batch 256; RandomResizedCrop + flip (crop scale
0.08-1 on ImageNet, 0.2-1 on the 32 px datasets). Learning rates as in SwAV's semi-supervised
fine-tuning (facebookresearch/swav, eval_semisup.py: trunk 0.01, head 0.2 for 10%), with the
head at 0.1; the paper gives no semi-supervised recipe. top-1 / top-5 on the whole evaluation
split.

The head learning rate must suit the feature norm: each head step moves the logits by about
head_learning_rate x |features|^2. At 1.0 the loss explodes in the first epoch (9.0 on
rekd_shapes with features of norm 9), the exploded head's gradients wreck the fine-tuned
backbone, and the loss then sits at ln 10 = 2.303 with one class predicted. If the first
epochs' loss rises above ln(classes), lower head_learning_rate.

Variants (comma-separated, in order, runlocal last): imagenet (default), cifar10, shapes,
tiny, runlocal (keeps the dataset), pct1 / pct10 (the fraction; default 1%), e.g.
--config=configs/semi_supervised.py:cifar10,pct10.

ImageNet 1% (one H100; estimate: 20 epochs of 12.8k images, well under an hour):
    python main.py --config=configs/semi_supervised.py \\
        --config.checkpoint=W/encoders/student --workdir=W/eval_semi1 \\
        --config.semi_supervised.subset_file=1percent.txt
  No reference number is known for these students.

Measured on a 2-core x86 CPU, Python 3.11, jax 0.10.2 (encoder: configs/default.py:runlocal
with num_train_steps=400, global_batch_size=64, base_learning_rate=0.06: a ResNet-18 x0.125 on
rekd_shapes; then semi_supervised.py:shapes,pct10 with batch_size=32: 1,000 labels, 20
epochs): loss 2.63 -> 1.97, top-1 37.7% (a second run of the same settings: loss 1.89,
top-1 30.9%); its fast linear probe on all labels: 12.6%. With head lr 1.0, crop 0.08-1 and
batch 256: loss 2.89, 7.81, 18.0 in epochs 1-3, then 2.33; top-1 10.5%.

CPU smoke run (1% of rekd_shapes/tiny labelled, 2 epochs; about a minute):
    python main.py --config=configs/semi_supervised.py:tiny,runlocal \\
        --config.checkpoint=/tmp/pre/encoders/student --workdir=/tmp/eval_semi
"""

from rekd_jax.recipes.evaluation import VARIANTS, get_protocol_config  # noqa: F401 (help)


def get_config(arg=None):
    return get_protocol_config("semi_supervised", "imagenet", arg, "configs/semi_supervised.py")
