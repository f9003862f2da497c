"""The CIFAR-10 study's results as Markdown tables (results.md and docs/results.md): teachers,
the validation search and learning-rate grid with the choices, the seeded mechanism arms and
ReKD's margins, teacher quality, the five students, the budget axis and the gain against the
teacher's lead.

`markdown(result)` reads only the results dict (rekd_jax.experiments.cifar10.study.run), so the
tables can be rebuilt from a committed results.json.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

MODES = ("knn", "linear")


def _f(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def _minutes(seconds) -> str:
    return "-" if not seconds else f"{seconds / 60:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"] + [
        "| " + " | ".join(map(str, r)) + " |" for r in rows
    ]


def _rows(result: Mapping) -> dict[str, Mapping]:
    return {r["name"]: r for r in result["rows"]}


def _top1(row: Mapping | None, mode: str):
    return None if row is None else row["eval"].get(mode, {}).get("top1")


def _mean_spread(stats: Mapping | None) -> str:
    if not stats:
        return "-"
    return f"{stats['mean']:.1f} ± {stats['std']:.1f} [{stats['min']:.1f}, {stats['max']:.1f}]"


def _precision(value, chance) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} ({value / chance:.1f}x)" if chance else f"{value:.3f}"


def teachers_table(result: Mapping) -> list[str]:
    chance = result.get("chance")
    mech = result.get("mechanism", {}).get("arms", {})
    quality = {p["teacher"]: p for p in result.get("quality", [])}
    out = []
    for r in result["rows"]:
        if r["group"] != "teacher":
            continue
        if r["name"] == "teacher/mocov2":
            prec = mech.get("rekd", {}).get("label_precision")
        elif r["name"] == "teacher/supervised":
            prec = mech.get("rekd_supervised", {}).get("label_precision")
        else:
            pct = r["name"].rsplit("_", 1)[-1].replace("pct", "%")
            prec = quality.get(pct, {}).get("label_precision")
        out.append(
            [
                r["label"],
                r["steps"] or "-",
                _minutes(r.get("train_seconds")),
                _f(_top1(r, "knn")),
                _f(_top1(r, "linear")),
                _precision(prec, chance),
            ]
        )
    return _table(
        ["teacher", "steps", "train min", "kNN", "linear", "mined-positive precision"], out
    )


def _search_budget(result: Mapping) -> str:
    """' at lr L for N steps' of the search runs, from the scale's settings."""
    settings = result["scale_settings"]
    grid, steps = settings.get("lr_grid"), settings.get("search_steps")
    if not grid or not steps:
        return ""
    return f" at peak lr {grid[len(grid) // 2]:g} for {steps} steps"


def search_tables(result: Mapping) -> list[str]:
    choices = result.get("choices", {})
    settings = choices.get("settings", {})
    lines = []
    searches = (
        ("rekd", "ReKD reading"),
        ("seed", "SEED temperatures"),
        ("space", "ReKD in the teacher's space (an extension), beta x k"),
        ("rekd_long", "The chosen ReKD reading's temperature x k, and what its miner reads"),
    )
    by_name = _rows(result)
    for arm, title in searches:
        rows = [
            r
            for r in result["rows"]
            if r["group"] == "search" and r["name"].startswith(f"search/{arm}/")
        ]
        own = by_name.get(f"search/rekd/{settings.get('rekd')}")
        if arm == "rekd_long" and rows and own:  # the chosen reading is one of them
            rows.insert(0, own)
        if not rows:
            continue
        table = []
        for r in rows:
            variant = r["name"].split("/")[2]
            mark = " (chosen)" if settings.get(arm) == variant else ""
            table.append(
                [
                    f"{variant}{mark}",
                    _f(_top1(r, "knn")),
                    _f(_top1(r, "linear")),
                    _precision(
                        r.get("diagnostics", {}).get("positive_label_precision")
                        if r.get("method") == "rekd"
                        else None,
                        result.get("chance"),
                    ),
                ]
            )
        lines += [f"{title}, validation, one run each{_search_budget(result)}:", ""]
        lines += _table(["setting", "kNN", "linear", "mined-positive precision"], table) + [""]
    return lines


