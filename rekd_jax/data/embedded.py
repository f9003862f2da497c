"""`rekd_shapes`: the built-in procedural image dataset (no download, deterministic from a seed).

Ten classes of drawn objects (circle, square, triangle, star, cross, ring, crescent, heart,
arrow, L-shape) with random colour, scale, position and rotation, antialiased by 2x
supersampling, plus pixel noise. Class identity is the shape only, so a representation has
to ignore colour and pose to separate the classes. Version 2.0.0 draws large, roughly centred
solid objects on desaturated plain backgrounds ('plain' style, configs 'default' and 'tiny'):
every MoCo v2 crop then holds part of the object, and a small self-supervised encoder learns
shape within a CPU budget (the quick start: kNN about +15 points over random init). Version
1.0.0's images (config 'patterned': smaller objects anywhere, textured objects, full-colour
patterned backgrounds) made the background most of every crop, and MoCo v2 learnt background
colour and texture instead: kNN fell below the random-init encoder's (docs/results.md).

Written as a TFDS ArrayRecord dataset (features: 'image' PNG, 'label' ClassLabel, 'file_name')
by a normal ``tfds.core.GeneratorBasedBuilder``; images are PNG-encoded with PIL so no
TensorFlow is needed. Configs: 'default' (32 px, 10,000 train / 2,000 test), 'tiny'
(32 px, 200 / 100, for tests) and 'patterned' (the 1.0.0 images); ``build_rekd_shapes`` writes
any other size under a new config name.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import shutil

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from rekd_jax.core import fileio, progress

CLASS_NAMES = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "crescent",
    "heart",
    "arrow",
    "lshape",
)
_SUPERSAMPLE = 2
_CHUNK = 500


@dataclasses.dataclass(eq=False)
class RekdShapesConfig(tfds.core.BuilderConfig):
    """Size of the generated dataset; the seed fixes every pixel."""

    image_size: int = 32
    num_train: int = 10_000
    num_test: int = 2_000
    seed: int = 0
    style: str = "plain"


def _inside(shape: str, u, v):
    """Boolean mask of points (u, v) (object frame, object fits the unit disk) in ``shape``."""
    r = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u)
    if shape == "circle":
        return r < 0.9
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) < 0.68
    if shape == "triangle":  # regular polygon with circumradius 1
        n = 3
        sector = np.mod(phi, 2 * np.pi / n) - np.pi / n
        return r * np.cos(sector) < np.cos(np.pi / n)
    if shape == "star":  # five points, inner radius 0.4
        t = np.mod(phi * 5 / (2 * np.pi), 1.0)
        return r < 0.4 + 0.6 * np.abs(2 * t - 1) ** 1.5
    if shape == "cross":
        return ((np.abs(u) < 0.28) & (np.abs(v) < 0.92)) | ((np.abs(v) < 0.28) & (np.abs(u) < 0.92))
    if shape == "ring":
        return (r < 0.92) & (r > 0.55)
    if shape == "crescent":
        return (r < 0.92) & ((u - 0.42) ** 2 + v**2 > 0.75**2)
    if shape == "heart":
        x, y = u * 1.25, -v * 1.25 + 0.25
        return (x * x + y * y - 1) ** 3 - x * x * y**3 < 0
    if shape == "arrow":
        shaft = (np.abs(v) < 0.2) & (u > -0.95) & (u < 0.15)
        head = (u >= 0.15) & (u < 0.95) & (np.abs(v) < (0.95 - u) * 0.9)
        return shaft | head
    if shape == "lshape":
        return ((u > -0.8) & (u < -0.25) & (np.abs(v) < 0.9)) | (
            (u > -0.8) & (u < 0.75) & (v > 0.35) & (v < 0.9)
        )
    raise ValueError(f"unknown shape {shape!r}")


def _luma(c):
    return c @ np.asarray([0.299, 0.587, 0.114])


def _per_image(values):
    """[n] or [n, 3] per-image values -> float32 broadcastable against [n, H, W(, 3)]."""
    values = np.asarray(values, np.float32)
    return values[:, None, None] if values.ndim == 1 else values[:, None, None, :]


# Generation styles: object scale range, spread of the object centre (1 = anywhere inside the
# image), background saturation (1 = full colour), and whether backgrounds / objects get patterns.
# 'plain' (version 2.0.0, the default): large, roughly centred solid objects on desaturated plain
# backgrounds. 'patterned' (version 1.0.0): small objects anywhere on full-colour patterned
# backgrounds; there the background is most of every crop and MoCo v2 learns background colour
# and texture instead of shape (kNN fell below the random-init encoder's; docs/results.md).
STYLES = {
    "plain": dict(scale=(0.6, 0.9), spread=0.3, bg_saturation=0.15, patterns=False),
    "patterned": dict(scale=(0.35, 0.75), spread=1.0, bg_saturation=1.0, patterns=True),
}


def generate_images(num: int, image_size: int, seed: int, style: str = "plain"):
    """Generate ``num`` images deterministically: (uint8 [num, S, S, 3], int64 labels [num])."""
    if style not in STYLES:
        raise ValueError(f"unknown rekd_shapes style {style!r}; use one of {sorted(STYLES)}")
    st = STYLES[style]
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num) % len(CLASS_NAMES))
    images = np.empty((num, image_size, image_size, 3), np.uint8)
    hi = image_size * _SUPERSAMPLE
    grid = ((np.arange(hi) + 0.5) / hi * 2 - 1).astype(np.float32)  # [-1, 1]
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    for start in range(0, num, _CHUNK):
        n = min(_CHUNK, num - start)
        lab = labels[start : start + n]
        scale = _per_image(rng.uniform(*st["scale"], n))
        cx = _per_image(rng.uniform(-1, 1, n)) * (1 - scale) * st["spread"]
        cy = _per_image(rng.uniform(-1, 1, n)) * (1 - scale) * st["spread"]
        theta = _per_image(rng.uniform(0, 2 * np.pi, n))
        x, y = (gx - cx) / scale, (gy - cy) / scale
        u = np.cos(theta) * x + np.sin(theta) * y
        v = -np.sin(theta) * x + np.cos(theta) * y
        mask = np.zeros((n, hi, hi), bool)
        for c, name in enumerate(CLASS_NAMES):
            sel = lab == c
            if sel.any():
                mask[sel] = _inside(name, u[sel], v[sel])
        # Colours: foreground pair, background pair with enough luma contrast.
        fg = rng.uniform(0, 1, (n, 3))
        fg2 = np.clip(fg + rng.normal(0, 0.25, (n, 3)), 0, 1)
        bg = rng.uniform(0, 1, (n, 3))
        low_contrast = np.abs(_luma(fg) - _luma(bg)) < 0.3
        jitter = rng.normal(0, 0.1, (int(low_contrast.sum()), 3))
        bg[low_contrast] = np.clip(1.0 - fg[low_contrast] + jitter, 0, 1)
        bg = _luma(bg)[:, None] + st["bg_saturation"] * (bg - _luma(bg)[:, None])
        bg2 = np.clip(bg + rng.normal(0, 0.15, (n, 3)), 0, 1)
        # Foreground texture (in the object frame): 0 solid, 1 stripes, 2 checker, 3 noise.
        freq = _per_image(rng.uniform(2.0, 5.0, n))
        fg_kind = rng.integers(0, 4, n)[:, None, None] * st["patterns"]
        stripes = np.sin(np.pi * freq * u) > 0
        checker = (np.floor(freq * u / 2) + np.floor(freq * v / 2)) % 2 == 0
        noise = rng.random((n, hi, hi), np.float32) > 0.5
        fg_pat = np.select(
            [fg_kind == 1, fg_kind == 2, fg_kind == 3],
            [stripes, checker, noise],
            np.zeros_like(stripes),
        )
        # Background (image frame): 0 solid, 1 linear gradient, 2 soft stripes.
        bg_kind = rng.integers(0, 3, n)[:, None, None] * st["patterns"]
        alpha = _per_image(rng.uniform(0, 2 * np.pi, n))
        along = (np.cos(alpha) * gx + np.sin(alpha) * gy + 1) / 2
        bg_freq = _per_image(rng.uniform(1.0, 3.0, n))
        bg_mix = np.select(
            [bg_kind == 1, bg_kind == 2],
            [along, 0.5 + 0.5 * np.sin(np.pi * bg_freq * (2 * along - 1))],
            np.zeros_like(along),
        )
        # The composite is linear in four scalar fields: downsample them (antialiasing), then
        # mix colours at the output resolution.
        m = mask.astype(np.float32)
        fields = np.stack([m, m * fg_pat, 1 - m, (1 - m) * bg_mix], axis=-1)
        fields = fields.reshape(n, image_size, _SUPERSAMPLE, image_size, _SUPERSAMPLE, 4).mean(
            (2, 4)
        )
        img = (
            fields[..., 0:1] * _per_image(fg)
            + fields[..., 1:2] * _per_image(fg2 - fg)
            + fields[..., 2:3] * _per_image(bg)
            + fields[..., 3:4] * _per_image(bg2 - bg)
        )
        img = img + rng.normal(0, 0.02, img.shape).astype(np.float32)
        images[start : start + n] = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class QuietPrepare:
    """Mixin for this project's offline TFDS builders: TFDS prints "Downloading and preparing
    dataset Unknown size ..." and "... downloaded and prepared" to stdout around every build;
    nothing is downloaded here and the callers log their own line, so both are dropped."""

    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass


class RekdShapes(QuietPrepare, tfds.core.GeneratorBasedBuilder):
    """Procedural shapes (see module docstring)."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release (now the 'patterned' config).",
        "2.0.0": "Plain style: large centred objects on desaturated plain backgrounds, "
        "so that self-supervised learning can find shape at a CPU budget.",
    }
    BUILDER_CONFIGS = [
        RekdShapesConfig(name="default", description="32 px, 10,000 train / 2,000 test"),
        RekdShapesConfig(
            name="tiny",
            num_train=200,
            num_test=100,
            description="32 px, 200 train / 100 test (tests)",
        ),
        RekdShapesConfig(
            name="patterned",
            style="patterned",
            description="32 px, 10,000 / 2,000, the 1.0.0 images",
        ),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self):
        size = self.builder_config.image_size
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
                    "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        cfg = self.builder_config
        return {
            "train": self._generate_examples("train", cfg.num_train, cfg.seed * 2),
            "test": self._generate_examples("test", cfg.num_test, cfg.seed * 2 + 1),
        }

    def _generate_examples(self, split, num, seed):
        images, labels = generate_images(
            num, self.builder_config.image_size, seed, self.builder_config.style
        )
        for i, (image, label) in enumerate(zip(images, labels)):
            name = f"{split}/{CLASS_NAMES[label]}/{i:06d}.png"
            yield name, {"image": _png(image), "label": int(label), "file_name": name}


