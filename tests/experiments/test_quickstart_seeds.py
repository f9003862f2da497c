"""The quick start over seeds (configs/quickstart.py:tiny,seeds): one complete run per seed in
WORKDIR/seed_<N>, every stage reseeded, then each row's mean and range over the seeds and the
checks counted per seed."""

import json
import os

from configs import quickstart
from rekd_jax import app
from rekd_jax.experiments import quickstart as quickstart_lib


def test_every_seed_runs_every_stage_and_the_summary_spans_them(tmp_path, capsys):
    config = quickstart.get_config("tiny,seeds")
    assert tuple(config.rng_seeds) == quickstart.SEEDS
    config.rng_seeds = (0, 1)
    del config.runs["seed"]  # teacher, ReKD student and MoCo v2 baseline keep it short
    for run in (*config.runs.values(), config.evaluation):
        run.data.data_dir = str(tmp_path / "tfds")
    workdir = tmp_path / "qs"
    result = app.run(config, str(workdir))

    assert result["seeds"] == [0, 1]
    for seed in (0, 1):
        with open(workdir / f"seed_{seed}" / "results.json") as f:
            rows = json.load(f)["rows"]
        assert [r["name"] for r in rows][-3:] == ["teacher", "student", "baseline"]
        with open(workdir / f"seed_{seed}" / "student" / "config.json") as f:
            assert json.load(f)["rng_seed"] == seed
    assert int(config.rng_seed) == 0  # the config's own seed is left as it was
    student = result["rows"]["student"]
    assert len(student["knn"]["values"]) == 2
    assert student["knn"]["min"] <= student["knn"]["mean"] <= student["knn"]["max"]
    assert 0.0 <= student["label_precision"]["mean"] <= 1.0
    margin = result["measures"]["rekd_over_mocov2"]
    knn = [
        next(
            r
            for r in json.load(open(workdir / f"seed_{s}" / "results.json"))["rows"]
            if r["name"] == name
        )["eval"]["knn"]["top1"]
        for s in (0, 1)
        for name in ("student", "baseline")
    ]
    assert margin["values"] == [knn[0] - knn[1], knn[2] - knn[3]]
    out = capsys.readouterr().out
    assert "kNN mean [min, max]" in out and "holds on" in out and "of 2 seeds" in out
    with open(workdir / "results.json") as f:
        assert json.load(f)["rows"]["student"] == json.loads(json.dumps(student))
    assert os.path.isdir(workdir / "seed_1" / "teacher" / "encoders")
    assert quickstart_lib.format_spread(result, result["seeds"]).count("\n") >= 6


def test_the_x4_variant_trains_the_students_four_times_longer():
    base, x4 = quickstart.get_config("seeds"), quickstart.get_config("seeds,x4")
    assert x4.runs.teacher.to_dict() == base.runs.teacher.to_dict()
    for name in ("student", "seed", "baseline"):
        assert x4.runs[name].num_train_steps == 4 * base.runs[name].num_train_steps == 2800
        assert x4.runs[name].optimizer.cosine_unit == base.runs[name].optimizer.cosine_unit
        assert x4.runs[name].optimizer.to_dict() == base.runs[name].optimizer.to_dict()
