"""The plots' shared style: one colour per method in every figure (the run report's and the
study's), the random-init label, and the chance and architecture line styles."""

from __future__ import annotations

RANDOM_INIT = "random init"

# One colour per method, the same in every figure (the keys are what
# rekd_jax.tools.run_files.method_name returns).
METHOD_COLOURS = {
    RANDOM_INIT: "#8c8c8c",
    "MoCo v2": "#1f77b4",
    "SEED": "#2ca02c",
    "ReKD (offline)": "#d62728",
    "ReKD (online)": "#ff7f0e",
    "ReKD (oracle relations)": "#9467bd",
    "SupCon (oracle)": "#8c564b",
    "supervised": "#e377c2",
    "ReKD (supervised teacher)": "#bcbd22",
    "SEED (supervised teacher)": "#98df8a",
    "ReKD (k oracle relations)": "#c5b0d5",
    "ReKD (teacher's space)": "#ff9896",
    "teacher": "#000000",
}
OTHER_COLOUR = "#17becf"  # a method without an entry
SAME_CLASS_COLOUR, DIFFERENT_CLASS_COLOUR = "#1b9e77", "#969696"
CHANCE_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.0, "alpha": 0.7}
ARCH_LINESTYLES = ("-", "--", ":", "-.")


def method_colour(name: str) -> str:
    """The colour of a method (a `run_files.method_name`) in every figure."""
    return METHOD_COLOURS.get(name, OTHER_COLOUR)
