"""notebooks/rekd_colab.ipynb: stored without outputs, and executed headless (nbclient, a real
ipykernel) at a tiny size on the checkout, so that it cannot rot."""

import ast
import os
import re

import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "notebooks", "rekd_colab.ipynb")


def _read():
    return nbformat.read(NOTEBOOK, as_version=4)


def _parameters_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"exactly one cell must carry the 'parameters' tag; got {tagged}"
    return tagged[0]


def test_notebook_is_stored_without_outputs_and_has_one_parameters_cell():
    nb = _read()
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, (
            "store notebooks/rekd_colab.ipynb without outputs (Jupyter: Edit > Clear outputs of "
            f"all cells; or jupyter nbconvert --clear-output --inplace); cell:\n{cell.source[:200]}"
        )
    assert nb.cells[_parameters_index(nb)].cell_type == "code"


def test_no_colab_badge_points_at_a_placeholder_repository():
    """Until the repository has a public URL there is no badge (it would open nothing)."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        texts = [f.read(), _read().cells[0].source]
    for text in texts:
        links = re.findall(r"https://colab\.research\.google\.com/github/[^)\s]+", text)
        assert not [link for link in links if "/OWNER/" in link], links


def test_the_install_cell_without_a_repository_url_stops_with_one_message(tmp_path):
    """Where rekd_jax is not importable and REPO_URL still holds its placeholder, the install
    cell stops at once saying what to set, instead of failing inside pip."""
    import nbclient

    nb = _read()
    nb.cells = [nb.cells[1]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    with pytest.raises(nbclient.exceptions.CellExecutionError) as failure:
        client.execute(env=env)
    assert failure.value.ename == "SystemExit"
    assert failure.value.evalue.startswith("Set REPO_URL in this cell to the repository's URL")


TINY = {
    "VARIANT": "tiny",
    "TEACHER_STEPS": 2,
    "STUDENT_STEPS": 2,
    "LINEAR_EPOCHS": 1,
    "KNN_MONITOR_EVERY_EPOCHS": 1,
    "KNN_MONITOR_EXAMPLES": 0,
    "IMPORTED_TEACHER_STEPS": 2,
}


def _texts(nb) -> str:
    out = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                out.append(output.text)
            elif "data" in output and "text/plain" in output.data:
                out.append(output.data["text/plain"])
    return "\n".join(out)


def test_notebook_runs_headless_at_tiny_size(tmp_path):
    import nbclient  # requirements-dev.txt pins it

    nb = _read()
    index = _parameters_index(nb)
    knobs = {
        t.id
        for node in ast.parse(nb.cells[index].source).body
        if isinstance(node, ast.Assign)
        for t in node.targets
    }
    workdir = str(tmp_path / "nb")
    values = {**TINY, "WORKDIR": workdir}
    assert set(values) <= knobs, f"unknown notebook parameters {set(values) - knobs}"
    # papermill's convention: a cell tagged 'injected-parameters' right after the parameters cell
    injected = nbformat.v4.new_code_cell(
        "\n".join(f"{k} = {v!r}" for k, v in values.items()),
        metadata={"tags": ["injected-parameters"]},
    )
    nb.cells.insert(index + 1, injected)
    client = nbclient.NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": REPO}}
    )
    client.execute()  # raises CellExecutionError naming the cell on any error

    text = _texts(nb)
    # the result table, with the random-init row of each architecture and the gains over it
    for expected in (
        "random_init/resnet18",
        "random_init/alexnet",
        "dkNN",
        "teacher",
        "student",
        "baseline",
        "torch_teacher_student",
        "ReKD (torch teacher)",
        "imported teacher, kNN top-1 %",
    ):
        assert expected in text, (
            f"{expected!r} missing from the notebook's outputs:\n{text[-3000:]}"
        )
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 5, len(images)  # results (kNN, linear), curves, relations, similarity
    for name in (
        "curves.png",
        "relations.png",
        "results_knn.png",
        "results_linear.png",
        "similarity_alexnet.png",
    ):
        assert os.path.getsize(os.path.join(workdir, "plots", name)) > 1000, name
    import json

    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        rows = json.load(f)["rows"]
    assert [r["steps"] for r in rows] == [0, 0, 2, 2, 2, 2]  # random inits, teacher, students
    from rekd_jax.tools import report

    assert "knn/top1" in report.read_curves(os.path.join(workdir, "teacher"))

    # the report CLI on the same run directories: the quick-start workdir into --out, and two
    # rows compared (a trained run and a random-init row, which has only evaluation features)
    assert report.main([workdir, "--out", str(tmp_path / "cli")]) == 0
    for name in ("curves.png", "relations.png", "results_knn.png", "similarity_alexnet.png"):
        assert os.path.getsize(tmp_path / "cli" / name) > 1000, name
    rows_dirs = [os.path.join(workdir, "student"), os.path.join(workdir, "random_init", "alexnet")]
    assert report.main([*rows_dirs, "--out", str(tmp_path / "pair")]) == 0
    assert sorted(os.listdir(tmp_path / "pair")) == [
        "curves.png",
        "relations.png",
        "similarity.png",
    ]
