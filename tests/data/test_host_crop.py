"""Host crops over the full image (data.train_crop='host'): the box distribution is torchvision's
RandomResizedCrop.get_params on non-square images, the pixels are torchvision's resized_crop,
the draws are a pure function of (seed, epoch, index), and the pipeline resumes exactly."""

import io
import os

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from rekd_jax.data import augment, host_crop, pipeline, prepare

torch = pytest.importorskip("torch")  # requirements-dev.txt; skipped without PyTorch
T = pytest.importorskip("torchvision.transforms")
TF = pytest.importorskip("torchvision.transforms.functional")

N = 4000


def _ours(height, width, scale, seed=0, epoch=0):
    spec = host_crop.HostCrop(views=1, size=32, scale=scale)
    return np.concatenate(
        [host_crop.sample_boxes(spec, height, width, seed, epoch, i) for i in range(N)]
    )


def _torchvision(height, width, scale, seed=0):
    torch.manual_seed(seed)
    img = torch.zeros(1, height, width)
    return np.array(
        [T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(N)],
        np.float64,
    )


def _statistics(boxes, height, width):
    """Area fraction, log aspect ratio, horizontal and vertical centre (fractions of the side)."""
    top, left, h, w = boxes.T
    return {
        "area": h * w / (height * width),
        "log_aspect": np.log(w / h),
        "centre_x": (left + w / 2) / width,
        "centre_y": (top + h / 2) / height,
    }


def _worst_p(a, b, height, width):
    sa, sb = _statistics(a, height, width), _statistics(b, height, width)
    return min(stats.ks_2samp(sa[k], sb[k]).pvalue for k in sa)


