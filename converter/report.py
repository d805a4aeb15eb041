"""Figures and tables for the model card."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any


def boxplot(rows: list[dict[str, Any]], path: Path, task: str) -> None:
    """One panel per metric, one box per architecture (CV folds), for scopes 'all' and 'not_e'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # a binary task's rows carry MAcc (train._rows); a multi-class task's, a recall per class
    metrics = (
        ["sensitivity", "specificity", "macc", "accuracy", "auc"]
        if any("macc" in r for r in rows)
        else sorted({k for r in rows for k in r if k.startswith("recall_")} | {"accuracy"})
    )
    scopes = ["all", "not_e"] if any(r["scope"] == "not_e" for r in rows) else ["all"]
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    fig, axes = plt.subplots(len(scopes), len(metrics), figsize=(3 * len(metrics), 3.2 * len(scopes)), squeeze=False)
    for i, scope in enumerate(scopes):
        for j, metric in enumerate(metrics):
            data: dict[str, list[float]] = defaultdict(list)
            for r in rows:
                if r["scope"] == scope and r.get(metric) is not None:
                    data[r["arch"]].append(float(r[metric]))
            ax = axes[i][j]
            ax.boxplot([data[a] for a in archs], tick_labels=archs)
            ax.set_title(f"{metric} ({'all databases' if scope == 'all' else 'without training-e'})", fontsize=8)
            ax.set_ylim(0, 1.02)
            ax.tick_params(axis="x", labelsize=7, rotation=20)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{task}: cross-validation folds per architecture")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
