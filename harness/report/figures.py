"""Plotting helpers: the seaborn theme every figure uses, readable log ticks, and the one
figure-saving helper (PNG at 120 dpi, then the figure is closed)."""
from __future__ import annotations

from pathlib import Path

from archbench.files import atomic_target


def pyplot():
    """matplotlib.pyplot and seaborn, with the headless backend and the report's theme set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def save(fig, path: Path, ax=None) -> str:
    """Every report figure ends the same way: (readable log ticks on ``ax`` when given,) tight
    layout, a PNG, closed. Returns the file name, for the markdown link."""
    import matplotlib.pyplot as plt

    if ax is not None:
        tidy_log_axes(ax)
    fig.tight_layout()
    try:
        with atomic_target(path) as tmp:  # whole PNG or the old one, never half
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)
    return Path(path).name


def tidy_log_axes(ax) -> None:
    """Readable ticks on log axes: no crowded minor labels on x, plain numbers on y."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if ax.get_xscale() == "log":
        lo, hi = ax.get_xlim()
        if hi / lo < 1e3:  # a few decades: label 1, 2, 5 of each
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: si(v)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    if ax.get_yscale() == "log":
        plain = FuncFormatter(lambda v, _: f"{v:,.3g}" if v < 1e4 else si(v))
        lo, hi = ax.get_ylim()
        ax.yaxis.set_major_formatter(plain)
        # within one decade the minor ticks are the only labels; across decades they crowd
        ax.yaxis.set_minor_formatter(plain if hi / lo < 10 else NullFormatter())


def si(v: float) -> str:
    """1.2k, 50M, 3T: short tick labels for counts spanning decades."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def image_links(names: list[str]) -> list[str]:
    """Markdown lines linking each written PNG."""
    md = []
    for name in names:
        md += [f"![{name}]({name})", ""]
    return md
