"""AlexNet conv1..conv5 linear probes (the protocol of the paper's 44.7 / 50.1 / 50.5).

Each frozen conv map (after its ReLU; BatchNorm in eval mode) is adaptive-max-pooled to
12x12 / 7x7 / 5x5 / 6x6 / 6x6 (9216 / 9408 / 9600 / 9216 / 9216 features at 224 px) and
gets its own linear classifier; all five train in one run: 35 epochs, batch 256, SGD Nesterov
momentum 0.9, weight decay 5e-4, lr 0.01 divided by 5 at epochs 5, 15 and 25,
RandomResizedCrop + flip for training, Resize(256) + CenterCrop(224) for evaluation. Reports
top-1 / top-5 per layer; the headline number is conv5. Needs an alexnet encoder checkpoint.

Variants: imagenet (default), cifar10, shapes, tiny, runlocal (comma-separated; runlocal
applies last and keeps the dataset).

ImageNet (one H100; estimate, not measured: about 35 passes over ImageNet through AlexNet,
input-bound, roughly half a day):
    python main.py --config=configs/conv_probe.py \\
        --config.checkpoint=W/encoders/student --workdir=W/eval_conv
  Expected conv5 top-1 (paper): ReKD AlexNet 50.1; previous best 44.7 (SeLa+Rot+aug);
  supervised AlexNet 50.5.

CPU smoke run (about a minute):
    python main.py --config=configs/default.py:tiny,runlocal --config.student.arch=alexnet \\
        --workdir=/tmp/pre_alexnet
    python main.py --config=configs/conv_probe.py:tiny,runlocal \\
        --config.checkpoint=/tmp/pre_alexnet/encoders/student --workdir=/tmp/eval_conv
  Writes /tmp/eval_conv/results_conv_probe.json with one row per layer (near chance after a
  10-step pre-training).
"""
from rekd_jax.evaluation.config import VARIANTS, get_protocol_config  # noqa: F401 (help)


def get_config(arg=None):
    return get_protocol_config("conv_probe", "imagenet", arg, "configs/conv_probe.py")
