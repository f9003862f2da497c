"""The data pipeline used by pre-training and evaluation: config block, validation, create().

``create(data_cfg, split=..., training=..., global_batch_size=..., seed=...)`` returns a
``Pipeline``: an iterable of numpy batches laid out ``(local devices, per-device batch, ...)``

* host mode: ``{'image': uint8 (D, b, H, W, 3), 'label': int32 (D, b)}``; the host decodes
  (and, with ``host_size > 0``, resizes the shorter side and centre-crops) in worker threads;
* host-crop mode (training pipelines with ``train_crop='host'`` and a ``host_crop`` spec):
  ``{'image': uint8 (D, b, V, S, S, 3), ...}``, V crops per image drawn over the full decoded
  image on the worker threads (``rekd_jax.data.host_crop``), the rest of the augmentation on
  the device (``augment.host_cropped_views``);
* resident mode: ``{'index': int32 (D, b), 'label': int32 (D, b)}`` and
  ``pipeline.resident_images`` (uint8 [N, H, W, 3]) to place on the accelerators once; the
  training step gathers ``resident_images[index]`` on device.

Evaluation pipelines (``training=False``) make one ordered pass, pad the last batch and add
``'mask': bool (D, b)`` so every example counts exactly once. Training pipelines shuffle per
epoch (seeded), drop the remainder and repeat forever. Augmentation happens on device
(``rekd_jax.data.augment``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from rekd_jax.data import host_crop as host_crop_lib
from rekd_jax.data import loader as loader_lib
from rekd_jax.data import records, sources

_RESIDENT_CHOICES = ("auto", "on", "off")
_AUGMENT_FIELDS = (
    "crop_scale",
    "crop_ratio",
    "jitter",
    "jitter_prob",
    "gray_prob",
    "blur_prob",
    "blur_sigma",
    "flip_prob",
    "mean",
    "std",
)


TRAIN_CROPS = ("device", "host")


def default_data_config() -> ml_collections.ConfigDict:
    """The ``config.data`` block shared by pre-training and evaluation configs.

    ``train_crop`` chooses where the training crops (RandomResizedCrop, or the probes' crop) are
    drawn: 'host' = over the full decoded image on the host worker threads, one or two fixed-size
    crops per image go to the device (MoCo / SEED / main_lincls as published; JPEG decoding at a
    reduced DCT scale keeps it cheap); 'device' = on the device from what the host delivers:
    stored fixed-size images, or with ``host_size`` > 0 the centre ``host_size`` square of the
    image resized to ``host_size`` (faster, one decode per image and resident mode possible, but
    the crops never see the sides of non-square images). Evaluation pipelines always use
    ``host_size`` (Resize(256) + CenterCrop(224) stays exact). Fixed-size datasets (CIFAR) are
    cropped the same either way; 'device' is then the faster choice.
    """
    return ml_collections.ConfigDict(
        dict(
            # TFDS name[/config][:version]; rekd_shapes is built on first use.
            dataset="rekd_shapes",
            data_dir="",  # '' = TFDS default ($TFDS_DATA_DIR or ~/tensorflow_datasets).
            train_split="train",
            eval_split="test",
            image_size=32,  # Training views and evaluation centre crop.
            eval_resize=32,  # Shorter side before the evaluation centre crop (256 for 224).
            host_size=0,  # 0: fixed-size images used as stored; >0: host resize + crop.
            train_crop="device",  # 'device' | 'host': where training crops are drawn (below).
            resident="auto",  # 'auto' | 'on' | 'off': keep the uint8 split on the devices.
            resident_max_mb=1024,  # 'auto' threshold on the uint8 split size.
            num_workers=8,  # Decoding threads per process.
            prefetch=2,  # Batches prepared ahead.
            # Records that cannot be used (empty: a truncated or damaged file; or not a
            # decodable image) are skipped and replaced by another example; more than this
            # fraction of the last records.SKIP_WINDOW (10,000) records read stops the run with one
            # line naming the file. 0 stops at the first, 1 never stops.
            max_skipped_fraction=0.01,
            augment=ml_collections.ConfigDict(
                dict(
                    crop_scale=(0.2, 1.0),
                    crop_ratio=(3 / 4, 4 / 3),
                    jitter=(0.4, 0.4, 0.4, 0.1),  # brightness, contrast, saturation, hue
                    jitter_prob=0.8,
                    gray_prob=0.2,
                    blur_prob=0.5,
                    blur_sigma=(0.1, 2.0),
                    flip_prob=0.5,
                    mean=(0.485, 0.456, 0.406),
                    std=(0.229, 0.224, 0.225),
                )
            ),
        )
    )


def validate_data_config(cfg) -> None:
    """Raise ValueError naming the bad field of ``config.data`` and the fix."""
    _check_names(cfg)
    _check_sizes(cfg)
    _check_choices(cfg)
    _check_augment(cfg.augment)


def _bad(field, problem, fix):
    raise ValueError(f"config.data.{field} {problem}; {fix}")


def _check_names(cfg) -> None:
    """The dataset's name and the two split names."""
    if not isinstance(cfg.dataset, str) or not cfg.dataset:
        _bad(
            "dataset",
            f"= {cfg.dataset!r} is not a dataset name",
            "use a TFDS name such as 'rekd_shapes' or 'imagenet2012'",
        )
    try:
        sources._parse_name(cfg.dataset)  # pylint: disable=protected-access
    except ValueError as err:
        _bad("dataset", f"= {cfg.dataset!r} is malformed ({err})", "use 'name[/config][:version]'")
    for field in ("train_split", "eval_split"):
        if not isinstance(cfg[field], str) or not cfg[field]:
            _bad(
                field,
                f"= {cfg[field]!r} is not a split name",
                "use e.g. 'train', 'test', 'validation'",
            )


def _check_sizes(cfg) -> None:
    """The image sizes, worker and prefetch counts and the resident threshold."""
    for field in ("image_size", "eval_resize", "num_workers", "prefetch", "resident_max_mb"):
        if not isinstance(cfg[field], int) or cfg[field] < 1:
            _bad(field, f"= {cfg[field]!r} must be a positive integer", "set a positive int")
    if cfg.eval_resize < cfg.image_size:
        _bad(
            "eval_resize",
            f"= {cfg.eval_resize} is smaller than image_size {cfg.image_size}",
            "set eval_resize >= image_size (e.g. 256 for 224, 32 for 32)",
        )
    if not isinstance(cfg.host_size, int) or cfg.host_size < 0:
        _bad(
            "host_size",
            f"= {cfg.host_size!r} must be an int >= 0",
            "use 0 for fixed-size datasets or e.g. 256 for ImageNet",
        )
    if 0 < cfg.host_size < cfg.image_size:
        _bad(
            "host_size",
            f"= {cfg.host_size} is smaller than image_size {cfg.image_size}",
            "set host_size >= image_size (crops are resized up otherwise)",
        )


def _check_choices(cfg) -> None:
    """The skipped-record limit, resident mode and where training crops are drawn."""
    skip = cfg.get("max_skipped_fraction", 0.01)
    if isinstance(skip, bool) or not isinstance(skip, (int, float)) or not 0 <= skip <= 1:
        _bad(
            "max_skipped_fraction",
            f"= {skip!r} is not a fraction in [0, 1]",
            "use e.g. 0.01 (0 stops at the first unusable record, 1 never stops)",
        )
    if cfg.resident not in _RESIDENT_CHOICES:
        _bad(
            "resident", f"= {cfg.resident!r} is not one of {_RESIDENT_CHOICES}", "pick one of them"
        )
    if cfg.train_crop not in TRAIN_CROPS:
        _bad(
            "train_crop",
            f"= {cfg.train_crop!r} is not one of {TRAIN_CROPS}",
            "use 'host' (crops over the full image, as MoCo/SEED) or 'device' (faster)",
        )
    if cfg.train_crop == "host" and cfg.resident == "on":
        _bad(
            "resident",
            "= 'on' cannot hold host crops (they change every epoch)",
            "set resident='auto' (evaluation stays resident when it fits) or train_crop='device'",
        )


def _check_augment(aug) -> None:
    """The augmentation block: every field present, ranges ordered, probabilities in [0, 1]."""
    missing = [f for f in _AUGMENT_FIELDS if f not in aug]
    if missing:
        _bad("augment", f"lacks {missing}", "start from default_data_config().augment")
    for field in ("crop_scale", "crop_ratio", "blur_sigma"):
        lo, hi = _pair(aug[field], f"augment.{field}")
        if not 0 < lo <= hi:
            _bad(
                f"augment.{field}",
                f"= {tuple(aug[field])} must satisfy 0 < low <= high",
                "give (low, high) with positive values",
            )
    if _pair(aug.crop_scale, "augment.crop_scale")[1] > 1:
        _bad("augment.crop_scale", f"= {tuple(aug.crop_scale)} exceeds 1", "use e.g. (0.2, 1.0)")
    jitter = tuple(aug.jitter)
    if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
        _bad(
            "augment.jitter",
            f"= {jitter} must be 4 values >= 0 with hue <= 0.5",
            "use (brightness, contrast, saturation, hue), e.g. (0.4, 0.4, 0.4, 0.1)",
        )
    for field in ("jitter_prob", "gray_prob", "blur_prob", "flip_prob"):
        if not 0 <= aug[field] <= 1:
            _bad(
                f"augment.{field}", f"= {aug[field]} is not a probability", "use a value in [0, 1]"
            )
    for field in ("mean", "std"):
        if len(tuple(aug[field])) != 3:
            _bad(
                f"augment.{field}",
                f"= {tuple(aug[field])} needs 3 values",
                "give one per RGB channel",
            )
    if min(aug.std) <= 0:
        _bad("augment.std", f"= {tuple(aug.std)} has a non-positive value", "use positive stds")


def _pair(value, name):
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f"config.data.{name} = {value} needs (low, high)")
    return float(value[0]), float(value[1])


