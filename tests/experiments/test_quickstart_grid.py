"""The quick start's learning-rate grid (configs/quickstart.py:tiny,lr_grid): every student
method at every lr, scored on a validation split carved from the training split; the choice
reads validation rows only."""

import json
import os

from configs import quickstart
from rekd_jax import app


def test_grid_scores_every_student_on_validation_and_chooses_per_method(tmp_path):
    config = quickstart.get_config("tiny,lr_grid")
    config.evaluation.data.data_dir = str(tmp_path / "tfds")
    for run in config.runs.values():
        run.data.data_dir = str(tmp_path / "tfds")
    result = app.run(config, str(tmp_path / "grid"))
    lrs = tuple(config.lr_grid)
    assert set(result["chosen"]) == {"student", "seed", "baseline"}
    assert all(lr in lrs for lr in result["chosen"].values())
    assert result["validation"] == {"bank": "train[:180]", "scored": "train[180:]"}
    names = {r["name"] for r in result["rows"]}
    assert names == {"teacher"} | {f"{n}/lr{lr:g}" for n in result["chosen"] for lr in lrs}
    with open(os.path.join(tmp_path, "grid", "results.json")) as f:
        assert json.load(f)["chosen"] == result["chosen"]
