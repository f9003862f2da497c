"""Augmentation: parity with torchvision ops, sampler statistics, randomness, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rekd_jax.data import augment, pipeline

torch = pytest.importorskip("torch")  # requirements-dev.txt; skipped without PyTorch
T = pytest.importorskip("torchvision.transforms")
F = pytest.importorskip("torchvision.transforms.v2.functional")


def _cfg(**overrides):
    cfg = pipeline.default_data_config().augment
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


IDENTITY_NORM = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
PLAIN = dict(jitter_prob=0.0, gray_prob=0.0, blur_prob=0.0, flip_prob=0.0, **IDENTITY_NORM)


def _images(b=2, h=40, w=52, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (b, h, w, 3), dtype=np.uint8)


def _torch(images):
    return torch.tensor(images).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("box", [(3, 5, 30, 20, 16), (0, 0, 40, 52, 64), (10, 7, 9, 13, 32)])
def test_crop_resize_matches_torchvision_antialias(box):
    top, left, h, w, size = box
    images = _images()
    expected = F.resized_crop(_torch(images), top, left, h, w, [size, size], antialias=True)
    rows = augment.resize_matrix(jnp.full((2,), top), jnp.full((2,), h), 40, size)
    cols = augment.resize_matrix(jnp.full((2,), left), jnp.full((2,), w), 52, size)
    got = np.asarray(augment.apply_separable(jnp.asarray(images), rows, cols, jnp.float32)) / 255
    np.testing.assert_allclose(got, expected.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_apply_view_with_fixed_params_is_resized_crop_and_flip():
    images = _images()
    params = dict(
        top=jnp.array([3, 0]),
        left=jnp.array([5, 2]),
        height=jnp.array([30, 40]),
        width=jnp.array([20, 44]),
        factors=jnp.ones((2, 4)),
        order=jnp.tile(jnp.arange(4), (2, 1)),
        jitter=jnp.array([False, False]),
        gray=jnp.array([False, False]),
        blur=jnp.array([False, False]),
        sigma=jnp.ones(2),
        flip=jnp.array([False, True]),
    )
    got = np.asarray(augment.apply_view(jnp.asarray(images), params, _cfg(**PLAIN), 24))
    t = _torch(images)
    first = F.resized_crop(t[:1], 3, 5, 30, 20, [24, 24], antialias=True)
    second = F.horizontal_flip(F.resized_crop(t[1:], 0, 2, 40, 44, [24, 24], antialias=True))
    expected = torch.cat([first, second]).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_eval_view_matches_torchvision_resize_centre_crop():
    images = _images()
    cfg = _cfg()
    expected = F.normalize(
        F.center_crop(F.resize(_torch(images), [36], antialias=True), [28]),
        list(cfg.mean),
        list(cfg.std),
    )
    got = np.asarray(augment.eval_view(jnp.asarray(images), cfg, 28, 36))
    np.testing.assert_allclose(got, expected.permute(0, 2, 3, 1).numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="eval_resize"):
        augment.eval_view(jnp.asarray(images), cfg, 28, 20)


@pytest.mark.parametrize(
    "name,ours,theirs,factor",
    [
        ("brightness", augment.adjust_brightness, F.adjust_brightness, 1.3),
        ("contrast", augment.adjust_contrast, F.adjust_contrast, 0.6),
        ("saturation", augment.adjust_saturation, F.adjust_saturation, 1.4),
        ("hue+", augment.adjust_hue, F.adjust_hue, 0.08),
        ("hue-", augment.adjust_hue, F.adjust_hue, -0.1),
    ],
)
def test_colour_ops_match_torchvision(name, ours, theirs, factor):
    del name
    t = _torch(_images(h=16, w=16))
    expected = torch.stack([theirs(img, factor) for img in t]).permute(0, 2, 3, 1).numpy()
    got = np.asarray(ours(jnp.asarray(t.permute(0, 2, 3, 1).numpy()), jnp.full((2,), factor)))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_grayscale_is_itu_601_luma_like_torchvision():
    t = _torch(_images(h=8, w=8))
    got = np.asarray(augment.grayscale(jnp.asarray(t.permute(0, 2, 3, 1).numpy())))[..., 0]
    np.testing.assert_allclose(got, F.rgb_to_grayscale(t)[:, 0].numpy(), atol=1e-6)


def test_color_jitter_applies_ops_in_the_given_order():
    t = _torch(_images(b=1, h=8, w=8))
    x = jnp.asarray(t.permute(0, 2, 3, 1).numpy())
    factors = jnp.array([[1.3, 0.7, 1.2, 0.05]])
    order = jnp.array([[3, 1, 0, 2]])  # hue, contrast, brightness, saturation
    expected = F.adjust_saturation(
        F.adjust_brightness(F.adjust_contrast(F.adjust_hue(t[0], 0.05), 0.7), 1.3), 1.2
    )
    got = np.asarray(augment.color_jitter(x, factors, order))[0]
    np.testing.assert_allclose(got, expected.permute(1, 2, 0).numpy(), atol=1e-5)


def _view(images, cfg, size, seed):
    """One jitted MoCo v2 view (jit: one compile instead of one per primitive)."""
    fn = jax.jit(lambda key, x: augment.mocov2_view(key, x, cfg, size))
    return np.asarray(fn(jax.random.PRNGKey(seed), jnp.asarray(images)))


def _tv_boxes(n, height, width, seed=0):
    torch.manual_seed(seed)
    img = torch.zeros(3, height, width)
    return np.array(
        [T.RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)],
        np.float64,
    )


@pytest.mark.parametrize("height,width", [(64, 64), (20, 64)])
def test_crop_sampler_matches_torchvision_distribution(height, width):
    n = 3000
    top, left, h, w = (
        np.asarray(v)
        for v in augment.sample_crop_boxes(
            jax.random.PRNGKey(0), n, height, width, (0.2, 1.0), (3 / 4, 4 / 3)
        )
    )
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    area = h * w / (height * width)
    tv = _tv_boxes(n, height, width)
    tv_area = tv[:, 2] * tv[:, 3] / (height * width)
    assert area.min() > 0.18 and area.max() <= 1.0
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(np.quantile(area, q) - np.quantile(tv_area, q)) < 0.04, q
    assert abs(np.mean(w / h) - np.mean(tv[:, 3] / tv[:, 2])) < 0.05
    # The fallback (whole image clamped to the ratio range) happens as often as in torchvision.
    fallback = np.mean((h == height) & (w == round(height * 4 / 3)) & (left == (width - w) // 2))
    tv_fallback = np.mean((tv[:, 2] == height) & (tv[:, 3] == round(height * 4 / 3)))
    assert abs(fallback - tv_fallback) < 0.03


def test_flip_rate_is_about_half():
    ramp = np.tile(np.linspace(0, 255, 16).astype(np.uint8)[None, :, None], (16, 1, 3))
    images = np.repeat(ramp[None], 1000, axis=0)
    cfg = _cfg(**dict(PLAIN, flip_prob=0.5), crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    out = _view(images, cfg, 16, 1)
    flipped = out[:, 0, 0, 0] > out[:, 0, -1, 0]
    assert abs(flipped.mean() - 0.5) < 0.05
    unflipped = out[~flipped]
    np.testing.assert_allclose(
        unflipped, np.repeat(ramp[None] / 255.0, len(unflipped), 0), atol=1e-5
    )


def test_grayscale_rate_is_about_point_two():
    images = np.repeat(_images(b=1, h=16, w=16), 1000, axis=0)
    cfg = _cfg(**dict(PLAIN, gray_prob=0.2))
    out = _view(images, cfg, 16, 2)
    gray = np.abs(out[..., 0] - out[..., 1]).max(axis=(1, 2)) < 1e-5
    assert abs(gray.mean() - 0.2) < 0.04


def test_jitter_probability_and_effect():
    images = np.repeat(_images(b=1, h=16, w=16), 1000, axis=0)
    base = _view(images, _cfg(**PLAIN), 16, 3)
    out = _view(images, _cfg(**dict(PLAIN, jitter_prob=0.8)), 16, 3)
    changed = np.abs(out - base).max(axis=(1, 2, 3)) > 1e-4
    assert abs(changed.mean() - 0.8) < 0.04
    # Brightness alone (same key, so the same crops) scales the image by 0.6 .. 1.4.
    bright = _cfg(**dict(PLAIN, jitter_prob=1.0), jitter=(0.4, 0.0, 0.0, 0.0))
    out = _view(images, bright, 16, 3)
    ratio = out.mean(axis=(1, 2, 3)) / base.mean(axis=(1, 2, 3))
    assert ratio.min() < 0.7 and ratio.max() > 1.2


def test_blur_reduces_high_frequencies():
    checker = ((np.indices((32, 32)).sum(0) // 2) % 2 * 255).astype(np.uint8)
    images = np.repeat(np.repeat(checker[None, ..., None], 3, -1), 64, 0)
    plain = _cfg(**PLAIN, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    blurred = _cfg(
        **dict(PLAIN, blur_prob=1.0),
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        blur_sigma=(1.0, 2.0),
    )

    def high_freq(cfg):
        out = _view(images, cfg, 32, 5)
        return np.abs(np.diff(out, axis=1)).mean() + np.abs(np.diff(out, axis=2)).mean()

    assert high_freq(blurred) < 0.3 * high_freq(plain)


def test_blur_matrix_interior_matches_torchvision_gaussian_blur():
    image = _images(b=1, h=24, w=24)
    sigma = 1.3
    radius = 6  # ceil(3 * sigma_max) with sigma_max = 2
    blur = augment.blur_matrix(jnp.array([sigma]), jnp.array([True]), 24, 2.0)
    got = np.asarray(augment.apply_separable(jnp.asarray(image), blur, blur, jnp.float32))[0]
    expected = (
        F.gaussian_blur(
            torch.tensor(image[0]).permute(2, 0, 1).float(), [2 * radius + 1] * 2, [sigma, sigma]
        )
        .permute(1, 2, 0)
        .numpy()
    )
    inner = slice(radius, 24 - radius)
    np.testing.assert_allclose(got[inner, inner], expected[inner, inner], atol=1e-3)


def test_determinism_and_two_views_differ():
    images = jnp.asarray(_images(b=8, h=32, w=32))
    cfg = _cfg()
    a1, a2 = augment.two_views(jax.random.PRNGKey(0), images, cfg, 24)
    b1, b2 = augment.two_views(jax.random.PRNGKey(0), images, cfg, 24)
    c1, _ = augment.two_views(jax.random.PRNGKey(1), images, cfg, 24)
    np.testing.assert_array_equal(np.asarray(a1), np.asarray(b1))
    np.testing.assert_array_equal(np.asarray(a2), np.asarray(b2))
    assert a1.shape == (8, 24, 24, 3) and a1.dtype == jnp.float32
    per_example = np.abs(np.asarray(a1) - np.asarray(a2)).mean(axis=(1, 2, 3))
    assert (per_example > 1e-3).all()
    assert np.abs(np.asarray(a1) - np.asarray(c1)).mean() > 1e-2


def test_bf16_under_pmap_matches_float32():
    devices = jax.local_device_count()
    images = jnp.asarray(_images(b=devices * 2, h=32, w=32)).reshape(devices, 2, 32, 32, 3)
    cfg = _cfg()
    keys = jax.random.split(jax.random.PRNGKey(0), devices)

    def views(dtype):
        fn = jax.pmap(lambda k, x: augment.two_views(k, x, cfg, 24, dtype))
        return fn(keys, images)

    v1_bf16, _ = views(jnp.bfloat16)
    v1_f32, _ = views(jnp.float32)
    assert v1_bf16.dtype == jnp.bfloat16 and v1_bf16.shape == (devices, 2, 24, 24, 3)
    assert np.isfinite(np.asarray(v1_bf16, np.float32)).all()
    # Same random parameters; bf16 rounding (and a rare jitter clamp flip) is the only change.
    diff = np.abs(np.asarray(v1_bf16, np.float32) - np.asarray(v1_f32))
    assert np.median(diff) < 0.02 and diff.mean() < 0.05
    ev = jax.jit(lambda x: augment.eval_view(x, cfg, 24, 28, jnp.bfloat16))(images[0])
    assert ev.dtype == jnp.bfloat16 and ev.shape == (2, 24, 24, 3)


def test_bad_image_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\[batch, H, W, 3\]"):
        augment.mocov2_view(jax.random.PRNGKey(0), jnp.zeros((2, 3, 8, 8), jnp.uint8), _cfg(), 8)