def grid_table(result: Mapping) -> list[str]:
    grid, chosen = result.get("grid", {}), result.get("choices", {}).get("lr", {})
    if not grid:
        return []
    lrs = sorted({p[0] for entry in grid.values() for p in entry["points"]})
    table = []
    for arm, entry in grid.items():
        cells = {p[0]: p for p in entry["points"]}
        line = [entry["label"]]
        for lr in lrs:
            p = cells.get(lr)
            text = "-" if p is None else f"{_f(p[1])} / {_f(p[2])}"
            line.append(f"**{text}**" if p is not None and lr == chosen.get(arm) else text)
        table.append(line)
    batch = result["scale_settings"]["batch"]
    longer = result.get("choices", {}).get("lr_long")
    note = (
        ["", f"The longer runs' peak lr (the grid and one step above it): {longer}."]
        if longer
        else []
    )
    return (
        [f"Peak learning rate at batch {batch}, validation kNN / linear; bold: chosen:", ""]
        + _table(["arm"] + [f"lr {lr:g}" for lr in lrs], table)
        + note
        + [""]
    )


def mechanism_table(result: Mapping) -> list[str]:
    mech = result.get("mechanism", {})
    if not mech.get("arms"):
        return []
    rows, chance = _rows(result), result.get("chance")
    choices = result.get("choices", {})
    arch = result["scale_settings"]["mechanism_student"]
    base = rows.get(f"random_init/{arch}")
    table = [["random init", "-", "-", _f(_top1(base, "knn")), _f(_top1(base, "linear")), "-"]]
    for arm, entry in mech["arms"].items():
        setting = {
            "rekd": "rekd",
            "rekd_supervised": "rekd",
            "rekd_oracle": "rekd",
            "rekd_oracle_k": "rekd_long",
            "rekd_space": "space",
            "seed": "seed",
            "seed_supervised": "seed",
        }.get(arm)
        table.append(
            [
                entry["label"],
                choices.get("settings", {}).get(setting, "-") if setting else "-",
                _f(choices.get("lr", {}).get(arm), "g"),
                _mean_spread(entry.get("knn")),
                _mean_spread(entry.get("linear")),
                _precision(entry.get("label_precision"), chance),
            ]
        )
    lines = _table(
        [
            "arm",
            "setting",
            "peak lr",
            "kNN mean ± std [min, max]",
            "linear mean ± std [min, max]",
            "mined-positive precision",
        ],
        table,
    )
    lines.append("")
    for name, margin in mech.get("margins", {}).items():
        other = name.split("_over_")[1]
        for mode in MODES:
            m = margin[mode]
            lines.append(
                f"- ReKD over {'MoCo v2' if other == 'mocov2' else 'SEED'}, {mode}: "
                f"{m['mean']:+.1f} (seed-paired differences {_f(m['paired_min'], '+.1f')} to "
                f"{_f(m['paired_max'], '+.1f')}); "
                + (
                    "outside the seed spread"
                    if m["outside_seed_spread"]
                    else "within the seed spread"
                )
            )
    return lines + [""]


def quality_table(result: Mapping) -> list[str]:
    points, chance = result.get("quality", []), result.get("chance")
    if not points:
        return []
    table = []
    for p in points:
        teacher_knn = (p["teacher_eval"] or {}).get("knn", {}).get("top1")
        cells = [p["teacher"], _f(teacher_knn), _precision(p["label_precision"], chance)]
        for arm in ("seed", "rekd"):
            for mode in MODES:
                s = p.get(arm, {}).get(mode)
                cells.append(
                    "-" if not s else f"{s['mean']:+.1f} [{s['min']:+.1f}, {s['max']:+.1f}]"
                )
        table.append(cells)
    return _table(
        [
            "teacher",
            "teacher kNN",
            "mined-positive precision",
            "SEED - MoCo v2, kNN",
            "SEED - MoCo v2, linear",
            "ReKD - MoCo v2, kNN",
            "ReKD - MoCo v2, linear",
        ],
        table,
    ) + [""]


