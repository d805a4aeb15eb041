"""Training one model on windows of a FeatureSet, and scoring recordings with it.

Sampling is what makes the model generalise across stethoscopes: every epoch draws the same number of
windows from each label within each database (databases weighted by the square root of their size), one
random window of a random recording at a time. A database's identity therefore says nothing about the
label, and training-e (two thirds of the recordings, mostly normal, and separable by its recording set-up
alone) cannot teach the model that "sounds like training-e" means "normal".

Balanced sampling stops the database from predicting the label; it does not stop the model from
spending capacity on what identifies a database. With ``domain_adversarial > 0`` a second head learns
to name each window's database through a gradient reversal layer, so the shared layers are trained to
make that impossible (see models.build). Only the label branch is returned and saved.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from converter import models
from converter.featurestore import FeatureSet
from device.core.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 16
    windows_per_epoch: int = 11000
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0
    # gradient reversal factor of the database head; 0 trains the label head alone
    domain_adversarial: float = 0.0
    # share of training windows given one time mask and one coefficient mask (SpecAugment); 0: none
    masking: float = 0.0
    # where the database head reads: "rnn" (the recurrent layer's output) or "conv" (conv_lstm's front end)
    domain_from: str = "rnn"
    # "DB=FACTOR,...": scales a database's share of the draws (WindowSampler); 0 leaves it out of training
    database_scale: str = ""
    # ship the mean of the weights of the last N epochs instead of the best epoch on validation (0: off)
    average_last: int = 0
    # clip the LSTM's cell state to +-this (0: plain LSTM); tried for int8 fidelity, did not help (models._lstm)
    cell_clip: float = 0.0
    # weight decay on the LSTM's kernels (0: none): int8 followed the float model more closely (models._lstm)
    lstm_l2: float = 0.0
    # labels of the draws within a database: "balanced" (equal, the default: the score carries no database's
    # prevalence) or "natural" (the database's own mix; research/label_mix)
    label_mix: str = "balanced"

    def __post_init__(self) -> None:
        if self.label_mix not in LABEL_MIXES:
            raise ConfigError(f"label_mix={self.label_mix!r} must be one of {', '.join(LABEL_MIXES)}")
        if self.domain_from not in models.DOMAIN_SOURCES:
            raise ConfigError(f"domain_from={self.domain_from!r} must be one of {', '.join(models.DOMAIN_SOURCES)}")
        if not 0 <= self.average_last <= self.epochs:
            raise ConfigError(f"average_last={self.average_last} must be between 0 and epochs={self.epochs}")
        self.scales()  # fails now, not mid-run

    def scales(self) -> dict[str, float]:
        """``database_scale`` as a mapping: database -> factor (>= 0) on its share of the draws."""
        out: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in self.database_scale.split(","))):
            name, sep, raw = item.partition("=")
            try:
                factor = float(raw)
            except ValueError:
                factor = -1.0
            if not sep or not name.strip() or not factor >= 0:
                raise ConfigError(
                    f"database_scale={self.database_scale!r}: {item!r} is not DB=FACTOR with FACTOR >= 0",
                    "write e.g. database_scale=training-e=0.25",
                )
            out[name.strip()] = factor
        return out


LABEL_MIXES = ("balanced", "natural")


def database_shares(strata: np.ndarray, scale: dict[str, float] | None = None) -> dict[str, float]:
    """Each database's share of the training draws (not normalised): the square root of its number of
    recordings, times ``scale``'s factor where it names the database."""
    names, counts = np.unique(np.asarray(strata), return_counts=True)
    return {str(g): float(np.sqrt(c)) * (scale or {}).get(str(g), 1.0) for g, c in zip(names, counts, strict=True)}


