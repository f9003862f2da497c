"""AlexNet conv1..conv5 linear probes (the protocol of the paper's 44.7 / 50.1 / 50.5).

The protocol is RotNet's ImageNet linear classifiers on AlexNet conv features, exactly
(gidariss/FeatureLearningRotNet at edafaba6561003292017d0a44272414356c959ff):

* config/ImageNet_LinearClassifiers_ImageNet_RotNet_AlexNet_Features.py: batch_size 192,
  max_num_epochs 35, pool_type 'max' with pool_size 12 / 7 / 5 / 6 / 6 on conv1..conv5
  (nChannels 64 / 192 / 384 / 256 / 256, our AlexNet's layout), SGD momentum 0.9, nesterov,
  weight_decay 5e-4, LUT_lr [(5, 0.01), (15, 0.002), (25, 0.0004), (35, 0.00008)]: lr 0.01
  times 0.2 at epochs 5, 15 and 25 (algorithms/Algorithm.py applies it per 0-based epoch);
* architectures/LinearClassifier.py: AdaptiveMaxPool2d(s) -> BatchNorm2d(C, affine=False) ->
  Flatten -> Linear(C*s*s, classes), weight ~ N(0, 2 / classes), bias 0 (conv_probe.init
  'fan_out', conv_probe.head_bn=True: rekd_jax.evaluation.linear);
* algorithms/FeatureClassificationModel.py: the feature extractor in eval mode (BatchNorm
  running statistics), the classifier heads trained on its frozen maps (after each ReLU;
  conv5 before the last max-pool);
* dataloader.py (ImageNet): training Scale(256) + RandomCrop(224) + RandomHorizontalFlip of
  the whole image (conv_probe.train_transform='resize_random_crop', drawn on the host over the
  full image: data.train_crop='host'), evaluation Scale(256) + CenterCrop(224), mean/std
  normalisation. Top-1 / top-5 per layer; the headline number is conv5.

Departures: none in the protocol; the host's JPEG decode may use a DCT reduction when it keeps
the 224 crop at full resolution (rekd_jax/data/host_crop.py). Not provided: SeLa's
yukimasano/linear-probes protocol (RandomResizedCrop, 36 epochs, x0.1 at 10/20/30, wd 1e-5,
xavier init, ten-crop evaluation): it probes the 96-channel DeepCluster AlexNet ('big' CFG of
its alexnet.py) with fixed MaxPool2d kernels sized for that network, so it does not carry over
to this AlexNet (64-192-384-256-256) exactly.

Variants: imagenet (default), cifar10, shapes, tiny, runlocal (comma-separated; runlocal
applies last and keeps the dataset). At 32 px (cifar10, shapes) Resize(32) + RandomCrop(32)
leaves only the flip as augmentation.

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

from rekd_jax.recipes.evaluation import VARIANTS, get_protocol_config  # noqa: F401 (help)


def get_config(arg=None):
    return get_protocol_config("conv_probe", "imagenet", arg, "configs/conv_probe.py")