def students_table(result: Mapping) -> list[str]:
    students = result.get("students", {})
    if not students:
        return []
    arms = (
        ("random_init", "random init"),
        ("mocov2", "MoCo v2"),
        ("seed", "SEED"),
        ("rekd", "ReKD"),
    )
    table = []
    for arch, entries in students.items():
        steps = max((e.get("steps", 0) for e in entries.values()), default=0)
        table.append(
            [arch, steps]
            + [
                "-"
                if name not in entries
                else f"{_f(entries[name].get('knn'))} / {_f(entries[name].get('linear'))}"
                for name, _ in arms
            ]
        )
    return _table(["student", "steps"] + [f"{label} kNN / linear" for _, label in arms], table) + [
        ""
    ]


def budget_table(result: Mapping) -> list[str]:
    budget, chance = result.get("budget", {}), result.get("chance")
    if not budget.get("arms"):
        return []
    table = []
    for entry in budget["arms"].values():
        for p in entry["points"]:
            table.append(
                [
                    entry["label"],
                    f"{p['steps']:,}",
                    _f(p["epochs"]),
                    len(p["seeds"]),
                    _mean_spread(p.get("knn")),
                    _mean_spread(p.get("linear")),
                    _precision(p.get("label_precision"), chance),
                ]
            )
    lines = _table(
        [
            "arm",
            "student steps",
            "epochs",
            "seeds",
            "kNN mean ± std [min, max]",
            "linear mean ± std [min, max]",
            "mined-positive precision",
        ],
        table,
    )
    lines.append("")
    names = {"teacher/mocov2": "MoCo v2 teacher", "teacher/supervised": "supervised teacher"}
    for teacher, scores in budget.get("teachers", {}).items():
        lines.append(
            f"- {names.get(teacher, teacher)}: kNN {_f(scores['knn'])}, linear "
            f"{_f(scores['linear'])}"
        )
    init = budget.get("random_init")
    if init:
        lines.append(f"- random-init student: kNN {_f(init['knn'])}, linear {_f(init['linear'])}")
    return lines + [""]


def lead_table(result: Mapping) -> list[str]:
    points = result.get("lead", [])
    if not points:
        return []
    table = [
        [
            p["arm"],
            p["teacher"],
            "student budget" if p["steps"] is None else f"{p['steps']:,}",
            f"{p['lead']:+.1f}",
            f"{p['knn']:+.1f}",
            f"{p['linear']:+.1f}",
        ]
        for p in points
    ]
    return _table(
        [
            "arm",
            "teacher",
            "student steps",
            "teacher's lead (kNN)",
            "gain over MoCo v2, kNN",
            "gain over MoCo v2, linear",
        ],
        table,
    ) + [""]


def markdown(result: Mapping) -> str:
    """All of the study's tables as one Markdown document."""
    settings = result["scale_settings"]
    lines = [
        f"# CIFAR-10 study, scale {result['scale']}",
        "",
        f"Command: `{result.get('command', '')}`",
        "",
        f"Machine: {result.get('machine', '-')}.",
        "",
        f"Top-1 in % on the test split unless marked validation; kNN: weighted kNN "
        f"(k 200, tau 0.1); linear: the fast linear probe ({settings['linear_epochs']} "
        f"epochs on frozen features); mined-positive precision: the fraction of ReKD's "
        f"mined positives that share the anchor's label (chance "
        f"{_f(result.get('chance'), '.3f')}).",
        "",
        "## Teachers",
        "",
    ]
    lines += teachers_table(result) + [""]
    lines += ["## Choices on validation", ""] + search_tables(result) + grid_table(result)
    lines += [f"## Mechanism arms on the test split ({settings['seeds']} seeds)", ""]
    lines += mechanism_table(result)
    lines += ["## Teacher quality", ""] + quality_table(result)
    lines += ["## Five students (one seed)", ""] + students_table(result)
    if result.get("budget"):
        lines += ["## Budget axis", ""] + budget_table(result)
        lines += ["## Gain against the teacher's lead", ""] + lead_table(result)
    seconds = result.get("seconds", {})
    if seconds:
        lines += ["## Time (training + evaluation, minutes)", ""]
        lines += _table(list(seconds), [[_minutes(v) for v in seconds.values()]]) + [""]
    return "\n".join(lines) + "\n"
