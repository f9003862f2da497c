"""docs/results.md's quick-start budget table prints the numbers of the committed results.json
files in docs/quickstart_budget/ (the quick start's own WORKDIR/results.json of each run): the
mean over seeds 0 and 1 of each row, rounded as the table shows it."""

import json
import os

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs")
HEADER = "| teacher steps | student steps |"
# (file in docs/quickstart_budget, the table's first two cells)
RUNS = (
    ("teacher_1700_students_700.json", ("1,700 (21.8 epochs)", "700 (9.0 epochs)")),
    ("teacher_1700_students_2800.json", ("1,700 (21.8 epochs)", "2,800 (35.8 epochs)")),
    ("teacher_6800_students_700.json", ("6,800 (87.0 epochs)", "700 (9.0 epochs)")),
    ("teacher_6800_students_2800.json", ("6,800 (87.0 epochs)", "2,800 (35.8 epochs)")),
)
SEEDS = (0, 1)


def _table(text: str) -> dict[tuple[str, str], list[str]]:
    lines = text[text.index(HEADER) :].splitlines()
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("**", "") for c in line.strip("|").split("|")]
        rows[(cells[0], cells[1])] = cells[2:]
    return rows


def _mean(result: dict, row: str, measure: str) -> float:
    stats = result["rows"][row][measure]
    values = [stats["values"][result["seeds"].index(s)] for s in SEEDS]
    return sum(values) / len(values)


def test_results_md_quickstart_budget_table_is_the_committed_numbers():
    with open(os.path.join(DOCS, "results.md")) as f:
        table = _table(f.read())
    assert len(table) == len(RUNS)
    for name, key in RUNS:
        with open(os.path.join(DOCS, "quickstart_budget", name)) as f:
            result = json.load(f)
        cells = table[key]
        teacher_knn = _mean(result, "teacher", "knn")
        expected = [
            f"{teacher_knn:.1f} / {_mean(result, 'teacher', 'linear'):.1f}",
            *(
                f"{_mean(result, row, 'knn'):.1f} / {_mean(result, row, 'linear'):.1f}"
                for row in ("baseline", "student", "seed")
            ),
            f"{_mean(result, 'student', 'label_precision'):.2f}",
            f"{teacher_knn - _mean(result, 'baseline', 'knn'):+.1f}",
        ]
        assert cells == expected, name
