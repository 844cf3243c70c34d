"""The tuning section: validation loss vs learning rate per (arch, size, task) from the study=tune
runs (harness/tune.py), the chosen lr, a flag where it sits at the grid's edge, and which runs of the
other studies used a tuned lr (recipe_source.lr = "tuned")."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness import tune
from harness.report.figures import pyplot, save
from harness.report.frame import column
from harness.report.tables import md_table

LR_SOURCE = column("recipe_source.lr")  # load_runs flattens recipe_source one level


def tuning_table(results_dir) -> pd.DataFrame:
    rows = []
    for key, points in sorted(tune.tuning_points(results_dir).items()):
        c = tune.pick(points)
        rows.append({"arch/size/task": key, "best lr": c["lr"], "validation loss": c["val_loss"],
                     "grid": ", ".join(f"{x:g}" for x in c["grid"]),
                     "at the grid's edge": c["at_edge"] or "no (bracketed)", "training tokens": c["tokens"]})
    return pd.DataFrame(rows)


def tuning_plot(results_dir, out: Path) -> str | None:
    points = tune.tuning_points(results_dir)
    if not points:
        return None
    long = pd.DataFrame([{"model": k, **p} for k, ps in points.items() for p in ps])
    plt, sns = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=long, x="lr", y="val_loss", hue="model", marker="o", errorbar=None, ax=ax)
    ax.set_xscale("log")
    ax.set(title="study=tune: final validation loss vs peak learning rate", xlabel="learning rate (log scale)",
           ylabel="validation loss (nats / token)")
    return save(fig, out / "tuning_lr.png")


def tuning_section(df: pd.DataFrame, out: Path) -> list[str]:
    table = tuning_table(out)
    md = []
    if not table.empty:
        md += ["## Learning-rate tuning (`study=tune`)", "",
               "Each arch over a log grid of peak learning rates at a small budget, picked by the final "
               "validation loss; the choice is in `tuned_recipes.json` and later runs in this folder use it. "
               "A best value at the grid's edge was not bracketed: widen the grid.", "", md_table(table), ""]
        name = tuning_plot(out, out)
        md += [f"![{name}]({name})", ""] if name else []
    src = df.get(LR_SOURCE)
    if src is not None:
        tuned = df[src == "tuned"]
        if not tuned.empty:
            models = sorted({f"{a}/{s}" for a, s in zip(tuned["arch"], tuned["size"])})
            md += [f"Runs at their tuned learning rate (from study=tune): {', '.join(models)} "
                   f"({len(tuned)} records); the others use their preset's recipe or a value given explicitly.", ""]
    return md
