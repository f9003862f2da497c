"""Folder -> TFDS ArrayRecord preparation, and the embedded rekd_shapes dataset."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_test_helpers import encode, write_folder

from rekd_jax.data import embedded, prepare, source_folders, sources


def _folder(root):
    rng = np.random.default_rng(0)
    files = {}
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            for i in range(3):
                fmt = "JPEG" if i % 2 else "PNG"
                files[f"{split}/{cls}/{i}.{fmt.lower()}"] = encode(
                    rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), fmt
                )
    good_jpeg = files["train/dog/1.jpeg"]
    files.update(
        {
            "train/cat/empty.jpg": b"",
            "train/cat/notes.txt": b"not an image",
            "train/dog/truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
            "train/dog/gray.png": encode(np.full((12, 12), 7, np.uint8), "PNG"),
            "README.md": b"loose file",
        }
    )
    write_folder(root, files)
    return files


def test_prepare_folder_with_bad_files(tmp_path):
    files = _folder(tmp_path / "src")
    data_dir = str(tmp_path / "tfds")
    logged = []
    report = prepare.prepare(
        str(tmp_path / "src"), "pets", data_dir, num_workers=2, log=logged.append
    )
    assert report["splits"]["train"] == {"examples": 7, "skipped": 3, "reencoded": 1}
    assert report["splits"]["test"] == {"examples": 6, "skipped": 0, "reencoded": 0}
    assert report["skipped_by_reason"] == {
        "outside_layout": 1,
        "empty": 1,
        "not_an_image": 1,
        "corrupt": 1,
    }
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert reasons["train/dog/truncated.jpg"] == "corrupt"
    assert reasons["train/cat/empty.jpg"] == "empty"
    assert any("skipped 4 files" in line for line in logged)
    on_disk = json.load(open(os.path.join(report["dataset_dir"], "prepare_report.json")))
    assert on_disk["splits"] == report["splits"]
    # Readable by plain tfds.data_source; original bytes kept, labels and file names right.
    ds = tfds.data_source("pets", data_dir=data_dir, decoders={"image": tfds.decode.SkipDecoding()})
    assert len(ds["train"]) == 7 and len(ds["test"]) == 6
    builder = tfds.builder_from_directory(report["dataset_dir"])
    assert builder.info.features["label"].names == ["cat", "dog"]
    assert builder.info.features["image"].shape == (12, 12, 3)
    for record in ds["test"]:
        name = record["file_name"].decode()
        assert record["image"] == files[f"test/{name}"]
        assert record["label"] == ["cat", "dog"].index(name.split("/")[0])
    gray = [r for r in ds["train"] if r["file_name"] == b"dog/gray.png"][0]
    assert sources.decode_image(gray["image"]).shape == (12, 12, 3)
    with pytest.raises(source_folders.PrepareError, match="--overwrite"):
        prepare.prepare(str(tmp_path / "src"), "pets", data_dir, log=lambda m: None)


def test_single_split_layout_and_cli(tmp_path):
    write_folder(
        tmp_path / "src",
        {
            f"{c}/{i}.png": encode(np.full((5, 7, 3), i, np.uint8), "PNG")
            for c in ("x", "y", "z")
            for i in range(2)
        },
    )
    code = prepare.main(
        [
            "--src",
            str(tmp_path / "src"),
            "--name",
            "flat",
            "--data_dir",
            str(tmp_path / "tfds"),
            "--num_workers",
            "1",
        ]
    )
    assert code == 0
    source = sources.open_split("flat", "train", str(tmp_path / "tfds"))
    assert len(source) == 6 and source.class_names == ["x", "y", "z"]
    assert source.stored_shape == (5, 7, 3)


@pytest.mark.parametrize(
    "layout,match",
    [
        ({}, "not a directory"),
        ({"a.jpg": b"x"}, "no class subfolders"),
        ({"train/cat/a.txt": b"text"}, "no readable images"),
    ],
)
def test_bad_folders_give_clear_errors(tmp_path, layout, match):
    src = tmp_path / "src"
    if layout:
        write_folder(src, layout)
    with pytest.raises(source_folders.PrepareError, match=match):
        prepare.prepare(str(src), "bad", str(tmp_path / "tfds"), log=lambda m: None)
    assert (
        prepare.main(["--src", str(src), "--name", "bad", "--data_dir", str(tmp_path / "tfds")])
        == 2
    )
    with pytest.raises(source_folders.PrepareError, match="snake_case"):
        prepare.prepare(str(src), "Bad-Name", str(tmp_path / "tfds"), log=lambda m: None)


def test_embedded_generation_is_deterministic_and_balanced():
    images, labels = embedded.generate_images(60, 32, seed=3)
    again, labels_again = embedded.generate_images(60, 32, seed=3)
    other, _ = embedded.generate_images(60, 32, seed=4)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert not np.array_equal(images, other)
    assert images.shape == (60, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), [6] * 10)
    assert images.std() > 30  # colourful, not blank


def test_embedded_dataset_is_built_on_first_use(tmp_path, caplog):
    caplog.set_level("INFO")
    source = sources.open_split("rekd_shapes/tiny", "test", str(tmp_path))
    assert "first use" in caplog.text
    assert len(source) == 100 and source.num_classes == 10 and source.stored_shape == (32, 32, 3)
    ds = tfds.data_source("rekd_shapes/tiny", data_dir=str(tmp_path))
    image = ds["train"][0]["image"]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    # The stored pixels are exactly the generated ones (lossless PNG).
    images, labels = embedded.generate_images(100, 32, seed=1)
    meta = source.metadata()
    first = source.read([0])[0]
    index = int(first["file_name"].decode().split("/")[-1].split(".")[0])
    np.testing.assert_array_equal(sources.decode_image(first["image"]), images[index])
    assert meta["labels"][0] == labels[index]
