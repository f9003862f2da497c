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

Every file or folder that is not used is counted, skipped and listed, with its reason, in a
report printed at the end and written to ``<dataset dir>/prepare_report.json``: 'empty',
'not_an_image', 'corrupt' (undecodable or truncated; 'detail' holds the decoder's message),
'too_large' (PIL's decompression-bomb limit), 'permission' (a file or folder that cannot be
read), 'symlink_loop', 'broken_link', 'unreadable' (another OS error), 'outside_layout',
'bad_name' (a file or class folder name that is not valid UTF-8 or holds a control character
such as a newline, which TFDS cannot store; listed with its bytes escaped), 'link_outside_class'.
Symlinked folders are followed (each folder once) while they stay inside their class folder; a
folder link that leaves it (into another class, or up to a folder holding its class:
'symlink_loop') is skipped, since its images would be stored under the wrong label. Links to
files, and class folders that are links, are followed wherever they point. Classes with no
image in a split are reported as warnings. 16-bit images (PIL modes I;16 and I) are scaled to 8
bits (x 255/65535), not clipped.

The dataset is built beside its target and renamed into place when complete
(``rekd_jax.core.fileio``): a bad source, a full disk or a kill leaves an existing version intact
(``--overwrite`` is needed to replace it), and leftovers of killed builds are removed by the
next run.
"""

from __future__ import annotations

# First: run as a command, Ctrl-C ends it with one line from here on, the imports included.
from rekd_jax.core import interrupts  # noqa: F401

# isort: split
import argparse
import collections
import io
import os
import re
import sys
import time
from concurrent import futures

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from rekd_jax.core import errors, fileio, invocation, progress
from rekd_jax.core import logging as logging_lib
from rekd_jax.data import embedded
from rekd_jax.data.embedded import QuietPrepare
from rekd_jax.data.source_folders import PrepareError, os_reason, printable, scan
from rekd_jax.data.sources import resolve_data_dir

_CHUNK = 256


def _decoder_failure(error: Exception) -> tuple[str, str]:
    """(reason, detail) for an exception raised while reading or decoding one image file."""
    if isinstance(error, MemoryError):
        raise error  # the machine is out of memory: never mistaken for a bad file
    if isinstance(error, Image.DecompressionBombError):
        return "too_large", str(error)
    if isinstance(error, Image.UnidentifiedImageError):
        return "not_an_image", ""
    if isinstance(error, OSError) and error.errno is not None:  # the file system, not the data
        return os_reason(error), error.strerror or str(error)
    return "corrupt", f"{type(error).__name__}: {error}"  # PIL: truncated / broken data


def _header(path):
    """(status, size, detail): 'ok' with (w, h), or a reason from the header alone."""
    try:
        if os.path.getsize(path) == 0:
            return "empty", None, ""
        with Image.open(path) as img:
            return "ok", img.size, ""
    except Exception as e:  # pylint: disable=broad-except  (classified, MemoryError re-raised)
        reason, detail = _decoder_failure(e)
        return reason, None, detail


def _to_8bit(img):
    """16-bit greyscale (I;16*, and I as PNG stores 16-bit) scaled to 0..255, not clipped."""
    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img, np.float64) * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), "L")
    return img


def _load(path):
    """('ok', bytes, reencoded, '') or (reason, None, False, detail) after a full decode."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if not data:
            return "empty", None, False, ""
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            img.load()
            if fmt in ("JPEG", "PNG") and img.mode == "RGB":
                return "ok", data, False, ""
            rgb = _to_8bit(img).convert("RGB")
    except Exception as e:  # pylint: disable=broad-except  (classified, MemoryError re-raised)
        reason, detail = _decoder_failure(e)
        return reason, None, False, detail
    out = io.BytesIO()
    if fmt == "JPEG":
        rgb.save(out, format="JPEG", quality=95)
    else:
        rgb.save(out, format="PNG")
    return "ok", out.getvalue(), True, ""


def _registered_version(name: str):
    try:
        return str(tfds.builder_cls(name).VERSION)
    except tfds.core.registered.DatasetNotFoundError:  # not a registered TFDS dataset
        return None


def prepare(
    src: str, name: str, data_dir: str, *, num_workers: int = 8, overwrite: bool = False, log=print
) -> dict:
    """Write the dataset and its report; returns the report dict."""
    _check_arguments(name, num_workers)
    started = time.time()
    splits, classes, skipped = scan(src)
    version = _registered_version(name) or "1.0.0"
    data_dir = resolve_data_dir(data_dir)
    dataset_dir = os.path.join(data_dir, name, version)
    if os.path.exists(dataset_dir) and not overwrite:
        raise PrepareError(
            f"{dataset_dir} already exists; pass --overwrite to rebuild it (the "
            "old version stays in place until the new one is complete)"
        )
    stats = {split: collections.Counter() for split in splits}
    candidates, shape = _read_headers(src, splits, num_workers, stats, skipped)
    log(
        f"Found {len(classes)} classes, splits "
        f"{ {s: len(f) for s, f in candidates.items()} }, image shape {shape}"
    )
    label_of = {c: i for i, c in enumerate(classes)}
    per_class = {split: collections.Counter() for split in splits}

    def generate(split):
        return _examples(
            src, candidates[split], label_of, num_workers, stats[split], per_class[split], skipped
        )

    builder = _folder_builder(name, version, src, _features(shape, classes), generate, candidates)
    report = {}

    def write_report(folder):
        report.update(
            {
                "name": name,
                "version": version,
                "src": os.path.abspath(src),
                "dataset_dir": dataset_dir,
                "classes": classes,
                "image_shape": list(shape),
                **_outcome(classes, stats, per_class, skipped),
                "seconds": round(time.time() - started, 1),
            }
        )
        fileio.write_json(os.path.join(folder, "prepare_report.json"), report, indent=1)

    try:
        with progress.heartbeat(f"writing {name}"):
            embedded.build_atomically(
                lambda root: builder(data_dir=root, file_format="array_record"),
                dataset_dir,
                overwrite=overwrite,
                finish=write_report,
            )
    except AssertionError as error:  # TFDS: a split whose generator yielded nothing
        if "No examples were yielded" not in str(error):
            raise
        empty = sorted(split for split in candidates if not stats[split]["examples"])
        reasons = collections.Counter(entry["reason"] for entry in skipped)
        raise PrepareError(
            f"no image of split {empty[0] if empty else '?'} of {src!r} decodes "
            f"(skipped: {dict(reasons)}, e.g. {skipped[-1]['path'] if skipped else '?'}"
            "); check those files or remove that split"
        ) from None
    _log_summary(report, log)
    data_dir_flag = f" --config.data.data_dir={data_dir}" if data_dir else ""
    log(
        f"Next: {invocation.entry_command()} "
        f"--config={invocation.config_argument('knn_eval')}"
        f" --config.data.dataset={name}{data_dir_flag} --config.checkpoint=ENCODER_DIR "
        f"--workdir=WORKDIR (or give --config.data.dataset={name}{data_dir_flag} to a "
        "pre-training config)"
    )
    return report


def _check_arguments(name: str, num_workers: int) -> None:
    """PrepareError for a dataset name that is not snake_case or fewer than one worker."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise PrepareError(
            f"--name {name!r} must be snake_case (lowercase letters, digits, "
            "underscores, starting with a letter), e.g. 'my_images'"
        )
    if num_workers < 1:
        raise PrepareError(
            f"--num_workers {num_workers}: give at least 1 (the reading and "
            "decoding threads; e.g. the number of CPU cores)"
        )


def _skip_entry(src: str, path: str, reason: str, detail: str) -> dict:
    return {"path": printable(os.path.relpath(path, src)), "reason": reason, "detail": detail}


def _read_headers(src, splits, num_workers, stats, skipped):
    """Pass 1 (headers only): ({split: files kept}, image shape). Empty and non-image files are
    dropped early (counted in `stats`, listed in `skipped`); the shape is fixed when every image
    has the same size, else (None, None, 3)."""
    candidates = {}
    sizes = set()
    with futures.ThreadPoolExecutor(num_workers) as pool:
        for split, files in splits.items():
            kept = []
            for (path, rel, cls), (status, size, detail) in zip(
                files, pool.map(_header, [f[0] for f in files])
            ):
                if status == "ok":
                    kept.append((path, rel, cls))
                    sizes.add(size)
                else:
                    stats[split]["skipped"] += 1
                    skipped.append(_skip_entry(src, path, status, detail))
            if not kept:
                raise PrepareError(
                    f"split {split!r} of {src!r} has no readable images; check the "
                    "folder or remove it"
                )
            candidates[split] = kept
    shape = (None, None, 3)
    if len(sizes) == 1:
        width, height = sizes.pop()
        shape = (height, width, 3)
    return candidates, shape


def _examples(src, files, label_of, num_workers, counts, class_counts, skipped):
    """Pass 2: (key, example) of every file of a split that decodes, read and decoded in
    parallel chunks; `counts`, `class_counts` and `skipped` record what happened to each."""
    with futures.ThreadPoolExecutor(num_workers) as pool:
        for start in range(0, len(files), _CHUNK * num_workers):
            chunk = files[start : start + _CHUNK * num_workers]
            for (path, rel, cls), (status, data, reencoded, detail) in zip(
                chunk, pool.map(_load, [f[0] for f in chunk])
            ):
                if status != "ok":
                    counts["skipped"] += 1
                    skipped.append(_skip_entry(src, path, status, detail))
                    continue
                counts["examples"] += 1
                class_counts[cls] += 1
                counts["reencoded"] += int(reencoded)
                yield rel, {"image": data, "label": label_of[cls], "file_name": rel}


def _features(shape, classes) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=shape),
            "label": tfds.features.ClassLabel(names=classes),
            "file_name": tfds.features.Text(),
        }
    )


def _folder_builder(name, version, src, features, generate, splits):
    """The TFDS builder class of the dataset: `generate(split)` yields each split's examples."""

    class FolderDataset(QuietPrepare, tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(version)
        RELEASE_NOTES = {version: f"Prepared from {os.path.abspath(src)} by rekd_jax.data.prepare."}

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=features,
                supervised_keys=("image", "label"),
                description=f"Images from {os.path.abspath(src)}.",
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: generate(split) for split in splits}

        def _generate_examples(self, split):  # Unused: _split_generators yields directly.
            return generate(split)

    FolderDataset.name = name
    return FolderDataset


def _outcome(classes, stats, per_class, skipped) -> dict:
    """The report's counts: examples, skipped and re-encoded files per split, the skipped
    files by reason and one by one, and the classes left without images per split."""
    by_reason = collections.Counter(s["reason"] for s in skipped)
    return {
        "splits": {
            s: {
                "examples": c["examples"],
                "skipped": c["skipped"],
                "reencoded": c["reencoded"],
            }
            for s, c in stats.items()
        },
        "skipped_by_reason": dict(by_reason),
        "skipped": skipped,
        "empty_classes": {
            s: [c for c in classes if not per_class[s][c]]
            for s in per_class
            if any(not per_class[s][c] for c in classes)
        },
    }


def _log_summary(report: dict, log) -> None:
    """What was written, what was skipped (the first 20) and the classes without images."""
    skipped, dataset_dir = report["skipped"], report["dataset_dir"]
    log(f"Wrote {report['name']} {report['version']} to {dataset_dir} in {report['seconds']} s")
    for split, counts in report["splits"].items():
        log(f"  {split}: {counts['examples']} examples ({counts['reencoded']} re-encoded)")
    log(f"  skipped {len(skipped)} files or folders: {report['skipped_by_reason']}")
    for entry in skipped[:20]:
        detail = f" ({entry['detail']})" if entry.get("detail") else ""
        log(f"    {entry['reason']}: {entry['path']}{detail}")
    if len(skipped) > 20:
        log(f"    ... (all listed in {dataset_dir}/prepare_report.json)")
    for split, empty in report["empty_classes"].items():
        log(
            f"  warning: {len(empty)} classes have no images in split {split!r}: {empty[:20]}; "
            "check those folders (see the skipped list)"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rekd_jax.data.prepare",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--src", required=True, help="folder of class (or split) subfolders")
    parser.add_argument("--name", required=True, help="dataset name (snake_case)")
    parser.add_argument(
        "--data_dir",
        default="",
        help="TFDS data_dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)",
    )
    parser.add_argument("--num_workers", type=int, default=8, help="reading/decoding threads")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing version (atomically, once the new one is built)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show tracebacks for expected errors (otherwise one FATAL line)",
    )
    args = parser.parse_args(argv)
    logging_lib.setup_console()

    def run():
        fileio.check_reachable(resolve_data_dir(args.data_dir))  # before --src is scanned
        prepare(
            args.src,
            args.name,
            args.data_dir,
            num_workers=args.num_workers,
            overwrite=args.overwrite,
        )

    return errors.run_cli(run, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
