"""Training crops drawn on the host over the full decoded image (``data.train_crop='host'``).

MoCo (facebookresearch/moco main_moco.py, main_lincls.py) and SEED (jacobswan1/SEED) apply
torchvision's ``RandomResizedCrop`` to the whole, uncropped ImageNet image, and RotNet's
classifiers (gidariss/FeatureLearningRotNet dataloader.py) take ``Resize(256)`` +
``RandomCrop(224)`` of the whole image. The fast path of this project (``train_crop='device'``)
pre-crops the centre ``host_size`` square on the host and crops on the device, so its crops
never see the sides of non-square images. In host mode a worker thread instead:

1. opens the JPEG and reads its size (header only);
2. draws each view's crop box over the full image with the *same* sampler as the device
   (``augment.crop_boxes_from_uniform``, torchvision's ``RandomResizedCrop.get_params``; or
   ``augment.resize_crop_boxes`` for Resize + RandomCrop) from uniforms seeded by
   ``(seed, epoch, example index, view)``, so a resumed run redraws exactly the same crops;
3. decodes at the largest JPEG DCT reduction (PIL ``draft``: 1/2, 1/4, 1/8) that still leaves
   every crop at least ``size`` pixels on each side (decoding cost falls with the reduction);
4. cuts and resizes each crop to ``size`` x ``size`` (PIL antialiased bilinear, as
   torchvision's ``resized_crop`` on PIL images), giving uint8 [views, size, size, 3].

The device then applies flip, colour jitter, grey, blur and normalisation
(``augment.host_cropped_views``). Departure from torchvision: when ``draft`` reduces the JPEG,
the crop is resampled from the DCT-downscaled image (PIL ``resize(box=...)`` on fractional
coordinates) rather than from the full-resolution decode; the box distribution is exactly
torchvision's (tests/data/test_host_crop.py compares it with ``get_params`` on non-square
images), only the pixels of a reduced decode differ slightly.
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
from PIL import Image

from rekd_jax.data import augment

RANDOM_RESIZED_CROP = augment.RANDOM_RESIZED_CROP
RESIZE_RANDOM_CROP = augment.RESIZE_RANDOM_CROP


@dataclasses.dataclass(frozen=True)
class HostCrop:
    """What a training pipeline in host-crop mode cuts from each image.

    views: crops per image (2 for pre-training's two views, 1 for a probe).
    size: side of each crop after resizing (data.image_size).
    crop: 'random_resized_crop' (scale, ratio: torchvision RandomResizedCrop) or
      'resize_random_crop' (Resize(resize) + RandomCrop(size): RotNet's classifier protocol).
    """

    views: int
    size: int
    crop: str = RANDOM_RESIZED_CROP
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    resize: int = 256

    def __post_init__(self):
        if self.crop not in augment.CROPS:
            raise ValueError(f"HostCrop.crop={self.crop!r}: use one of {augment.CROPS}")
        if self.views < 1 or self.size < 1:
            raise ValueError(
                f"HostCrop needs views >= 1 and size >= 1, got {self.views}, {self.size}"
            )


def sample_boxes(spec: HostCrop, height: int, width: int, seed: int, epoch: int, index: int):
    """The crop windows of one image: float [views, 4] rows (top, left, h, w) in pixels of the
    full image, drawn from uniforms seeded by (seed, epoch, index) (one row of uniforms per
    view). Integer-valued for RandomResizedCrop; fractional for Resize + RandomCrop."""
    rng = np.random.default_rng([int(seed), int(epoch), int(index)])
    if spec.crop == RANDOM_RESIZED_CROP:
        u = rng.random((spec.views, augment.CROP_UNIFORMS))
        boxes = augment.crop_boxes_from_uniform(u, height, width, spec.scale, spec.ratio, np)
    else:
        boxes = augment.resize_crop_boxes(
            rng.random((spec.views, 2)), height, width, spec.resize, spec.size, np
        )
    return np.stack([np.asarray(b, np.float64) for b in boxes], axis=1)


def draft_request(boxes: np.ndarray, height: int, width: int, size: int) -> tuple[int, int]:
    """The (width, height) to pass to PIL's ``draft`` so that, at the reduction it picks, every
    crop still spans at least ``size`` decoded pixels on each side."""
    scale = float(np.min(boxes[:, 2:4]) / size)  # the most a reduction may shrink the crops
    if scale <= 1.0:
        return width, height
    return int(math.ceil(width / scale)), int(math.ceil(height / scale))


def decode_crops(data: bytes, spec: HostCrop, seed: int, epoch: int, index: int) -> np.ndarray:
    """Encoded image bytes -> uint8 [views, size, size, 3] crops (see the module docstring).

    Raises whatever PIL raises for corrupt or non-image data.
    """
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        boxes = sample_boxes(spec, height, width, seed, epoch, index)
        if img.format == "JPEG":
            img.draft("RGB", draft_request(boxes, height, width, spec.size))
        img = img.convert("RGB")
    fx, fy = img.size[0] / width, img.size[1] / height
    out = np.empty((spec.views, spec.size, spec.size, 3), np.uint8)
    target = (spec.size, spec.size)
    for v, (top, left, h, w) in enumerate(boxes):
        if spec.crop == RANDOM_RESIZED_CROP and fx == 1.0 and fy == 1.0:
            # Full-resolution decode: crop, then resize (torchvision's resized_crop on PIL).
            view = img.crop((int(left), int(top), int(left + w), int(top + h)))
            view = view.resize(target, Image.BILINEAR)
        else:
            # Reduced decode, or resize-then-crop: resample the window straight from the image.
            view = img.resize(
                target, Image.BILINEAR, box=(left * fx, top * fy, (left + w) * fx, (top + h) * fy)
            )
        out[v] = np.asarray(view, np.uint8)
    return out


def for_pretraining(data_cfg) -> HostCrop:
    """Pre-training's host crops: two RandomResizedCrop views per image with the crop_scale /
    crop_ratio of data.augment, each resized to data.image_size."""
    return HostCrop(
        views=2,
        size=int(data_cfg.image_size),
        crop=RANDOM_RESIZED_CROP,
        scale=tuple(float(v) for v in data_cfg.augment.crop_scale),
        ratio=tuple(float(v) for v in data_cfg.augment.crop_ratio),
    )
