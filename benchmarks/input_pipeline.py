"""Input pipeline throughput: host decode paths and on-device augmentation. Prints a table.

    python benchmarks/input_pipeline.py                      # full sizes
    python benchmarks/input_pipeline.py --small              # quick run on a CPU

Host rows build datasets on the fly in a temp dir: random JPEGs of varying size (ImageNet-like
300-500 px) read through the two ImageNet training paths of ``data.train_crop``:

* 'device': decode (JPEG draft), shorter side resized and centre-cropped to --host_size; the
  RandomResizedCrop then runs on the device (one uint8 host_size^2 image per example);
* 'host': decode at the largest JPEG DCT reduction that keeps both crops >= 224 px, then two
  RandomResizedCrop(0.2-1) views over the full image, each resized to 224 (two 224^2 crops per
  example; what MoCo / SEED feed their networks);

and the embedded 32 px rekd_shapes (PNG decode only, resident mode off). Each host row gives
images/s (wall time) and images/s per host core (images per CPU-second of the process, so
other load on the machine does not distort it).
Device rows time jitted ``augment.two_views`` at 32 px and 224 px, and the host-crop variant
(two 224 px crops in, colour/blur/flip only). Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from rekd_jax.data import augment, host_crop, pipeline, prepare


def _random_jpeg_folder(root, num_images, rng):
    for i in range(num_images):
        height, width = rng.integers(300, 500, 2)
        # Smooth random content (compresses like a photo, unlike white noise).
        small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((int(width), int(height)), Image.BILINEAR)
        path = os.path.join(root, f"class{i % 10}", f"{i:06d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image.save(path, quality=90)


def _host_rate(cfg, batch, num_batches):
    pipe = pipeline.create(
        cfg,
        split="train",
        training=True,
        global_batch_size=batch,
        seed=0,
        num_local_devices=1,
        process_index=0,
        process_count=1,
        host_crop=host_crop.for_pretraining(cfg),
    )
    it = iter(pipe)
    next(it)  # start-up: threads, first batch
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(num_batches):
        next(it)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    pipe.close()
    # images/s of wall time, and images per CPU-second of this process (all its threads): the
    # rate one fully used host core sustains, unaffected by other load on the machine.
    return batch * num_batches / elapsed, batch * num_batches / cpu


def _device_rate(batch, size, in_size, dtype, iters, cfg, views=0):
    """views=0: uint8 [batch, in, in, 3] images; views=2: host crops [batch, 2, in, in, 3]."""
    shape = (batch, views, in_size, in_size, 3) if views else (batch, in_size, in_size, 3)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    fn = jax.jit(lambda key, x: augment.two_views(key, x, cfg, size, dtype))
    jax.block_until_ready(fn(jax.random.PRNGKey(0), images))
    start = time.perf_counter()
    for i in range(iters):
        out = fn(jax.random.PRNGKey(i + 1), images)
    jax.block_until_ready(out)
    seconds = (time.perf_counter() - start) / iters
    return batch / seconds, seconds * 1e3


def _jpeg_config(data_dir, host_size, num_workers, train_crop):
    """The data config of the generated JPEG dataset read through one `train_crop` path."""
    cfg = pipeline.default_data_config()
    cfg.update(
        dict(
            dataset="bench_jpeg",
            data_dir=data_dir,
            host_size=host_size,
            image_size=224,
            eval_resize=256,
            resident="off",
            num_workers=num_workers,
            prefetch=2,
            train_crop=train_crop,
        )
    )
    return cfg


def _host_rows(args, small):
    """(path, batch, images/s, images per CPU-second, ms/batch) of each host row: the two JPEG
    training paths over a generated dataset, and the embedded 32 px rekd_shapes."""
    jpeg_images = 64 if small else 2048
    host_batch = 16 if small else 256
    host_batches = 3 if small else 6
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        _random_jpeg_folder(src, jpeg_images, np.random.default_rng(0))
        prepare.prepare(
            src,
            "bench_jpeg",
            os.path.join(tmp, "tfds"),
            num_workers=args.num_workers,
            log=lambda message: None,
        )
        for train_crop in ("device", "host"):
            jpeg_cfg = _jpeg_config(
                os.path.join(tmp, "tfds"), args.host_size, args.num_workers, train_crop
            )
            rate, per_core = _host_rate(jpeg_cfg, host_batch, host_batches)
            name = (
                f"host, train_crop=device: JPEG -> centre {args.host_size}^2"
                if train_crop == "device"
                else "host, train_crop=host: JPEG -> 2 full-image RRC 224^2"
            )
            rows.append((name, host_batch, rate, per_core, host_batch / rate * 1e3))
        shapes_cfg = pipeline.default_data_config()
        shapes_cfg.update(
            dict(
                dataset="rekd_shapes/tiny" if small else "rekd_shapes",
                data_dir=os.path.join(tmp, "tfds"),
                resident="off",
                num_workers=args.num_workers,
            )
        )
        shapes_batch = 64 if small else 512
        rate, per_core = _host_rate(shapes_cfg, shapes_batch, host_batches)
        rows.append(
            (
                "host: 32 px PNG decode (rekd_shapes, resident off)",
                shapes_batch,
                rate,
                per_core,
                shapes_batch / rate * 1e3,
            )
        )
    return rows


def _device_rows(small, augment_cfg):
    """(path, batch, images/s, ms/batch) of jitted two_views at 32 and 224 px, and over host
    crops, in float32 and bfloat16."""
    batch32 = 64 if small else 512
    batch224 = 8 if small else 256
    iters = 3 if small else 20
    rows = []
    for size, in_size, batch, views in (
        (32, 32, batch32, 0),
        (224, 256, batch224, 0),
        (224, 224, batch224, 2),
    ):
        for dtype in (jnp.float32, jnp.bfloat16):
            rate, ms = _device_rate(batch, size, in_size, dtype, iters, augment_cfg, views)
            what = "host crops 2x" if views else ""
            rows.append(
                (
                    f"device: two_views {what}{in_size}->{size} px {jnp.dtype(dtype).name}",
                    batch,
                    rate,
                    ms,
                )
            )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="small sizes for a CPU run")
    parser.add_argument("--num_workers", type=int, default=os.cpu_count())
    parser.add_argument("--host_size", type=int, default=256)
    args = parser.parse_args(argv)
    tfds.disable_progress_bar()
    cfg = pipeline.default_data_config()
    device = jax.devices()[0]
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, jax {jax.__version__}"
    )
    print(f"device: {device.platform} {device.device_kind} x{jax.local_device_count()}")
    print(f"decoding threads: {args.num_workers}")
    rows = _host_rows(args, args.small)
    device_rows = _device_rows(args.small, cfg.augment)
    print(f"\n{'path':<58} {'batch':>6} {'images/s':>10} {'/core':>8} {'ms/batch':>9}")
    for name, batch, rate, per_core, ms in rows:
        print(f"{name:<58} {batch:>6} {rate:>10.0f} {per_core:>8.0f} {ms:>9.2f}")
    for name, batch, rate, ms in device_rows:
        print(f"{name:<58} {batch:>6} {rate:>10.0f} {'':>8} {ms:>9.2f}")
    print(
        "(/core: host images per CPU-second of the process, i.e. per fully used host core; "
        "device rows count source images, each yields two views)"
    )


if __name__ == "__main__":
    main()
