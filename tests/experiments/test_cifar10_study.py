"""The CIFAR-10 study: the plan of every scale (arms, equal student steps, teachers first), and
a real run of its tiny scale (one student, one seed) that writes results, the mechanism answer
and plots, then skips everything when rerun."""
import json
import os

import pytest

from rekd_jax.experiments import cifar10


@pytest.mark.parametrize("scale", sorted(cifar10.SCALES))
def test_plan_has_every_arm_with_equal_student_steps(scale):
    s = cifar10.SCALES[scale]
    arms = cifar10.build_plan(s, "/data", seeds=2)
    names = [a.name for a in arms]
    assert len(set(names)) == len(names)
    assert names[:3] == ["random_init/teacher", "teacher/mocov2", "teacher/supervised"]
    for arch in s.students():
        labels = {a.label for a in arms if a.arch == arch}
        assert {"random init", "MoCo v2", "SEED", "ReKD (offline)", "ReKD (online)"} <= labels
        steps = {a.config.num_train_steps for a in arms if a.arch == arch and a.trained}
        assert steps == {s.student_steps}
    mechanism = [a for a in arms if a.group == "mechanism"]
    assert len(mechanism) == 2 * len(cifar10.MECHANISM_ARMS)
    assert all(a.arch == s.mechanism_student for a in mechanism)
    for a in arms:  # a teacher is trained before any arm that reads it
        if a.teacher:
            assert names.index(a.teacher) < names.index(a.name)
    oracle = [a for a in mechanism if "oracle" in a.name][0].config
    assert oracle.method == "rekd" and oracle.rekd.teacher == "none"
    supervised = arms[2].config
    assert supervised.rekd.relation == "oracle" and supervised.rekd.teacher == "none"


def test_tiny_study_runs_end_to_end_and_reruns_skip(tmp_path):
    workdir, data_dir = str(tmp_path / "study"), str(tmp_path / "data")
    lines = []
    result = cifar10.run("tiny", workdir, data_dir, families=("alexnet",), seeds=1,
                         log=lines.append)
    mechanism = result["mechanism"]
    assert set(mechanism) == {"mocov2", "rekd_offline", "rekd_supervised", "rekd_oracle"}
    assert mechanism["rekd_oracle"]["label_precision"] == pytest.approx(1.0)
    assert "knn_gain_over_mocov2" in mechanism["rekd_oracle"]
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    assert {r["label"] for r in saved["rows"]} >= {"random init", "SEED", "ReKD (online)"}
    assert "random init" in open(os.path.join(workdir, "results.md")).read()
    for name in ("curves.png", "relations.png", "results_knn.png", "similarity_alexnet.png"):
        assert os.path.getsize(os.path.join(workdir, "plots", name)) > 1000
    assert any("ETA" in line for line in lines)
    rerun = []
    cifar10.run("tiny", workdir, data_dir, families=("alexnet",), seeds=1, plots=False,
                log=rerun.append)
    assert sum("skipped (done)" in line for line in rerun) == len(saved["rows"])
