"""Fixtures for the data tests: tiny datasets built on the fly in temp dirs."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_test_helpers import encode

from rekd_jax.data import pipeline


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """A data_dir where 'rekd_shapes/tiny' (200 train / 100 test) is built on first use."""
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def shapes_cfg(tfds_dir):
    cfg = pipeline.default_data_config()
    cfg.dataset = "rekd_shapes/tiny"
    cfg.data_dir = tfds_dir
    cfg.num_workers = 2
    return cfg


@pytest.fixture(scope="session")
def corrupt_records_dir(tmp_path_factory):
    """A TFDS dataset 'with_corrupt' whose records 3 and 4 (by file name) hold broken images.

    Written directly (rekd_jax.data.prepare would skip them) to exercise the loader's skipping.
    Image i is filled with value i so tests can tell examples apart.
    """
    data_dir = str(tmp_path_factory.mktemp("corrupt"))

    class WithCorrupt(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(8, 8, 3)),
                        "label": tfds.features.ClassLabel(names=["a", "b"]),
                        "file_name": tfds.features.Text(),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(12):
                data = encode(np.full((8, 8, 3), 10 * i, np.uint8), "PNG")
                if i == 3:
                    data = b"garbage, not an image"
                if i == 4:
                    data = data[: len(data) // 2]
                yield f"{i:02d}", {"image": data, "label": i % 2, "file_name": f"{i:02d}.png"}

    WithCorrupt.name = "with_corrupt"
    WithCorrupt(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir
