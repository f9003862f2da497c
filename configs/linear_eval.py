"""Linear probe (MoCo protocol) on the frozen backbone of an encoder checkpoint.

Protocol: global-pooled backbone features (BatchNorm in eval mode), one linear layer, 100
epochs, batch 256, SGD lr 30, momentum 0.9, no weight decay, lr x0.1 at epochs 60 and 80
(facebookresearch/moco main_lincls.py; --config.linear.schedule=cosine for cosine), head
init N(0, 0.01^2), no BatchNorm before the head, RandomResizedCrop(0.08-1) + flip for training
(over the full decoded image on the host for ImageNet, data.train_crop='host'; 'device' crops
the 256 x 256 centre, faster), Resize(256) + CenterCrop(224) for evaluation; top-1 / top-5 over
the whole evaluation split. --config.linear.fast=True freezes and caches the features once
(no augmentation) and trains the probe on them in seconds.

Variants (--config=configs/linear_eval.py:VARIANT, comma-separated; runlocal applies last):
imagenet (default), cifar10, shapes (embedded rekd_shapes), tiny (its 200-image toy split),
runlocal (2 epochs, small batches and images; keeps the dataset).

ImageNet (one 8-GPU host or one H100; time is an estimate, not measured):
    python main.py --config=configs/linear_eval.py \\
        --config.checkpoint=W/encoders/student --workdir=W/eval_linear
  Expected top-1 (method.md reference numbers): MoCo v2 ResNet-50 200 ep 67.5 (800 ep 71.1),
  MoCo v2 ResNet-18 52.5, EfficientNet-B0 42.2, MobileNetV3-L 36.3; SEED (R50x2 teacher)
  ResNet-18 63.0, EfficientNet-B0 67.6, MobileNetV3-L 68.2. About a day of one H100 for
  ResNet-50 with augmentation (100 passes over ImageNet, input-bound); fast mode needs two
  feature passes (well under an hour) and then trains in minutes, typically 1-2 points lower.

CIFAR-10 (one GPU, minutes):
    python main.py --config=configs/linear_eval.py:cifar10 \\
        --config.checkpoint=W/encoders/student --workdir=W/eval_linear
  Reference: MoCo v2 ResNet-18 linear about 93 after 1000 pre-training epochs.

CPU smoke run (2 epochs on rekd_shapes/tiny; about half a minute on a laptop CPU):
    python main.py --config=configs/default.py:tiny,runlocal --workdir=/tmp/pre
    python main.py --config=configs/linear_eval.py:tiny,runlocal \\
        --config.checkpoint=/tmp/pre/encoders/student --workdir=/tmp/eval_linear
  Writes /tmp/eval_linear/results_linear.json (top-1 / top-5 over the 100 test images; a
  10-step pre-training gives near-chance numbers: the run checks the plumbing, not accuracy).
"""

from rekd_jax.recipes.evaluation import VARIANTS, get_protocol_config  # noqa: F401 (help)


def get_config(arg=None):
    return get_protocol_config("linear", "imagenet", arg, "configs/linear_eval.py")
