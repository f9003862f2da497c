"""Random-access reading of TFDS ArrayRecord datasets, without TensorFlow.

``open_split(name, split, data_dir)`` finds the prepared dataset on disk
(``data_dir/name[/config]/version``), reads it through ``tfds`` (``builder_from_directory`` +
``as_data_source``: ArrayRecord random access, protobuf parsing in numpy, no TensorFlow) and
keeps images as encoded bytes, so that decoding happens in the loader's worker threads where
corrupt images can be counted and skipped.

The embedded dataset ``rekd_shapes`` (any predefined config) is generated on first use; any
other missing dataset raises ``DatasetNotFoundError`` saying how to prepare it.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from rekd_jax.data import embedded

EMBEDDED_NAME = "rekd_shapes"
_INDEX_CHUNK = 1024


class DatasetNotFoundError(FileNotFoundError):
  """A dataset (or split) is not prepared in the data directory."""


def resolve_data_dir(data_dir: str) -> str:
  """'' means the TFDS default ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  return os.path.expanduser(data_dir) if data_dir else tfds.core.constants.get_default_data_dir()


def _parse_name(name: str):
  match = re.fullmatch(r"([a-z][a-z0-9_]*)(?:/([A-Za-z0-9_.\-]+))?(?::([0-9.]+))?", name)
  if not match:
    raise ValueError(f"dataset name {name!r} is not of the form 'name[/config][:version]' "
                     "with a snake_case name (e.g. 'rekd_shapes', 'imagenet2012', "
                     "'rekd_shapes/tiny')")
  return match.groups()


def _version_dirs(path: str) -> list[str]:
  if not os.path.isdir(path):
    return []
  found = [d for d in os.listdir(path)
           if re.fullmatch(r"\d+\.\d+\.\d+", d)
           and os.path.exists(os.path.join(path, d, "dataset_info.json"))]
  return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def find_dataset_dir(name: str, data_dir: str) -> str | None:
  """The prepared dataset directory for 'name[/config][:version]', or None."""
  base, config, version = _parse_name(name)
  root = os.path.join(resolve_data_dir(data_dir), base)
  candidates = [os.path.join(root, config)] if config else [root]
  if not config and os.path.isdir(root) and not _version_dirs(root):
    configs = sorted(d for d in os.listdir(root) if _version_dirs(os.path.join(root, d)))
    if base == EMBEDDED_NAME:
      configs = [c for c in configs if c == embedded.RekdShapes.DEFAULT_CONFIG_NAME]
    if len(configs) > 1:
      raise ValueError(f"dataset {base!r} in {root} has several configs {configs}; name one, "
                       f"e.g. data.dataset='{base}/{configs[0]}'")
    candidates = [os.path.join(root, c) for c in configs]
  for path in candidates:
    versions = _version_dirs(path)
    if version:
      versions = [v for v in versions if v == version]
    if versions:
      return os.path.join(path, versions[-1])
  return None


def missing_dataset_message(name: str, data_dir: str) -> str:
  where = resolve_data_dir(data_dir)
  base = _parse_name(name)[0]
  lines = [f"dataset {name!r} is not prepared in data_dir {where!r}."]
  if base == "imagenet2012":
    lines.append(
        "Prepare it with TFDS from the manual downloads (needs TensorFlow on the preparing "
        "machine only): put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in MANUAL_DIR "
        f"and run `tfds build imagenet2012 --data_dir={where} --manual_dir=MANUAL_DIR "
        "--file_format=array_record`; or, from extracted train/<wnid>/*.JPEG and "
        "val/<wnid>/*.JPEG folders, `python -m rekd_jax.data.prepare --src DIR "
        f"--name imagenet2012 --data_dir {where}`.")
  else:
    lines.append(
        "Prepare a folder of class subfolders (DIR/train/<class>/*.jpg, DIR/test/<class>/*.jpg "
        f"or DIR/<class>/*.jpg) with `python -m rekd_jax.data.prepare --src DIR --name {base} "
        f"--data_dir {where}`, build it with TFDS (`tfds build {base} --data_dir={where} "
        "--file_format=array_record`), or set data.data_dir to where it is.")
  lines.append(f"The embedded dataset '{EMBEDDED_NAME}' needs no preparation.")
  return " ".join(lines)


def _ensure_prepared(name: str, data_dir: str) -> str:
  path = find_dataset_dir(name, data_dir)
  if path is not None:
    return path
  base, config, version = _parse_name(name)
  predefined = [c.name for c in embedded.RekdShapes.BUILDER_CONFIGS]
  if base == EMBEDDED_NAME and (config is None or config in predefined) and version in (
      None, str(embedded.RekdShapes.VERSION)):
    logging.info("rekd_shapes is not in %s yet: generating it (first use).",
                 resolve_data_dir(data_dir))
    return embedded.build_rekd_shapes(resolve_data_dir(data_dir), config or "default")
  raise DatasetNotFoundError(missing_dataset_message(name, data_dir))


