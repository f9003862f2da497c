"""Folder of class subfolders -> TFDS ArrayRecord dataset, without TensorFlow.

    python -m rekd_jax.data.prepare --src DIR --name NAME --data_dir D

Layouts: ``DIR/train/<class>/*`` (+ ``DIR/test/<class>/*``, ``DIR/val/<class>/*``, ...; any
top-level folder holding class folders is a split, ``val`` is named 'validation' as in TFDS)
when ``DIR/train`` holds class folders; otherwise ``DIR/<class>/*`` is one 'train' split.
Class names are the sorted union of class folders over the splits.

Features: 'image' (the original bytes for RGB JPEG/PNG files; other formats and modes are
converted to RGB and re-encoded, JPEG sources as JPEG quality 95, others as PNG), 'label'
(ClassLabel with the class names), 'file_name' (path relative to the split folder, e.g.
'n01440764/n01440764_10026.JPEG', which the ImageNet 1%/10% subset lists match by base name).
The image feature has a fixed shape when every image has the same size (e.g. CIFAR), which
lets the loader keep the split resident on the accelerators without a host resize.

How it writes without TensorFlow: a ``tfds.core.GeneratorBasedBuilder`` subclass made for the
name, ``file_format='array_record'``, fed already-encoded bytes (TFDS only needs TensorFlow
to *encode* numpy images; bytes pass through) so the normal TFDS writer produces a dataset
that ``tfds.data_source(NAME, data_dir=D)`` reads.

Empty, non-image and corrupt (undecodable or truncated) files are counted, skipped and listed
in a report printed at the end and written to ``<dataset dir>/prepare_report.json``.
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import os
import re
import shutil
import sys
import time
from concurrent import futures

import tensorflow_datasets as tfds
from PIL import Image

from rekd_jax import progress
from rekd_jax.data.embedded import QuietPrepare
from rekd_jax.data.sources import resolve_data_dir

SPLIT_NAMES = {"val": "validation"}
_CHUNK = 256


class PrepareError(ValueError):
  """The source folder cannot be turned into a dataset (message says why and the fix)."""


def scan(src: str):
  """Find splits, classes and files: ({split: [(path, relative, class)]}, classes, skipped)."""
  if not os.path.isdir(src):
    raise PrepareError(f"--src {src!r} is not a directory; point it at a folder of class "
                       "subfolders (DIR/<class>/*.jpg) or split folders (DIR/train/<class>/*)")

  def subdirs(path):
    return sorted(d for d in os.listdir(path)
                  if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))

  skipped = []
  train = os.path.join(src, "train")
  if os.path.isdir(train) and subdirs(train):
    split_dirs = {}
    for entry in sorted(os.listdir(src)):
      path = os.path.join(src, entry)
      if os.path.isdir(path) and subdirs(path):
        split_dirs[SPLIT_NAMES.get(entry, entry)] = path
      else:
        skipped.append({"path": entry, "reason": "outside_layout"})
  else:
    split_dirs = {"train": src}
  classes = sorted({c for path in split_dirs.values() for c in subdirs(path)})
  if not classes:
    raise PrepareError(f"no class subfolders in {src!r}; expected DIR/<class>/*.jpg or "
                       "DIR/train/<class>/*.jpg")
  splits = {}
  for split, split_dir in split_dirs.items():
    files = []
    for entry in sorted(os.listdir(split_dir)):
      if not os.path.isdir(os.path.join(split_dir, entry)):
        skipped.append({"path": os.path.relpath(os.path.join(split_dir, entry), src),
                        "reason": "outside_layout"})
    for cls in subdirs(split_dir):
      for root, dirs, names in os.walk(os.path.join(split_dir, cls)):
        dirs.sort()
        for name in sorted(names):
          path = os.path.join(root, name)
          files.append((path, os.path.relpath(path, split_dir), cls))
    splits[split] = files
  return splits, classes, skipped


def _header(path):
  """(status, size): 'ok' with (w, h), or 'empty' / 'not_an_image' from the header alone."""
  try:
    if os.path.getsize(path) == 0:
      return "empty", None
    with Image.open(path) as img:
      return "ok", img.size
  except Image.UnidentifiedImageError:
    return "not_an_image", None
  except Exception:  # pylint: disable=broad-except
    return "corrupt", None


def _load(path):
  """('ok', bytes, reencoded) or (reason, None, False) after a full decode."""
  with open(path, "rb") as f:
    data = f.read()
  if not data:
    return "empty", None, False
  try:
    with Image.open(io.BytesIO(data)) as img:
      fmt = img.format
      img.load()
      if fmt in ("JPEG", "PNG") and img.mode == "RGB":
        return "ok", data, False
      rgb = img.convert("RGB")
  except Image.UnidentifiedImageError:
    return "not_an_image", None, False
  except Exception:  # pylint: disable=broad-except  (truncated / broken data)
    return "corrupt", None, False
  out = io.BytesIO()
  if fmt == "JPEG":
    rgb.save(out, format="JPEG", quality=95)
  else:
    rgb.save(out, format="PNG")
  return "ok", out.getvalue(), True


def _registered_version(name: str):
  try:
    return str(tfds.builder_cls(name).VERSION)
  except Exception:  # pylint: disable=broad-except  (not a registered TFDS dataset)
    return None


def prepare(src: str, name: str, data_dir: str, *, num_workers: int = 8,
            overwrite: bool = False, log=print) -> dict:
  """Write the dataset and its report; returns the report dict."""
  if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
    raise PrepareError(f"--name {name!r} must be snake_case (lowercase letters, digits, "
                       "underscores, starting with a letter), e.g. 'my_images'")
  started = time.time()
  splits, classes, skipped = scan(src)
  version = _registered_version(name) or "1.0.0"
  data_dir = resolve_data_dir(data_dir)
  dataset_dir = os.path.join(data_dir, name, version)
  if os.path.exists(dataset_dir):
    if not overwrite:
      raise PrepareError(f"{dataset_dir} already exists; pass --overwrite to rebuild it")
    shutil.rmtree(dataset_dir)

  # Pass 1 (headers only): drop empty / non-image files early, find whether sizes are fixed.
  candidates = {}
  sizes = set()
  stats = {split: collections.Counter() for split in splits}
  with futures.ThreadPoolExecutor(num_workers) as pool:
    for split, files in splits.items():
      kept = []
      for (path, rel, cls), (status, size) in zip(
          files, pool.map(_header, [f[0] for f in files])):
        if status == "ok":
          kept.append((path, rel, cls))
          sizes.add(size)
        else:
          stats[split]["skipped"] += 1
          skipped.append({"path": os.path.relpath(path, src), "reason": status})
      if not kept:
        raise PrepareError(f"split {split!r} of {src!r} has no readable images; check the "
                           "folder or remove it")
      candidates[split] = kept
  shape = (None, None, 3)
  if len(sizes) == 1:
    width, height = sizes.pop()
    shape = (height, width, 3)
  log(f"Found {len(classes)} classes, splits "
      f"{ {s: len(f) for s, f in candidates.items()} }, image shape {shape}")

  label_of = {c: i for i, c in enumerate(classes)}

  def generate(split):
    files = candidates[split]
    with futures.ThreadPoolExecutor(num_workers) as pool:
      for start in range(0, len(files), _CHUNK * num_workers):
        chunk = files[start:start + _CHUNK * num_workers]
        for (path, rel, cls), (status, data, reencoded) in zip(
            chunk, pool.map(_load, [f[0] for f in chunk])):
          if status != "ok":
            stats[split]["skipped"] += 1
            skipped.append({"path": os.path.relpath(path, src), "reason": status})
            continue
          stats[split]["examples"] += 1
          stats[split]["reencoded"] += int(reencoded)
          yield rel, {"image": data, "label": label_of[cls], "file_name": rel}

  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=shape),
      "label": tfds.features.ClassLabel(names=classes),
      "file_name": tfds.features.Text(),
  })

  class FolderDataset(QuietPrepare, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version(version)
    RELEASE_NOTES = {version: f"Prepared from {os.path.abspath(src)} by rekd_jax.data.prepare."}

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=features,
                                   supervised_keys=("image", "label"),
                                   description=f"Images from {os.path.abspath(src)}.")

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: generate(split) for split in candidates}

    def _generate_examples(self, split):  # Unused: _split_generators yields directly.
      return generate(split)

  FolderDataset.name = name
  builder = FolderDataset(data_dir=data_dir, file_format="array_record")
  with progress.heartbeat(f"writing {name}"):
    builder.download_and_prepare()

  by_reason = collections.Counter(s["reason"] for s in skipped)
  report = {
      "name": name, "version": version, "src": os.path.abspath(src),
      "dataset_dir": str(builder.data_dir), "classes": classes, "image_shape": list(shape),
      "splits": {s: {"examples": c["examples"], "skipped": c["skipped"],
                     "reencoded": c["reencoded"]} for s, c in stats.items()},
      "skipped_by_reason": dict(by_reason), "skipped": skipped,
      "seconds": round(time.time() - started, 1),
  }
  with open(os.path.join(str(builder.data_dir), "prepare_report.json"), "w") as f:
    json.dump(report, f, indent=1)
  log(f"Wrote {name} {version} to {builder.data_dir} in {report['seconds']} s")
  for split, counts in report["splits"].items():
    log(f"  {split}: {counts['examples']} examples ({counts['reencoded']} re-encoded)")
  log(f"  skipped {len(skipped)} files: {dict(by_reason)}")
  for entry in skipped[:20]:
    log(f"    {entry['reason']}: {entry['path']}")
  if len(skipped) > 20:
    log(f"    ... (all listed in {builder.data_dir}/prepare_report.json)")
  data_dir_flag = f" --config.data.data_dir={data_dir}" if data_dir else ""
  log(f"Next: python main.py --config=configs/knn_eval.py --config.data.dataset={name}"
      f"{data_dir_flag} --config.checkpoint=ENCODER_DIR --workdir=WORKDIR (or give "
      f"--config.data.dataset={name}{data_dir_flag} to a pre-training config)")
  return report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m rekd_jax.data.prepare", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--src", required=True, help="folder of class (or split) subfolders")
  parser.add_argument("--name", required=True, help="dataset name (snake_case)")
  parser.add_argument("--data_dir", default="",
                      help="TFDS data_dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  parser.add_argument("--num_workers", type=int, default=8, help="reading/decoding threads")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
  args = parser.parse_args(argv)
  try:
    prepare(args.src, args.name, args.data_dir, num_workers=args.num_workers,
            overwrite=args.overwrite)
  except PrepareError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
