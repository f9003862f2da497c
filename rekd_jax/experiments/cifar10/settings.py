"""The study's arms and settings: the mechanism arms (ARMS) and which search and learning
rate each follows, the searched settings of ReKD and SEED, and the names of the runs."""

from __future__ import annotations

from rekd_jax import methods
from rekd_jax.experiments.cifar10.scales import READINGS, SEED_TEMPERATURES, Scale

# The mechanism arms: name -> (label, method, rekd.teacher, teacher arm).
ARMS = {
    "mocov2": ("MoCo v2", "mocov2", "", ""),
    "seed": ("SEED", "seed", "", "teacher/mocov2"),
    "rekd": ("ReKD", "rekd", "offline", "teacher/mocov2"),
    "seed_supervised": ("SEED, supervised teacher (oracle)", "seed", "", "teacher/supervised"),
    "rekd_supervised": (
        "ReKD, supervised teacher (oracle)",
        "rekd",
        "offline",
        "teacher/supervised",
    ),
    "rekd_oracle": ("ReKD, true-label relations (oracle)", "rekd", "none", ""),
    "rekd_oracle_k": ("ReKD, k true-label positives (oracle)", "rekd", "none", ""),
    "rekd_space": ("ReKD in the teacher's space (extension)", "rekd", "offline", "teacher/mocov2"),
}


# rekd.<field>s an arm sets whatever its setting: the true-label relations of the oracle arms.
ARM_RELATION = {"rekd_oracle": "oracle", "rekd_oracle_k": "oracle_topk"}


# The miner's fields, which true-label relations do not read.
MINER_FIELDS = (
    "relation",
    "assignment",
    "num_prototypes",
    "candidates",
    "beta",
    "miner_input",
    "miner_view",
)


# The search whose choice each arm takes ('rekd_long': the best ReKD reading of every ReKD
# search, which the budget axis and the k-positive control run with).
FOLLOWS = {
    "rekd": "rekd",
    "rekd_supervised": "rekd",
    "rekd_oracle": "rekd",
    "rekd_oracle_k": "rekd_long",
    "seed": "seed",
    "seed_supervised": "seed",
    "rekd_space": "space",
}


# The methods whose peak lr the grid chooses, and the arms that take their method's lr.
TUNED = ("mocov2", "seed", "rekd")


LR_FOLLOWS = {
    "seed_supervised": "seed",
    "rekd_supervised": "rekd",
    "rekd_oracle": "rekd",
    "rekd_oracle_k": "rekd",
    "rekd_space": "rekd",
}


# The arms of the budget axis (rekd_space joins them when it wins on validation).
BUDGET_ARMS = ("mocov2", "seed", "rekd", "seed_supervised", "rekd_supervised", "rekd_oracle")


MODES = ("knn", "linear")


def space_readings(scale: Scale) -> dict:
    """ReKD scored in the teacher's space with a target mixing the mined relation and SEED's
    soft target: beta x k (an extension beyond the paper, docs/method.md)."""
    return {
        f"beta_{beta:g}_k_{k}": {
            "relation": "topk",
            "candidates": "teacher",
            "beta": beta,
            "relation_topk": k,
        }
        for beta in scale.space_betas
        for k in scale.space_topks
    }


def _same_reading(a: dict, b: dict) -> bool:
    """Whether two rekd overrides configure the same run (unset fields at their defaults)."""
    defaults = methods.rekd.default_config().to_dict()
    return {**defaults, **a} == {**defaults, **b}


def long_readings(scale: Scale, chosen: str) -> dict:
    """The chosen reading, its joint temperature x k search, and what its miner reads (the
    teacher's projection-head embedding or backbone feature, of the key view or a weakly
    augmented one); a setting equal to the chosen reading is that reading."""
    base = dict(READINGS)[chosen]
    found = {chosen: base}
    for tau in scale.joint_temperatures:
        for k in scale.joint_topks:
            found[f"{chosen}_tau_{tau:g}_k_{k}"] = {**base, "temperature": tau, "relation_topk": k}
    for source in scale.miner_inputs:
        for view in scale.miner_views:
            found[f"{chosen}_{source}_{view}"] = {**base, "miner_input": source, "miner_view": view}
    return {
        name: overrides
        for name, overrides in found.items()
        if name == chosen or not _same_reading(overrides, base)
    }


def readings(scale: Scale, search: str, choices: dict) -> dict:
    """name -> overrides of the settings SEARCH chooses among."""
    if search == "rekd":
        return dict(READINGS)
    if search == "seed":
        return dict(SEED_TEMPERATURES)
    if search == "space":
        return space_readings(scale)
    return long_readings(scale, choices.get("rekd", READINGS[0][0]))


def default_choice(scale: Scale, search: str, choices: dict) -> str:
    """The setting a search's followers run with before it has chosen."""
    if search == "seed":
        return scale_default_seed()
    if search == "space":
        return next(iter(space_readings(scale)))
    if search == "rekd_long":
        return choices.get("rekd", READINGS[0][0])
    return READINGS[0][0]


def _lr_name(lr: float) -> str:
    return f"lr{lr:g}"


def setting_of(arm: str, choices: dict, scale: Scale, long: bool = False) -> tuple[str, dict]:
    """(name, overrides) of the setting ARM runs with, given the choices made so far; `long`:
    ReKD's arms take the best reading of every ReKD search ('rekd_long'), as on the budget
    axis."""
    search = FOLLOWS.get(arm)
    if search is None:
        return "default", {}
    if long and search == "rekd":
        search = "rekd_long"
    name = choices.get(search) or default_choice(scale, search, choices)
    overrides = dict(readings(scale, search, choices)[name])
    if arm in ARM_RELATION:  # true-label relations: the miner's fields do not apply
        overrides = {k: v for k, v in overrides.items() if k not in MINER_FIELDS}
        name = name if overrides else "default"
    return name, overrides


def scale_default_seed() -> str:
    """The SEED setting of the released code (tau_s 0.2, tau_t 1e-4)."""
    return "tau_s_0.2_tau_t_0.0001"


def snapshot_arm_name(fraction: float) -> str:
    return f"teacher/mocov2_{round(100 * fraction)}pct"


def select_name(arm: str, variant: str, lr: float) -> str:
    """A grid run: ARM with setting VARIANT at peak lr LR, the full student budget."""
    return f"select/{arm}/{variant}/{_lr_name(lr)}"


def search_name(arm: str, variant: str) -> str:
    """A search run: ARM with setting VARIANT, scale.search_steps at the middle lr."""
    return f"search/{arm}/{variant}"


def middle_lr(scale: Scale) -> float:
    return scale.lr_grid[len(scale.lr_grid) // 2]


# The searches that follow the first one: search -> the arm it runs (rows search/<search>/...).
MORE_SEARCHES = {"space": "rekd_space", "rekd_long": "rekd"}


def edge_lr(scale: Scale) -> float:
    """One step above the top of the lr grid, at the grid's own ratio."""
    return round(scale.lr_grid[-1] ** 2 / scale.lr_grid[-2], 6)


def budget_name(arm: str, steps: int, seed: int) -> str:
    return f"budget/{arm}/{steps}/s{seed}"


def budget_arms_of(scale: Scale, extension: bool) -> tuple[str, ...]:
    """The budget axis's arms: rekd_space too when it beat ReKD's reading on validation."""
    return BUDGET_ARMS + (("rekd_space",) if extension else ())


STUDENT_ARMS = ("mocov2", "seed", "rekd")
