"""Would a threshold set on a few labelled recordings of a new stethoscope fix its scores?

On a database the model never heard (leave-one-database-out), the ranking carries over better than
the decision threshold: the scores of the new database sit elsewhere. A field team could label a few
dozen recordings from their own stethoscope and set the threshold there. This simulates that on the
left-out databases of `steth ablate` results (their ``lodo_scores``): draw ``n`` recordings of the
left-out database at random, choose the threshold that maximises MAcc on them, and score the other
recordings of that database at it; against the threshold chosen on the training databases, on the
same other recordings. Development data only, like the ablation it reads.

    python -m research.local_calibration RESULTS_DIR [--labelled 20,40] [--draws 300]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from converter.calibrate import choose_local
from converter.metrics import best_threshold, binary_scores


def simulate(
    labels: np.ndarray, scores: np.ndarray, transferred: float, n: int, draws: int, rng: np.random.Generator
) -> dict[str, float]:
    """Mean MAcc on the unlabelled rest: at a threshold set on ``n`` random labelled recordings, at
    the ``transferred`` one, and as `steth calibrate` would leave it (``guarded``: the local threshold
    only where cross-validation on the labelled recordings says it gains; ``adopted``: how often). A
    draw holding one label only keeps the transferred threshold (a team that labelled no abnormal
    recording has nothing to set it with)."""
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    local, kept, guarded, adopted = [], [], [], []
    for _ in range(draws):
        pick = np.zeros(len(labels), dtype=bool)
        pick[rng.choice(len(labels), size=n, replace=False)] = True
        rest_y, rest_s = labels[~pick], scores[~pick]
        if rest_y.min() == rest_y.max():
            continue  # the rest cannot be scored
        one_label = labels[pick].min() == labels[pick].max()
        threshold = transferred if one_label else best_threshold(labels[pick], scores[pick])
        local.append(binary_scores(rest_y, rest_s, threshold)["macc"])
        kept.append(binary_scores(rest_y, rest_s, transferred)["macc"])
        choice = choose_local(labels[pick], scores[pick], transferred, seed=len(local))  # rng's draws unchanged
        guarded.append(binary_scores(rest_y, rest_s, choice.threshold if choice.adopted else transferred)["macc"])
        adopted.append(choice.adopted)
    return {
        "local": float(np.mean(local)),
        "transferred": float(np.mean(kept)),
        "guarded": float(np.mean(guarded)),
        "adopted": float(np.mean(adopted)),
        "draws": len(local),
    }


def evaluate(results: list[dict[str, Any]], sizes: list[int], draws: int, seed: int = 0) -> dict[str, Any]:
    """Per left-out database and labelled-set size: mean over result files (seeds) of ``simulate``."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    databases = sorted({db for r in results for db in r.get("lodo_scores", {})})
    for db in databases:
        out[db] = {}
        runs = [r["lodo_scores"][db] for r in results if db in r.get("lodo_scores", {})]
        for n in sizes:
            usable = [s for s in runs if n < len(s["labels"]) - 1]
            if not usable:
                continue
            sims = [
                simulate(np.array(s["labels"]), np.array(s["scores"]), s["threshold"], n, draws, rng) for s in usable
            ]
            keys = ("local", "transferred", "guarded", "adopted")
            out[db][n] = {k: float(np.mean([x[k] for x in sims])) for k in keys}
    return out


def _cell(r: dict[str, float]) -> str:
    return f"{r['transferred']:.3f} -> {r['local']:.3f} / {r['guarded']:.3f} ({r['adopted']:.0%})"


def report(res: dict[str, Any], sizes: list[int]) -> str:
    lines = [
        "MAcc on the left-out database's other recordings: threshold from the training databases -> threshold set",
        "on the labelled ones / as `steth calibrate` leaves it (kept only where cross-validation shows a gain;",
        "in brackets: how often it was kept)",
        "",
    ]
    lines.append("| left-out database | " + " | ".join(f"{n} labelled" for n in sizes) + " |")
    lines.append("|---" * (len(sizes) + 1) + "|")
    for db, per in res.items():
        cells = [_cell(per[n]) if n in per else "–" for n in sizes]
        lines.append(f"| {db} | " + " | ".join(cells) + " |")
    # the mean only over databases large enough for every size, so the columns compare like with like
    full = [db for db, per in res.items() if all(n in per for n in sizes)]
    if full:
        cells = []
        for n in sizes:
            keys = ("transferred", "local", "guarded", "adopted")
            cells.append(_cell({k: float(np.mean([res[db][n][k] for db in full])) for k in keys}))
        names = ", ".join(db.removeprefix("training-") for db in full)
        lines.append(f"| mean over {names} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.local_calibration", description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="a `steth ablate --out` folder (result JSONs with lodo_scores)")
    parser.add_argument("--labelled", default="20,40", help="comma-separated numbers of labelled recordings")
    parser.add_argument("--draws", type=int, default=300)
    args = parser.parse_args(argv)
    results = [json.loads(p.read_text()) for p in sorted(args.results.glob("*-seed*.json"))]
    results = [r for r in results if "lodo_scores" in r]
    if not results:
        print(f"error: no result with lodo_scores in {args.results} (run `steth ablate` again)", file=sys.stderr)
        return 2
    sizes = [int(x) for x in args.labelled.split(",")]
    print(report(evaluate(results, sizes, args.draws), sizes))
    print(f"\n{len(results)} result file(s), {args.draws} random labelled sets each.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
