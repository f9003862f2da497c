"""The parts every report figure shares: pyplot on the Agg backend, the dashed chance line, the
axes' title and labels, histogram bins fitted to the data, and saving a figure to a file."""

from __future__ import annotations

import os

import numpy as np

from rekd_jax.tools.plot_style import CHANCE_STYLE


def pyplot():
    """matplotlib.pyplot, on the Agg backend."""
    # Here, not at the top: matplotlib is slow to import, and the Agg backend is chosen only
    # when a figure is drawn (a notebook keeps its own).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_chance(ax, value: float | None, text: str = "chance") -> None:
    """The dashed horizontal chance line, named at its right end."""
    if value is None:
        return
    ax.axhline(value, **CHANCE_STYLE)
    ax.text(
        1.0,
        value,
        f"{text} ",
        transform=ax.get_yaxis_transform(),
        ha="right",
        va="bottom",
        fontsize=7,
        alpha=0.8,
    )


def style_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def save(fig, out: str) -> str:
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")  # a legend outside the panels included
    pyplot().close(fig)
    return out


def fitted_bins(*samples: np.ndarray, count: int = 60) -> np.ndarray:
    """Histogram bin edges spanning the samples' range (plus a small margin), not -1..1."""
    low = min(float(s.min()) for s in samples if s.size)
    high = max(float(s.max()) for s in samples if s.size)
    margin = max(1e-3, 0.02 * (high - low))
    return np.linspace(low - margin, high + margin, count + 1)