class Pipeline(loader_lib.Loader):
    """A ``Loader`` plus what training/evaluation need to know about the data."""

    def __init__(
        self,
        plan,
        fetch,
        *,
        num_workers,
        prefetch,
        include_mask,
        num_examples,
        num_classes,
        image_shape,
        resident_images,
        class_names,
        skip_guard,
    ):
        super().__init__(
            plan, fetch, num_workers=num_workers, prefetch=prefetch, include_mask=include_mask
        )
        self.num_examples = num_examples
        self.num_classes = num_classes
        self.image_shape = image_shape
        self.resident_images = resident_images
        self.class_names = class_names
        self._skip_guard = skip_guard

    @property
    def steps_per_epoch(self) -> int:
        return self.plan.steps_per_epoch

    @property
    def num_skipped(self) -> int:
        """Records skipped so far (each replaced by the next usable example)."""
        return self._skip_guard.value


def create(
    data_cfg,
    *,
    split: str,
    training: bool,
    global_batch_size: int,
    seed: int,
    num_local_devices: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    indices: Sequence[int] | None = None,
    drop_remainder: bool | None = None,
    host_crop: host_crop_lib.HostCrop | None = None,
) -> Pipeline:
    """Build the pipeline for one split (see the module docstring for what it yields).

    Devices and processes default to ``jax.local_device_count()``, ``jax.process_index()``
    and ``jax.process_count()``; tests override them. ``indices`` restricts the split to those
    example indices (e.g. a 1% subset); ``drop_remainder`` defaults to ``training``.
    ``host_crop``: the crops a training pipeline cuts on the host when
    ``data_cfg.train_crop == 'host'`` (ignored otherwise and for evaluation pipelines).
    """
    validate_data_config(data_cfg)
    num_local_devices, process_index, process_count = _process_layout(
        num_local_devices, process_index, process_count
    )
    drop_remainder = training if drop_remainder is None else drop_remainder
    source = sources.open_split(data_cfg.dataset, split, data_cfg.data_dir)
    example_ids = _example_ids(source, indices, f"{data_cfg.dataset}:{split}")
    plan = loader_lib.BatchPlan(
        num_examples=int(example_ids.size),
        global_batch_size=int(global_batch_size),
        num_local_devices=int(num_local_devices),
        process_index=int(process_index),
        process_count=int(process_count),
        seed=int(seed),
        shuffle=training,
        repeat=training,
        drop_remainder=bool(drop_remainder),
    )
    skip_guard = records.SkipGuard(source, float(data_cfg.get("max_skipped_fraction", 0.01)))
    image_shape, decode, resident = _image_decoding(
        data_cfg, source, example_ids, training=training, host_crop=host_crop, seed=seed
    )
    fetch = records.decoder(source, example_ids, decode, image_shape, skip_guard)
    resident_images = None
    if resident:
        resident_images, fetch = _resident_fetch(
            fetch, example_ids.size, image_shape, data_cfg.num_workers
        )
    return Pipeline(
        plan,
        fetch,
        num_workers=data_cfg.num_workers,
        prefetch=data_cfg.prefetch,
        include_mask=not training or not drop_remainder,
        num_examples=int(example_ids.size),
        num_classes=source.num_classes,
        image_shape=image_shape,
        resident_images=resident_images,
        class_names=source.class_names,
        skip_guard=skip_guard,
    )


