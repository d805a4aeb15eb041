"""The settings of one `steth train` run (and of each `steth ablate` variant), apart from the training loop's."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from converter.tasks import DEFAULT_TASK, Task
from converter.trainer import TrainSettings
from device.core.features import FeatureParams


@dataclass
class RunConfig:
    task: str = DEFAULT_TASK  # a shipped task's name or a task definition file (converter/tasks.py)
    archs: tuple[str, ...] = ("simplernn", "lstm", "conv_lstm")
    folds: int = 5
    test_fraction: float = 0.2
    val_fraction: float = 0.15
    train_hop_s: float = 1.25  # training windows overlap more than inference ones: shifted views
    augment_copies: int = 1
    lodo: bool = True
    # score the final (and cross-source) models on the held-out test split (`steth train --score-test`);
    # off: they are trained and saved, the split stays unseen (issue 23)
    score_test: bool = False
    # keep every CV model (and the comparator's) in RUN/folds/: `steth ensemble --transfer-threshold` carries
    # the threshold validated on them over to the final models (docs/screening_all_sources/ensemble)
    save_folds: bool = False
    limit_per_stratum: int | None = None  # for quick runs on a slice of the data
    jobs: int = 1  # models trained at once, each in its own process with one thread
    settings: TrainSettings = field(default_factory=TrainSettings)
    # multi-source tasks: the chosen architecture trained once without each of these sources and (with
    # score_test) scored on the test split (cross-source transfer, reported only)
    cross_source: tuple[str, ...] = ("circor2022", "physionet2016")
    # multi-source tasks: the source left out of the comparator's CV (the plain model of the ship
    # decision, train.ship_decision); "" runs none
    comparator_without: str = "circor2022"
    ship_margin: float = 0.02  # how far below the comparator's PhysioNet CV MAcc the candidate may be
    # FeatureParams fields that differ from the task's (`steth ablate --set features.X=...` only: a
    # shipped model's features are the task's, which the device reads from the sidecar)
    features: dict[str, Any] = field(default_factory=dict)

    def params(self, task: Task) -> FeatureParams:
        return replace(task.params, **self.features) if self.features else task.params