class WindowSampler:
    """Stratified window draws: equal labels within each database (``label_mix="natural"``: the database's
    own mix), databases by sqrt(size) (times ``scale``'s factor for the databases it names)."""

    def __init__(
        self,
        sets: Sequence[FeatureSet],
        y: np.ndarray,
        strata: np.ndarray,
        records: np.ndarray,
        scale: dict[str, float] | None = None,
        label_mix: str = "balanced",
    ) -> None:
        self.sets = sets
        self.label_mix = label_mix
        self.y, self.strata = y, strata
        self.scale = scale or {}
        self.records = np.asarray(records)
        # windows of each recording in each set: (set index, window index) pairs
        self.windows: dict[int, list[tuple[int, np.ndarray]]] = {int(r): [] for r in self.records}
        for si, fs in enumerate(sets):
            order = np.argsort(fs.owner, kind="stable")
            owners = fs.owner[order]
            starts = np.searchsorted(owners, self.records, side="left")
            ends = np.searchsorted(owners, self.records, side="right")
            for r, a, b in zip(self.records, starts, ends, strict=True):
                if b > a:
                    self.windows[int(r)].append((si, order[a:b]))
        self.records = np.array([r for r in self.records if self.windows[int(r)]], dtype=int)

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` windows (about), their labels and the index of their group in sorted(strata)."""
        groups = sorted(set(self.strata[self.records]))
        shares = database_shares(self.strata[self.records], self.scale)
        total = sum(shares.values())
        if total <= 0:
            raise ConfigError("database_scale leaves no database to train on", "give some database a factor > 0")
        xs, ys, gs = [], [], []
        for gi, g in enumerate(groups):
            if shares[str(g)] <= 0:
                continue
            in_group = self.records[self.strata[self.records] == g]
            labels = sorted(set(self.y[in_group]))
            for lab in labels:
                pool = in_group[self.y[in_group] == lab]
                # balanced: each label an equal part of the database's draws; natural: its own share
                if self.label_mix == "balanced":
                    count = max(1, int(n * shares[str(g)] / total / len(labels)))
                else:
                    count = max(1, int(n * shares[str(g)] / total * len(pool) / len(in_group)))
                for r in pool[rng.integers(0, len(pool), count)]:
                    si, wins = self.windows[int(r)][rng.integers(0, len(self.windows[int(r)]))]
                    xs.append(self.sets[si].features[wins[rng.integers(0, len(wins))]])
                    ys.append(lab)
                    gs.append(gi)
        perm = rng.permutation(len(xs))
        return np.stack(xs)[perm], np.asarray(ys)[perm], np.asarray(gs)[perm]


def mask_windows(x: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """SpecAugment-style masks on a batch of (frames, coefficients) windows, a copy.

    A ``share`` of the windows each lose a run of up to a fifth of their frames (a heart sound drowned
    by a bump or a cough) and a band of up to a fifth of their coefficients (a stethoscope that does not
    pass that band), both set to 0, the per-window mean after CMVN. The model thereby cannot lean on any
    one moment or band of a window.
    """
    out = x.copy()
    n, frames, coefs = x.shape
    for i in np.flatnonzero(rng.random(n) < share):
        t = int(rng.integers(0, frames // 5 + 1))
        t0 = int(rng.integers(0, frames - t + 1))
        out[i, t0 : t0 + t, :] = 0
        f = int(rng.integers(0, coefs // 5 + 1))
        f0 = int(rng.integers(0, coefs - f + 1))
        out[i, :, f0 : f0 + f] = 0
    return out


class WeightAverage:
    """The mean of several epochs' weights (SWA; SWAD for domain generalisation, Cha et al. 2021).

    The mean of several late epochs lies in a flatter region of the loss than any one of them, which
    is what transfers to unseen domains; and it does not hang on a validation score of a few dozen
    recordings per database, as picking the best epoch does.
    """

    def __init__(self) -> None:
        self.count = 0
        self._sum: list[np.ndarray] = []

    def add(self, weights: list[np.ndarray]) -> None:
        if self.count == 0:
            self._sum = [np.array(w, dtype=np.float64) for w in weights]
        else:
            for i, w in enumerate(weights):
                self._sum[i] += w
        self.count += 1

    def mean(self) -> list[np.ndarray]:
        return [(total / self.count).astype(np.float32) for total in self._sum]


def record_probabilities(model: Any, fs: FeatureSet, records: np.ndarray, n_classes: int) -> np.ndarray:
    """(len(records), n_classes): the mean window probabilities of each recording (uniform if it has none)."""
    records = np.asarray(records)
    wins = fs.windows_of(records)
    out = np.full((len(records), n_classes), 1.0 / n_classes)
    if len(wins) == 0:
        return out
    p = model.predict(fs.features[wins], batch_size=512, verbose=0)
    owners = fs.owner[wins]
    pos = {int(r): i for i, r in enumerate(records)}
    sums = np.zeros((len(records), n_classes))
    counts = np.zeros(len(records))
    for o, row in zip(owners, p, strict=True):
        sums[pos[int(o)]] += row
        counts[pos[int(o)]] += 1
    has = counts > 0
    out[has] = sums[has] / counts[has, None]
    return out


def val_score(y: np.ndarray, probs: np.ndarray, strata: np.ndarray) -> float:
    """Selection score on validation recordings: AUC (binary) or balanced accuracy, averaged over strata."""
    from converter.metrics import roc_auc

    scores = []
    for g in np.unique(strata):
        m = strata == g
        if probs.shape[1] == 2:
            auc = roc_auc(y[m], probs[m, 1])
            if not np.isnan(auc):
                scores.append(auc)
        else:
            pred = probs[m].argmax(1)
            recalls = [np.mean(pred[y[m] == c] == c) for c in np.unique(y[m])]
            scores.append(float(np.mean(recalls)))
    return float(np.mean(scores)) if scores else float("nan")


def fit(
    arch: str,
    *,
    train_sets: Sequence[FeatureSet],
    eval_set: FeatureSet,
    y: np.ndarray,
    strata: np.ndarray,
    fit_records: np.ndarray,
    val_records: np.ndarray,
    n_classes: int,
    settings: TrainSettings,
) -> tuple[Any, np.ndarray, list[float]]:
    """Train ``arch``; keep the epoch with the best validation score. Returns (model, val probs, history)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    k = models.keras()
    input_shape = train_sets[0].features.shape[1:]
    sampler = WindowSampler(train_sets, y, strata, fit_records, settings.scales(), settings.label_mix)
    n_domains = len(set(strata[sampler.records]))
    adversarial = settings.domain_adversarial > 0 and n_domains > 1
    trained = models.build(
        arch,
        tuple(input_shape),
        n_classes,
        domains=n_domains if adversarial else 0,
        reversal=settings.domain_adversarial,
        domain_from=settings.domain_from,
        cell_clip=settings.cell_clip,
        lstm_l2=settings.lstm_l2,
    )
    trained.compile(k.optimizers.Adam(settings.learning_rate), "sparse_categorical_crossentropy")
    model = models.label_branch(trained) if adversarial else trained
    best: tuple[float, Any, int] = (-np.inf, None, -1)
    averaged = WeightAverage()  # of the last ``average_last`` epochs
    history: list[float] = []
    t0 = time.monotonic()
    lr = settings.learning_rate
    for epoch in range(settings.epochs):
        # step decay over the last third: a calmer finish without a schedule to tune
        if epoch == (2 * settings.epochs) // 3:
            lr /= 4
            trained.optimizer.learning_rate.assign(lr)
        x, t, d = sampler.draw(settings.windows_per_epoch, rng)
        if settings.masking > 0:
            x = mask_windows(x, settings.masking, rng)
        trained.fit(x, [t, d] if adversarial else t, batch_size=settings.batch_size, epochs=1, verbose=0, shuffle=False)
        score = val_score(
            y[val_records], record_probabilities(model, eval_set, val_records, n_classes), strata[val_records]
        )
        history.append(score)
        if score > best[0]:
            best = (score, model.get_weights(), epoch)
        if settings.average_last and epoch >= settings.epochs - settings.average_last:
            averaged.add(model.get_weights())
        log.info("%s epoch %d: validation %.3f (%.0f s)", arch, epoch, score, time.monotonic() - t0)
    if averaged.count:
        model.set_weights(averaged.mean())
    elif best[1] is not None:
        model.set_weights(best[1])
    return model, record_probabilities(model, eval_set, val_records, n_classes), history