def _process_layout(num_local_devices, process_index, process_count) -> tuple[int, int, int]:
    """(local devices, process index, process count), each given one kept, the rest JAX's."""
    if num_local_devices is None or process_index is None or process_count is None:
        import jax  # Only for the defaults: the loader itself is numpy.

        num_local_devices = (
            jax.local_device_count() if num_local_devices is None else num_local_devices
        )
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    return num_local_devices, process_index, process_count


def _example_ids(source, indices, name: str) -> np.ndarray:
    """The split's example indices read: all of them, or the checked `indices` of a subset."""
    if indices is None:
        return np.arange(len(source))
    example_ids = np.asarray(indices)
    if example_ids.ndim != 1 or not np.issubdtype(example_ids.dtype, np.integer):
        raise ValueError("indices must be a 1-D sequence of integer example indices")
    if example_ids.size and (example_ids.min() < 0 or example_ids.max() >= len(source)):
        raise ValueError(f"indices must lie in [0, {len(source)}) for {name}")
    return example_ids


def _image_decoding(data_cfg, source, example_ids, *, training, host_crop, seed):
    """(image shape, decode(bytes, example id, epoch), resident?): host crops for a training
    pipeline with train_crop='host', else one fixed-size image per record."""
    if training and data_cfg.train_crop == "host":
        if host_crop is None:
            raise ValueError(
                "config.data.train_crop='host' needs the training pipeline's crops: "
                "pass host_crop=rekd_jax.data.host_crop.HostCrop(...) to create()"
            )
        crop_seed = int(seed)

        def decode_crops(data, example_id, epoch):
            return host_crop_lib.decode_crops(data, host_crop, crop_seed, epoch, int(example_id))

        return (host_crop.views, host_crop.size, host_crop.size, 3), decode_crops, False
    image_shape = tuple(records.probe_shape(source, example_ids, data_cfg.host_size))
    host_size = data_cfg.host_size

    def decode(data, example_id, epoch):  # pylint: disable=unused-argument  (deterministic)
        return sources.decode_image(data, host_size)

    resident = _use_resident(data_cfg, source, example_ids.size, image_shape)
    return image_shape, decode, resident


