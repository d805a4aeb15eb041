"""One-off: write the recordings each shipped model (screening 0.4.0, sound_type 0.2.0) trained on into its
sidecar, so `steth evaluate` can warn. `steth train` held out fold 0 of ds.split_folds(recordings, 5, seed=0)
(converter.train.splits with the default RunConfig); the held-out counts match the sidecars (553, 129)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from converter import datasets as ds
from converter.tasks import TASKS

MODELS = Path(__file__).resolve().parents[2] / "device" / "models"

for name in ("screening", "sound_type"):
    recs = TASKS[name].loader(Path("/work/shared/data"))
    folds = np.array(ds.split_folds(recs, 5, seed=0))
    path = MODELS / f"{name}.json"
    meta = json.loads(path.read_text())
    meta["training_recordings"] = sorted(r.record_id for r, f in zip(recs, folds, strict=True) if f != 0)
    path.write_text(json.dumps(meta, indent=1) + "\n")
    print(name, len(meta["training_recordings"]), "training recordings of", len(recs))