@dataclasses.dataclass
class SplitSource:
  """One split of a prepared dataset: random access to undecoded records.

  ``read(ids)`` returns dicts with 'image' (encoded bytes), 'label' (int) and, when the
  dataset has it, 'file_name' (bytes).
  """
  name: str
  split: str
  dataset_dir: str
  records: Sequence
  class_names: list
  stored_shape: tuple | None  # (H, W, 3) when every image has that shape, else None.
  has_file_name: bool

  def __len__(self) -> int:
    return len(self.records)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def read(self, ids: Sequence[int]) -> list[dict]:
    return list(self.records.__getitems__([int(i) for i in ids]))

  def metadata(self) -> dict:
    """{'labels': int32 [N], 'file_names': list[str] | None} for the whole split.

    Needs one pass over the records, so it is cached in the dataset directory
    (``rekd_index-<split>.json``) when that is writable.
    """
    cache = os.path.join(self.dataset_dir,
                         "rekd_index-" + re.sub(r"[^A-Za-z0-9_.%-]", "_", self.split) + ".json")
    if os.path.exists(cache):
      with open(cache) as f:
        stored = json.load(f)
      if len(stored["labels"]) == len(self):
        return {"labels": np.asarray(stored["labels"], np.int32),
                "file_names": stored["file_names"]}
    labels, names = [], []
    for start in range(0, len(self), _INDEX_CHUNK):
      for record in self.read(range(start, min(len(self), start + _INDEX_CHUNK))):
        labels.append(int(record["label"]))
        if self.has_file_name:
          names.append(_to_str(record["file_name"]))
    result = {"labels": np.asarray(labels, np.int32),
              "file_names": names if self.has_file_name else None}
    try:
      with open(cache + ".tmp", "w") as f:
        json.dump({"labels": labels, "file_names": result["file_names"]}, f)
      os.replace(cache + ".tmp", cache)
    except OSError as err:
      logging.info("Not caching the split index (%s); it is rebuilt next time.", err)
    return result


def _to_str(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def open_split(name: str, split: str, data_dir: str = "") -> SplitSource:
  """Open one split for random access (building 'rekd_shapes' on first use)."""
  path = _ensure_prepared(name, data_dir)
  builder = tfds.builder_from_directory(path)
  info = builder.info
  file_format = getattr(info.file_format, "value", info.file_format)
  if str(file_format) != "array_record":
    raise ValueError(
        f"dataset {name!r} in {path} is stored as {file_format}, but reading needs ArrayRecord "
        "(random access without TensorFlow). Re-prepare it with --file_format=array_record "
        "(tfds build) or convert it with `tfds convert_format --dataset_dir "
        f"{path} --out_file_format array_record` (TensorFlow needed for the conversion only).")
  base_split = split.split("[")[0]
  if base_split not in info.splits:
    raise DatasetNotFoundError(f"split {split!r} not found in dataset {name!r} ({path}); "
                               f"available splits: {sorted(info.splits.keys())}. Set "
                               "data.train_split / data.eval_split accordingly.")
  features = info.features
  for key in ("image", "label"):
    if key not in features:
      raise ValueError(f"dataset {name!r} has features {sorted(features.keys())}; the loader "
                       "needs 'image' and 'label' (prepare it with rekd_jax.data.prepare)")
  shape = tuple(features["image"].shape)
  stored_shape = shape if all(isinstance(d, int) for d in shape) else None
  if stored_shape is not None and stored_shape[-1] == 1:
    stored_shape = stored_shape[:-1] + (3,)  # Grey images are converted to RGB on decode.
  records = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
  return SplitSource(name=name, split=split, dataset_dir=path, records=records,
                     class_names=list(features["label"].names),
                     stored_shape=stored_shape, has_file_name="file_name" in features)


def decode_image(data: bytes, host_size: int = 0) -> np.ndarray:
  """Encoded image bytes -> uint8 [H, W, 3]; with host_size > 0 the shorter side is resized
  to host_size (antialiased bilinear; JPEG DCT draft scaling first) and centre-cropped square.

  Raises whatever PIL raises for corrupt or non-image data.
  """
  with Image.open(io.BytesIO(data)) as img:
    if host_size > 0:
      img.draft("RGB", (host_size, host_size))
    img = img.convert("RGB")
    if host_size > 0:
      width, height = img.size
      scale = host_size / min(width, height)
      new_w = max(host_size, int(round(width * scale)))
      new_h = max(host_size, int(round(height * scale)))
      img = img.resize((new_w, new_h), Image.BILINEAR)
      left, top = (new_w - host_size) // 2, (new_h - host_size) // 2
      img = img.crop((left, top, left + host_size, top + host_size))
    return np.asarray(img, np.uint8)