def build_atomically(make_builder, dataset_dir: str, *, overwrite: bool, finish=None) -> str:
    """Runs ``make_builder(root).download_and_prepare()`` in a folder beside ``dataset_dir``
    (rekd_jax.core.fileio.atomic_dir), moves the built version folder's files up, calls
    ``finish(folder)`` (e.g. to add a report) and renames the result to ``dataset_dir``. An
    existing dataset_dir stays valid throughout; overwrite=False refuses to replace it."""
    with fileio.atomic_dir(
        dataset_dir, overwrite=overwrite, what="dataset", flag="--overwrite"
    ) as tmp:
        root = os.path.join(tmp, "_build")
        builder = make_builder(root)
        builder.download_and_prepare()
        built = str(builder.data_dir)
        for name in os.listdir(built):
            os.rename(os.path.join(built, name), os.path.join(tmp, name))
        shutil.rmtree(root)
        if finish is not None:
            finish(tmp)
    return dataset_dir


def build_rekd_shapes(data_dir: str, config: str | RekdShapesConfig = "default") -> str:
    """Generate and write the dataset (a predefined config name or a custom config) to data_dir,
    atomically (build_atomically; a concurrent first use that finishes first wins).

    Returns the dataset directory. Logged, since it happens on first use of 'rekd_shapes'.
    """
    builder = RekdShapes(data_dir=data_dir, config=config, file_format="array_record")
    cfg = builder.builder_config
    dataset_dir = str(builder.data_dir)
    logging.info(
        "Building the embedded dataset rekd_shapes/%s (%d train / %d test, %d px, seed %d) in %s",
        cfg.name,
        cfg.num_train,
        cfg.num_test,
        cfg.image_size,
        cfg.seed,
        dataset_dir,
    )
    try:
        with progress.heartbeat(f"building rekd_shapes/{cfg.name}"):
            build_atomically(
                lambda root: RekdShapes(data_dir=root, config=config, file_format="array_record"),
                dataset_dir,
                overwrite=False,
            )
    except fileio.AlreadyExistsError:
        logging.info("another process built %s first; using it", dataset_dir)
    return dataset_dir
