"""Input pipeline throughput: host decode paths and on-device augmentation. Prints a table.

    python benchmarks/input_pipeline.py                      # full sizes
    python benchmarks/input_pipeline.py --small              # quick run on a CPU

Host rows build datasets on the fly in a temp dir: random JPEGs of varying size (decoded,
shorter side resized and centre-cropped to --host_size in worker threads) and the embedded
32 px rekd_shapes (PNG decode only, resident mode off). Device rows time jitted
``augment.two_views`` at 32 px and 224 px. Timings are printed, never asserted.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from PIL import Image  # noqa: E402

from rekd_jax.data import augment, pipeline, prepare  # noqa: E402


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
  pipe = pipeline.create(cfg, split="train", training=True, global_batch_size=batch, seed=0,
                         num_local_devices=1, process_index=0, process_count=1)
  it = iter(pipe)
  next(it)  # start-up: threads, first batch
  start = time.perf_counter()
  for _ in range(num_batches):
    next(it)
  elapsed = time.perf_counter() - start
  pipe.close()
  return batch * num_batches / elapsed


def _device_rate(batch, size, in_size, dtype, iters, cfg):
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, in_size, in_size, 3),
                                                         dtype=np.uint8))
  fn = jax.jit(lambda key, x: augment.two_views(key, x, cfg, size, dtype))
  jax.block_until_ready(fn(jax.random.PRNGKey(0), images))
  start = time.perf_counter()
  for i in range(iters):
    out = fn(jax.random.PRNGKey(i + 1), images)
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - start) / iters
  return batch / seconds, seconds * 1e3


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--small", action="store_true", help="small sizes for a CPU run")
  parser.add_argument("--num_workers", type=int, default=os.cpu_count())
  parser.add_argument("--host_size", type=int, default=224)
  args = parser.parse_args(argv)
  small = args.small
  tfds.disable_progress_bar()
  jpeg_images = 64 if small else 2048
  host_batch = 16 if small else 256
  host_batches = 3 if small else 6
  batch32 = 64 if small else 512
  batch224 = 8 if small else 256
  iters = 3 if small else 20
  cfg = pipeline.default_data_config()
  device = jax.devices()[0]
  print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, jax {jax.__version__}")
  print(f"device: {device.platform} {device.device_kind} x{jax.local_device_count()}")
  print(f"decoding threads: {args.num_workers}")
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, "src")
    _random_jpeg_folder(src, jpeg_images, np.random.default_rng(0))
    prepare.prepare(src, "bench_jpeg", os.path.join(tmp, "tfds"), num_workers=args.num_workers,
                    log=lambda message: None)
    jpeg_cfg = pipeline.default_data_config()
    jpeg_cfg.update(dict(dataset="bench_jpeg", data_dir=os.path.join(tmp, "tfds"),
                         host_size=args.host_size, image_size=min(224, args.host_size),
                         eval_resize=min(224, args.host_size), resident="off",
                         num_workers=args.num_workers, prefetch=2))
    rate = _host_rate(jpeg_cfg, host_batch, host_batches)
    rows.append((f"host: JPEG ~300-500 px -> decode + resize/crop {args.host_size}",
                 host_batch, rate, host_batch / rate * 1e3))
    shapes_cfg = pipeline.default_data_config()
    shapes_cfg.update(dict(dataset="rekd_shapes/tiny" if small else "rekd_shapes",
                           data_dir=os.path.join(tmp, "tfds"), resident="off",
                           num_workers=args.num_workers))
    shapes_batch = 64 if small else 512
    rate = _host_rate(shapes_cfg, shapes_batch, host_batches)
    rows.append(("host: 32 px PNG decode (rekd_shapes, resident off)", shapes_batch, rate,
                 shapes_batch / rate * 1e3))
  for size, in_size, batch in ((32, 32, batch32), (224, 256, batch224)):
    for dtype in (jnp.float32, jnp.bfloat16):
      rate, ms = _device_rate(batch, size, in_size, dtype, iters, cfg.augment)
      rows.append((f"device: two_views {in_size}->{size} px {jnp.dtype(dtype).name}",
                   batch, rate, ms))
  print(f"\n{'path':<58} {'batch':>6} {'images/s':>10} {'ms/batch':>9}")
  for name, batch, rate, ms in rows:
    print(f"{name:<58} {batch:>6} {rate:>10.0f} {ms:>9.2f}")
  print("(device rows count source images; each yields two views)")


if __name__ == "__main__":
  main()