def _resident_fetch(fetch_images, num_examples, image_shape, num_workers):
    """(the split's images, decoded once, fetch of index batches) for resident mode."""
    resident_images, labels, replaced = records.load_resident(
        fetch_images, num_examples, image_shape, num_workers
    )

    def fetch(positions, epoch):  # pylint: disable=unused-argument
        return (
            {"index": positions.astype(np.int32), "label": labels[positions]},
            replaced[positions],
        )

    return resident_images, fetch


def _use_resident(data_cfg, source, num_examples, image_shape) -> bool:
    fixed = data_cfg.host_size > 0 or source.stored_shape is not None
    size_mb = num_examples * math.prod(image_shape) / 2**20
    if data_cfg.resident == "on":
        if not fixed:
            raise ValueError(
                f"config.data.resident='on' needs fixed-size images but "
                f"{source.name} stores images of varying size; set "
                "config.data.host_size (e.g. 256) or resident='off'"
            )
        return True
    if data_cfg.resident == "off":
        return False
    return fixed and size_mb <= data_cfg.resident_max_mb


# ---------------------------------------------------------------------------------------------
# Subsets (semi-supervised 1% / 10%).


def split_metadata(data_cfg, split: str) -> dict:
    """{'labels': int32 [N], 'file_names': list[str] | None} of a split (cached on disk)."""
    return sources.open_split(data_cfg.dataset, split, data_cfg.data_dir).metadata()