@pytest.mark.parametrize(
    "height,width,scale", [(300, 500, (0.08, 1.0)), (500, 200, (0.2, 1.0)), (120, 400, (0.08, 1.0))]
)
def test_box_distribution_is_torchvisions_on_non_square_images(height, width, scale):
    ours = _ours(height, width, scale)
    tv = _torchvision(height, width, scale)
    top, left, h, w = ours.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    assert (ours == np.round(ours)).all()  # integer boxes, as get_params returns
    # Two-sample KS per statistic: the same distribution passes comfortably...
    assert _worst_p(ours, tv, height, width) > 1e-3
    # ...histograms agree bin by bin (area fraction in tenths, log-aspect in 8 bins)...
    so, st = _statistics(ours, height, width), _statistics(tv, height, width)
    for key, bins in (
        ("area", np.linspace(0, 1, 11)),
        ("log_aspect", np.linspace(np.log(3 / 4), np.log(4 / 3), 9)),
    ):
        ho = np.histogram(so[key], bins)[0] / N
        ht = np.histogram(st[key], bins)[0] / N
        assert np.abs(ho - ht).max() < 0.03, key
    # ...and the fallback (whole image clamped to the ratio range) is as frequent.
    full_h = (h == height) & (left == (width - w) // 2)
    tv_full_h = (tv[:, 2] == height) & (tv[:, 1] == (width - tv[:, 3]) // 2)
    assert abs(full_h.mean() - tv_full_h.mean()) < 0.03


def test_the_comparison_has_teeth():
    """Samplers that differ from torchvision's the ways that matter fail the same comparison."""
    height, width = 300, 500
    tv = _torchvision(height, width, (0.08, 1.0))
    # Another scale range.
    assert _worst_p(_ours(height, width, (0.2, 1.0)), tv, height, width) < 1e-6
    # The centre-square path: boxes drawn in the centre 300 x 300 square, shifted into place.
    square = _ours(300, 300, (0.08, 1.0))
    square[:, 1] += (width - 300) // 2
    assert _worst_p(square, tv, height, width) < 1e-6


def test_draws_are_a_pure_function_of_seed_epoch_index():
    spec = host_crop.HostCrop(views=2, size=32, scale=(0.2, 1.0))
    a = host_crop.sample_boxes(spec, 300, 400, 7, 3, 11)
    np.testing.assert_array_equal(a, host_crop.sample_boxes(spec, 300, 400, 7, 3, 11))
    assert a.shape == (2, 4) and not np.array_equal(a[0], a[1])  # two independent views
    for other in ((8, 3, 11), (7, 4, 11), (7, 3, 12)):
        assert not np.array_equal(a, host_crop.sample_boxes(spec, 300, 400, *other))


def _smooth_image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def _encode(array, fmt, **kw):
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt, **kw)
    return out.getvalue()


def test_crops_are_torchvisions_resized_crop_of_the_full_image():
    image = _smooth_image(180, 260)
    spec = host_crop.HostCrop(views=2, size=48, scale=(0.08, 1.0))
    crops = host_crop.decode_crops(_encode(image, "PNG"), spec, 0, 5, 9)
    boxes = host_crop.sample_boxes(spec, 180, 260, 0, 5, 9)
    pil = Image.fromarray(image)
    for crop, (top, left, h, w) in zip(crops, boxes.astype(int)):
        expected = np.asarray(
            TF.resized_crop(pil, top, left, h, w, [48, 48], T.InterpolationMode.BILINEAR)
        )
        np.testing.assert_array_equal(crop, expected)


def test_reduced_jpeg_decode_stays_close_to_the_full_decode():
    image = _smooth_image(800, 1200)
    data = _encode(image, "JPEG", quality=95)
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    spec = host_crop.HostCrop(views=2, size=64, scale=(0.5, 1.0))  # big crops: DCT reduction
    boxes = host_crop.sample_boxes(spec, 800, 1200, 1, 0, 0)
    assert min(host_crop.draft_request(boxes, 800, 1200, 64)) < 800  # a reduced decode
    crops = host_crop.decode_crops(data, spec, 1, 0, 0)
    for crop, (top, left, h, w) in zip(crops, boxes.astype(int)):
        expected = np.asarray(
            TF.resized_crop(
                Image.fromarray(full), top, left, h, w, [64, 64], T.InterpolationMode.BILINEAR
            ),
            np.float64,
        )
        assert np.abs(crop - expected).mean() < 3.0  # of 255; a wrong box differs by tens


def test_resize_random_crop_is_resize_then_crop():
    """RotNet's Resize(256) + RandomCrop(224), scaled down: Resize(40) + RandomCrop(32)."""
    image = _smooth_image(60, 90)
    spec = host_crop.HostCrop(views=1, size=32, crop=host_crop.RESIZE_RANDOM_CROP, resize=40)
    seen = set()
    for index in range(40):
        crop = host_crop.decode_crops(_encode(image, "PNG"), spec, 0, 0, index)[0]
        top, left, _, _ = host_crop.sample_boxes(spec, 60, 90, 0, 0, index)[0]
        i, j = int(round(top * 40 / 60)), int(round(left * 60 / 90))
        assert 0 <= i <= 40 - 32 and 0 <= j <= 60 - 32
        seen.add((i, j))
        resized = np.asarray(
            TF.resize(Image.fromarray(image), 40, T.InterpolationMode.BILINEAR), np.float64
        )
        assert resized.shape == (40, 60, 3)
        assert np.abs(crop - resized[i : i + 32, j : j + 32]).max() <= 1  # uint8 rounding only
    assert len(seen) > 20  # offsets really vary


def test_device_resize_random_crop_matches_torchvision():
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    images = np.stack([_smooth_image(60, 90, s) for s in range(6)])
    cfg = dict(
        pipeline.default_data_config().augment.to_dict(),
        crop=augment.RESIZE_RANDOM_CROP,
        crop_resize=40,
        jitter_prob=0.0,
        gray_prob=0.0,
        blur_prob=0.0,
        flip_prob=0.0,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    key = jax.random.PRNGKey(int(rng.integers(100)))
    params = augment.sample_view_params(key, 6, 60, 90, cfg, 32)
    out = np.asarray(jax.jit(lambda x: augment.apply_view(x, params, cfg, 32))(jnp.asarray(images)))
    for b in range(6):
        i = int(round(float(params["top"][b]) * 40 / 60))
        j = int(round(float(params["left"][b]) * 60 / 90))
        tensor = torch.from_numpy(images[b]).permute(2, 0, 1).float() / 255.0
        resized = TF.resize(tensor, [40, 60], antialias=True).permute(1, 2, 0).numpy()
        np.testing.assert_allclose(out[b], resized[i : i + 32, j : j + 32], atol=2e-3)


def _jpeg_dataset(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for k in range(12):
        h, w = (int(v) for v in rng.integers(40, 90, 2))
        path = src / f"c{k % 3}" / f"{k}.jpg"
        os.makedirs(path.parent, exist_ok=True)
        Image.fromarray(_smooth_image(h, w, k)).save(path, quality=90)
    prepare.prepare(str(src), "hostcrop", str(tmp_path / "tfds"), num_workers=1, log=lambda m: None)
    cfg = pipeline.default_data_config()
    cfg.update(
        dict(
            dataset="hostcrop",
            data_dir=str(tmp_path / "tfds"),
            train_split="train",
            eval_split="train",
            image_size=24,
            eval_resize=28,
            host_size=28,
            num_workers=2,
            train_crop="host",
        )
    )
    return cfg


def _create(cfg, **kw):
    kw = dict(
        dict(
            split="train",
            training=True,
            global_batch_size=4,
            seed=3,
            num_local_devices=2,
            process_index=0,
            process_count=1,
            host_crop=host_crop.for_pretraining(cfg),
        ),
        **kw,
    )
    return pipeline.create(cfg, **kw)


def test_host_crop_pipeline_shapes_and_exact_resume(tmp_path):
    cfg = _jpeg_dataset(tmp_path)
    pipe = _create(cfg)
    assert pipe.resident_images is None and pipe.image_shape == (2, 24, 24, 3)
    it = iter(pipe)
    straight = [next(it) for _ in range(7)]  # crosses the epoch boundary (3 steps / epoch)
    assert straight[0]["image"].shape == (2, 2, 2, 24, 24, 3)
    state_after_2 = None
    again = _create(cfg)
    it2 = iter(again)
    for _ in range(2):
        next(it2)
    state_after_2 = again.get_state()
    resumed = _create(cfg)
    resumed.set_state(state_after_2)
    it3 = iter(resumed)
    for want in straight[2:]:
        got = next(it3)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])
    # A new epoch redraws the crops of the same example.
    assert not np.array_equal(straight[0]["image"], straight[3]["image"])
    # Evaluation pipelines keep the host_size centre path (Resize + CenterCrop stays exact).
    ev = pipeline.create(
        cfg,
        split="train",
        training=False,
        global_batch_size=4,
        seed=0,
        num_local_devices=2,
        process_index=0,
        process_count=1,
    )
    assert ev.image_shape == (28, 28, 3)


def test_host_crop_config_errors(tmp_path):
    cfg = _jpeg_dataset(tmp_path)
    with pytest.raises(ValueError, match="host_crop=rekd_jax.data.host_crop.HostCrop"):
        _create(cfg, host_crop=None)
    cfg.resident = "on"
    with pytest.raises(ValueError, match="resident.*host crops"):
        pipeline.validate_data_config(cfg)
    cfg.resident, cfg.train_crop = "auto", "centre"
    with pytest.raises(ValueError, match="train_crop"):
        pipeline.validate_data_config(cfg)


def test_device_views_of_host_crops_skip_the_crop():
    import jax
    import jax.numpy as jnp

    crops = np.stack([_smooth_image(24, 24, s) for s in range(4)]).reshape(2, 2, 24, 24, 3)
    cfg = dict(
        pipeline.default_data_config().augment.to_dict(),
        jitter_prob=0.0,
        gray_prob=0.0,
        blur_prob=0.0,
        flip_prob=0.0,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    v1, v2 = augment.two_views(jax.random.PRNGKey(0), jnp.asarray(crops), cfg, 24)
    np.testing.assert_allclose(np.asarray(v1), crops[:, 0] / 255.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(v2), crops[:, 1] / 255.0, atol=1e-6)
    with pytest.raises(ValueError, match="2 host crops"):
        augment.two_views(jax.random.PRNGKey(0), jnp.asarray(crops[:, :1]), cfg, 24)
