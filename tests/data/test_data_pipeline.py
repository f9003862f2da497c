"""Pipeline: batching layout, per-epoch shuffling, exact resume, shards, eval masks, subsets,
resident mode, corrupt images, a file truncated while it is read, config and missing-dataset
errors, no TensorFlow."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from rekd_jax.data import loader, pipeline, records, sources


def _create(cfg, **kw):
    args = dict(
        split="train",
        training=True,
        global_batch_size=40,
        seed=0,
        num_local_devices=4,
        process_index=0,
        process_count=1,
    )
    args.update(kw)
    return pipeline.create(cfg, **args)


def _take(pipe, n):
    out = []
    for batch in pipe:
        out.append(batch)
        if len(out) == n:
            break
    return out


def test_host_and_resident_modes_agree(shapes_cfg):
    resident = _create(shapes_cfg)
    assert resident.resident_images is not None and resident.resident_images.shape == (
        200,
        32,
        32,
        3,
    )
    assert resident.num_classes == 10 and resident.image_shape == (32, 32, 3)
    assert resident.steps_per_epoch == 5 and resident.num_examples == 200
    shapes_cfg.resident = "off"
    host = _create(shapes_cfg)
    assert host.resident_images is None
    for rb, hb in zip(_take(resident, 6), _take(host, 6)):
        assert set(rb) == {"index", "label"} and set(hb) == {"image", "label"}
        assert rb["index"].shape == (4, 10) and rb["index"].dtype == np.int32
        assert hb["image"].shape == (4, 10, 32, 32, 3) and hb["image"].dtype == np.uint8
        assert hb["label"].dtype == np.int32
        np.testing.assert_array_equal(rb["label"], hb["label"])
        np.testing.assert_array_equal(resident.resident_images[rb["index"]], hb["image"])


def test_epochs_are_shuffled_differently_and_cover_each_example_once(shapes_cfg):
    pipe = _create(shapes_cfg)
    batches = _take(pipe, 10)  # two epochs of 5 steps
    epochs = [
        np.concatenate([b["index"].ravel() for b in batches[e * 5 : (e + 1) * 5]]) for e in range(2)
    ]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(200))
    assert not np.array_equal(epochs[0], epochs[1])
    other_seed = _take(_create(shapes_cfg, seed=1), 1)[0]["index"]
    assert not np.array_equal(other_seed, batches[0]["index"])
    again = _take(_create(shapes_cfg), 1)[0]["index"]
    np.testing.assert_array_equal(again, batches[0]["index"])


@pytest.mark.parametrize("resident", ["on", "off"])
def test_resume_mid_epoch_gives_identical_next_batches(shapes_cfg, resident):
    shapes_cfg.resident = resident
    pipe = _create(shapes_cfg, global_batch_size=24)  # 8 steps per epoch
    _take(pipe, 6)
    state = pipe.get_state()
    assert state == {"epoch": 0, "step": 6, "seed": 0, "num_examples": 200, "global_batch_size": 24}
    expected = _take(pipe, 5)  # crosses into epoch 1
    resumed = _create(shapes_cfg, global_batch_size=24)
    resumed.set_state({k: np.int64(v) for k, v in state.items()})  # as restored from Orbax
    for a, b in zip(expected, _take(resumed, 5)):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert resumed.get_state() == pipe.get_state() == dict(state, epoch=1, step=3)
    with pytest.raises(ValueError, match="seed=0 but this pipeline has seed=5"):
        _create(shapes_cfg, global_batch_size=24, seed=5).set_state(state)


def test_processes_see_disjoint_shards_covering_the_epoch(shapes_cfg):
    per_process = []
    for index in range(2):
        pipe = _create(shapes_cfg, process_index=index, process_count=2, num_local_devices=2)
        batches = _take(pipe, 5)
        assert batches[0]["index"].shape == (2, 10)
        per_process.append([b["index"].ravel() for b in batches])
    single = [b["index"].ravel() for b in _take(_create(shapes_cfg), 5)]
    seen = []
    for step in range(5):
        a, b = per_process[0][step], per_process[1][step]
        assert not set(a) & set(b)
        # The global batch does not depend on the number of processes.
        np.testing.assert_array_equal(np.concatenate([a, b]), single[step])
        seen.extend(a)
        seen.extend(b)
    np.testing.assert_array_equal(np.sort(seen), np.arange(200))


@pytest.mark.parametrize("resident", ["on", "off"])
def test_eval_pads_and_masks_so_each_example_counts_once(shapes_cfg, resident):
    shapes_cfg.resident = resident
    counted_labels, counted_index = [], []
    for index in range(2):
        pipe = _create(
            shapes_cfg,
            split="test",
            training=False,
            global_batch_size=24,
            process_index=index,
            process_count=2,
            num_local_devices=2,
        )
        assert pipe.steps_per_epoch == 5  # 100 examples -> 5 batches of 24, the last padded
        batches = list(pipe)
        assert len(batches) == 5 and all(b["mask"].shape == (2, 6) for b in batches)
        for b in batches:
            counted_labels.extend(b["label"][b["mask"]])
            if resident == "on":
                counted_index.extend(b["index"][b["mask"]])
        assert len(list(pipe)) == 5  # the next loop makes another full pass
    labels = pipeline.split_metadata(shapes_cfg, "test")["labels"]
    assert len(counted_labels) == 100
    np.testing.assert_array_equal(
        np.bincount(counted_labels, minlength=10), np.bincount(labels, minlength=10)
    )
    if resident == "on":
        np.testing.assert_array_equal(np.sort(counted_index), np.arange(100))


def test_eval_order_is_the_split_order(shapes_cfg):
    shapes_cfg.resident = "off"
    pipe = _create(shapes_cfg, split="test", training=False, global_batch_size=8)
    labels = np.concatenate([b["label"].ravel()[b["mask"].ravel()] for b in pipe])
    expected = pipeline.split_metadata(shapes_cfg, "test")["labels"]
    np.testing.assert_array_equal(labels, expected)


def test_indices_restrict_to_a_subset(shapes_cfg):
    meta = pipeline.split_metadata(shapes_cfg, "train")
    subset = pipeline.class_balanced_subset(meta["labels"], 0.1, seed=0)
    assert len(subset) == 20
    np.testing.assert_array_equal(np.bincount(meta["labels"][subset], minlength=10), [2] * 10)
    pipe = _create(shapes_cfg, split="train", training=False, global_batch_size=8, indices=subset)
    assert pipe.num_examples == 20 and pipe.resident_images.shape[0] == 20
    labels = np.concatenate([b["label"][b["mask"]] for b in pipe])
    np.testing.assert_array_equal(labels, meta["labels"][subset])
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 200\)"):
        _create(shapes_cfg, indices=[0, 500])


def test_subset_from_file(tmp_path):
    names = ["n01/n01_1.JPEG", "n01/n01_2.JPEG", "n02/n02_7.JPEG"]
    listing = tmp_path / "1percent.txt"
    listing.write_text("n02_7.JPEG\nn01/n01_1.JPEG\n")
    np.testing.assert_array_equal(pipeline.subset_from_file(str(listing), names), [0, 2])
    listing.write_text("n03_1.JPEG\n")
    with pytest.raises(ValueError, match="1 of 1 names .* not in the split"):
        pipeline.subset_from_file(str(listing), names)


@pytest.mark.parametrize("resident", ["on", "off"])
def test_corrupt_images_are_counted_and_replaced(corrupt_records_dir, resident):
    cfg = pipeline.default_data_config()
    cfg.dataset, cfg.data_dir, cfg.num_workers, cfg.image_size, cfg.eval_resize = (
        "with_corrupt",
        corrupt_records_dir,
        2,
        8,
        8,
    )
    cfg.resident = resident
    meta = pipeline.split_metadata(cfg, "train")
    by_file = np.argsort(meta["file_names"])  # example index of file i
    pipe = _create(cfg, training=False, global_batch_size=12)
    (batch,) = list(pipe)
    if resident == "on":
        images = pipe.resident_images[batch["index"].ravel()][by_file]
    else:
        images = batch["image"].reshape(12, 8, 8, 3)[by_file]
    mask = batch["mask"].ravel()[by_file]
    values = images[:, 0, 0, 0]
    assert pipe.num_skipped >= 2
    assert not mask[3] and not mask[4] and mask.sum() == 10
    good = [i for i in range(12) if i not in (3, 4)]
    np.testing.assert_array_equal(values[good], [10 * i for i in good])
    assert set(values[[3, 4]]) <= {10 * i for i in good}  # replaced by valid examples


def test_variable_size_images_need_host_size(tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    for cls, size in (("a", (10, 14)), ("b", (20, 12))):
        os.makedirs(src / cls)
        for i in range(3):
            Image.new("RGB", size, (40 * i, 0, 0)).save(src / cls / f"{i}.png")
    from rekd_jax.data import prepare

    prepare.prepare(str(src), "varsize", str(tmp_path / "tfds"), num_workers=1, log=lambda m: None)
    cfg = pipeline.default_data_config()
    cfg.dataset, cfg.data_dir, cfg.num_workers = "varsize", str(tmp_path / "tfds"), 1
    cfg.eval_split = "train"
    with pytest.raises(ValueError, match="host_size"):
        list(_create(cfg, training=False, global_batch_size=4))
    cfg.host_size, cfg.image_size, cfg.eval_resize = 8, 8, 8
    pipe = _create(cfg, training=False, global_batch_size=4)
    assert pipe.resident_images is not None and pipe.image_shape == (8, 8, 3)
    cfg.resident = "off"
    batches = list(_create(cfg, training=False, global_batch_size=4))
    assert batches[0]["image"].shape == (4, 1, 8, 8, 3)


def test_missing_dataset_and_split_errors(tmp_path):
    cfg = pipeline.default_data_config()
    cfg.data_dir = str(tmp_path)
    cfg.dataset = "my_photos"
    with pytest.raises(sources.DatasetNotFoundError) as err:
        _create(cfg)
    message = str(err.value)
    assert "'my_photos'" in message and str(tmp_path) in message
    assert "python -m rekd_jax.data.prepare" in message
    cfg.dataset = "imagenet2012"
    with pytest.raises(sources.DatasetNotFoundError, match="manual_dir"):
        _create(cfg)
    cfg.dataset = "rekd_shapes/tiny"
    with pytest.raises(sources.DatasetNotFoundError, match="available splits"):
        _create(cfg, split="validation")


def _copy_of_tiny(shapes_cfg, tmp_path):
    """A data config reading a private copy of rekd_shapes/tiny (its train file, to damage)."""
    _create(shapes_cfg)  # builds the shared copy on first use
    folder = sources.find_dataset_dir(shapes_cfg.dataset, shapes_cfg.data_dir)
    copy = tmp_path / "tfds" / "rekd_shapes" / "tiny" / os.path.basename(folder)
    shutil.copytree(folder, copy)
    cfg = shapes_cfg.copy_and_resolve_references()
    cfg.data_dir, cfg.resident = str(tmp_path / "tfds"), "off"
    (train_file,) = copy.glob("*-train.array_record-*")
    return cfg, str(train_file)


def test_a_file_truncated_while_reading_stops_naming_it(shapes_cfg, tmp_path, caplog):
    cfg, train_file = _copy_of_tiny(shapes_cfg, tmp_path)
    pipe = _create(cfg, global_batch_size=16)
    batches = iter(pipe)
    next(batches), next(batches)  # the reader has the file open
    os.truncate(train_file, os.path.getsize(train_file) // 2)
    with pytest.raises(sources.DatasetCorruptError) as error:
        for _ in range(3 * pipe.steps_per_epoch):
            next(batches)
    text = str(error.value)
    assert f"in {train_file} is empty (its file is truncated or damaged)" in text
    assert "more than config.data.max_skipped_fraction=0.01 of 10000" in text
    assert "delete " in text and "rerun the same command" in text
    limit = 0.01 * records.SKIP_WINDOW
    assert limit < pipe.num_skipped < 2 * limit  # stopped at the limit, not after a full scan
    warned = [r for r in caplog.records if "skipped, replaced by another example" in r.message]
    assert len(warned) == 1 and train_file in warned[0].message


def test_skipped_records_are_replaced_up_to_the_configured_fraction(shapes_cfg, tmp_path):
    cfg, train_file = _copy_of_tiny(shapes_cfg, tmp_path)
    cfg.max_skipped_fraction = 1.0  # never stop: every empty record is replaced
    pipe = _create(cfg, global_batch_size=16)
    batches = iter(pipe)
    next(batches)
    os.truncate(train_file, os.path.getsize(train_file) // 2)
    for _ in range(2 * pipe.steps_per_epoch):
        batch = next(batches)
        assert batch["image"].reshape(16, -1).max(axis=1).min() > 0  # real images only
    assert pipe.num_skipped > 0.01 * records.SKIP_WINDOW


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("max_skipped_fraction", 1.5, "config.data.max_skipped_fraction"),
        ("max_skipped_fraction", -0.1, "config.data.max_skipped_fraction"),
        ("resident", "maybe", "config.data.resident"),
        ("eval_resize", 16, "config.data.eval_resize"),
        ("host_size", -1, "config.data.host_size"),
        ("dataset", "Bad Name", "config.data.dataset"),
        ("augment.gray_prob", 1.5, "config.data.augment.gray_prob"),
        ("augment.crop_scale", (0.5, 0.2), "config.data.augment.crop_scale"),
    ],
)
def test_config_validation_names_the_field(field, value, match):
    cfg = pipeline.default_data_config()
    target = cfg
    *parents, leaf = field.split(".")
    for p in parents:
        target = target[p]
    target[leaf] = value
    with pytest.raises(ValueError, match=match.replace(".", r"\.")):
        pipeline.validate_data_config(cfg)


def test_batch_plan_errors():
    with pytest.raises(ValueError, match="multiple of the total number of devices"):
        loader.BatchPlan(100, 30, 4, 0, 1, 0, True, True, True)
    with pytest.raises(ValueError, match="no batch"):
        loader.BatchPlan(10, 16, 4, 0, 1, 0, True, True, True)
    plan = loader.BatchPlan(10001, 16, 4, 0, 1, 0, False, False, False)
    assert plan.steps_per_epoch == 626
    positions, valid = plan.positions(plan.epoch_order(0), 625)
    assert valid.sum() == 10001 - 625 * 16


def test_no_tensorflow_is_imported(tfds_dir):
    code = f"""
import sys
from rekd_jax.data import pipeline, augment, prepare, sources, embedded, loader
cfg = pipeline.default_data_config()
cfg.dataset, cfg.data_dir = 'rekd_shapes/tiny', {tfds_dir!r}
cfg.num_workers, cfg.resident = 1, 'off'
pipe = pipeline.create(cfg, split='train', training=True, global_batch_size=8, seed=0,
                       num_local_devices=1, process_index=0, process_count=1)
batch = next(iter(pipe))
assert batch['image'].shape == (1, 8, 32, 32, 3)
bad = sorted(m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.'))
assert not bad, bad
print('ok')
"""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        timeout=120,
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