def class_balanced_subset(labels, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a random subset with ``round(fraction * n_c)`` (at least 1) examples
    of each class c."""
    if not 0 < fraction <= 1:
        raise ValueError(f"subset fraction {fraction} must be in (0, 1]")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = max(1, int(round(fraction * members.size)))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


def subset_from_file(path: str, file_names: Sequence[str]) -> np.ndarray:
    """Indices of the examples listed in a subset file (one file name per line, e.g. the
    standard ImageNet 1%/10% lists of 'n01440764_10026.JPEG').

    A line with a '/' must equal a stored ``file_name``; a bare name matches the base name.
    """
    if file_names is None:
        raise ValueError(
            "this dataset has no 'file_name' feature, so subset files cannot be "
            "matched; prepare it with rekd_jax.data.prepare (which stores file_name)"
        )
    with open(path) as f:
        wanted = [line.strip() for line in f if line.strip()]
    by_path = {name: i for i, name in enumerate(file_names)}
    by_base = {}
    for i, name in enumerate(file_names):
        by_base.setdefault(name.rsplit("/", 1)[-1], []).append(i)
    indices, missing = [], []
    for name in wanted:
        if "/" in name:
            hit = [by_path[name]] if name in by_path else []
        else:
            hit = by_base.get(name, [])
        if len(hit) > 1:
            raise ValueError(
                f"subset entry {name!r} in {path} matches {len(hit)} examples; use "
                "paths relative to the split folder in the subset file"
            )
        if not hit:
            missing.append(name)
        else:
            indices.append(hit[0])
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(wanted)} names in {path} are not in the split "
            f"(first: {missing[:3]}); check the split (train) and the file list"
        )
    return np.sort(np.asarray(indices, np.int64))


def replicate_resident(pipeline) -> jax.Array | None:
    """The pipeline's resident uint8 dataset, one copy per local device, laid out for pmap
    (None in host mode). Each copy goes straight to its device (no stacked host/device copy)."""
    images = getattr(pipeline, "resident_images", None)
    if images is None:
        return None
    images = np.asarray(images)
    devices = jax.local_devices()
    sharding = jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.array(devices), ("devices",)), jax.sharding.PartitionSpec("devices")
    )
    shards = [jax.device_put(images[None], device) for device in devices]
    return jax.make_array_from_single_device_arrays(
        (len(devices),) + images.shape, sharding, shards
    )
