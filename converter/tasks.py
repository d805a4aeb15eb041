"""Classification tasks as data: which data, which labels, which features, which decision rules.

A task is a TOML file (converter/task_definitions/NAME.toml ships screening and sound_type; `steth train
--task path/to/task.toml` takes any other). Nothing in the code knows a task by name: what differs
between tasks (labels, positive label, label maps per data set, feature settings, out-of-domain checks,
labels answered as *unsure*) is in its definition, and a trained run carries its definition along
(report.json "task_definition") so `steth convert` can write the model's sidecar from it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from converter import circor as cc
from converter import datasets as ds
from device.core.errors import ConfigError
from device.core.features import FeatureParams

# The data sets a task can name, and how to read each (datasets.py).
LOADERS: dict[str, Callable[[Path], list[ds.Recording]]] = {
    ds.PHYSIONET: ds.load_physionet2016,
    ds.PASCAL: ds.load_pascal2011,
    cc.CIRCOR: cc.load_task_recordings,
}
DEFINITIONS = "task_definitions"


@dataclass(frozen=True)
class Check:
    """An out-of-domain check: the final model scored once on recordings it was not developed on."""

    name: str
    dataset: str
    subsets: tuple[str, ...] = ()


# How a data set's recordings are split off for the test split (`[split.<data set>]` of a task):
# "blocks": converter.datasets.split_folds on that data set alone (blocks of consecutive records, strata
#   database and label), fold 0 of round(1/fraction) held out, with the rule's own seed;
# "patients": converter.circor.split_patients over every development patient (linked patients together,
#   stratified by the patient's murmur), the same call the murmur model's test split comes from;
# "train_only": never held out.
SPLIT_RULES = ("blocks", "patients", "train_only")


@dataclass(frozen=True)
class SplitRule:
    rule: str
    fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class Split:
    """A task's own test split, fixed per data set, so it does not move with the run's seed or with which
    other data sets are loaded (a run with one source left out holds out the same recordings)."""

    rules: Mapping[str, SplitRule]

    def held_out(self, recordings: list[ds.Recording], root: Path) -> np.ndarray:
        """True for each recording in the test split."""
        out = np.zeros(len(recordings), dtype=bool)
        for name, rule in self.rules.items():
            idx = [i for i, r in enumerate(recordings) if r.dataset == name]
            if not idx or rule.rule == "train_only":
                continue
            if rule.rule == "blocks":
                k = max(2, round(1 / rule.fraction))
                folds = ds.split_folds([recordings[i] for i in idx], k, seed=rule.seed)
                out[[i for i, f in zip(idx, folds, strict=True) if f == 0]] = True
            else:
                groups = self.test_groups(name, root)
                out[[i for i in idx if recordings[i].group in groups]] = True
        return out

    def test_groups(self, name: str, root: Path) -> set[str]:
        """The held-out groups of a "patients" data set, from all its development patients (also those
        this task leaves out, e.g. Unknown murmur), so the split is the murmur model's."""
        rule = self.rules[name]
        _, test = cc.split_patients(cc.load_circor2022(root), rule.fraction, rule.seed)
        return {r.group for r in test}

    def to_dict(self) -> dict[str, Any]:
        return {k: {"rule": v.rule, "fraction": v.fraction, "seed": v.seed} for k, v in self.rules.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Split:
        return cls(
            {
                str(k): SplitRule(str(v["rule"]), float(v.get("fraction", 0.2)), int(v.get("seed", 0)))
                for k, v in data.items()
            }
        )


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, ...]
    positive: str | None  # binary tasks: the label whose probability is thresholded
    params: FeatureParams
    description: str
    # data set -> {its label: this task's label}; a label not named leaves the recording out
    label_map: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    train_on: tuple[str, ...] = ()  # the data sets it is trained on (the others only evaluated)
    # `steth train`'s default gradient reversal factor for the database head (0: none); see trainer
    domain_adversarial: float = 0.0
    title: str = ""
    unsure_labels: tuple[str, ...] = ()  # labels answered as *unsure* (record again), e.g. an artifact
    checks: tuple[Check, ...] = ()
    # the model families `steth train` compares by cross-validation (converter/models.py)
    architectures: tuple[str, ...] = ("simplernn", "lstm", "conv_lstm")
    # the task's own test split per data set; None: `steth train` holds out blocks of all data sets with
    # the run's seed (the tasks before issue 23)
    split: Split | None = None

    def label_of(self, rec: ds.Recording) -> str | None:
        """This task's label for a recording, None when the task leaves it out."""
        return self.label_map.get(rec.dataset, {}).get(rec.label or "")

    def label_index(self, rec: ds.Recording) -> int:
        label = self.label_of(rec)
        if label is None:
            raise ConfigError(f"{rec.key}: label {rec.label!r} is not one of task {self.name}'s")
        return self.labels.index(label)

    def relabel(self, recs: list[ds.Recording]) -> list[ds.Recording]:
        """The recordings this task has a label for, carrying that label."""
        out = []
        for r in recs:
            label = self.label_of(r)
            if label is not None:
                out.append(r if label == r.label else replace(r, label=label))
        return out

    def loader(self, root: Path) -> list[ds.Recording]:
        """The training recordings (with their data sets' own labels) of the data sets it is trained on."""
        return [r for name in self.train_on for r in LOADERS[name](root) if self.label_of(r) is not None]

    def check_recordings(self, check: Check, root: Path) -> list[ds.Recording]:
        recs = LOADERS[check.dataset](root)
        return [r for r in recs if (not check.subsets or r.subset in check.subsets) and self.label_of(r) is not None]

    def to_dict(self) -> dict[str, Any]:
        """The definition as a run's report.json carries it (and as a TOML file would hold it)."""
        defaults = FeatureParams().to_dict()
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "labels": list(self.labels),
            **({"positive": self.positive} if self.positive is not None else {}),
            "unsure_labels": list(self.unsure_labels),
            "train_on": list(self.train_on),
            "domain_adversarial": self.domain_adversarial,
            "features": {k: v for k, v in self.params.to_dict().items() if defaults[k] != v},
            "label_map": {k: dict(v) for k, v in self.label_map.items()},
            "checks": [{"name": c.name, "dataset": c.dataset, "subsets": list(c.subsets)} for c in self.checks],
            "architectures": list(self.architectures),
            **({"split": self.split.to_dict()} if self.split is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "task definition") -> Task:
        try:
            labels = tuple(str(x) for x in data["labels"])
            task = cls(
                name=str(data["name"]),
                labels=labels,
                positive=data.get("positive"),
                params=FeatureParams.from_dict(dict(data.get("features", {})))
                if data.get("features")
                else FeatureParams(),
                description=str(data.get("description", "")),
                label_map={str(k): {str(a): str(b) for a, b in v.items()} for k, v in data["label_map"].items()},
                train_on=tuple(str(x) for x in data["train_on"]),
                domain_adversarial=float(data.get("domain_adversarial", 0.0)),
                title=str(data.get("title") or data["name"]),
                unsure_labels=tuple(str(x) for x in data.get("unsure_labels", ())),
                checks=tuple(
                    Check(str(c["name"]), str(c["dataset"]), tuple(str(s) for s in c.get("subsets", ())))
                    for c in data.get("checks", ())
                ),
                **({"architectures": tuple(str(a) for a in data["architectures"])} if "architectures" in data else {}),
                split=Split.from_dict(data["split"]) if data.get("split") else None,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"{source}: incomplete task definition ({exc!r})", "see converter/task_definitions/"
            ) from exc
        problems = [f"unknown data set {d!r}" for d in (*task.train_on, *task.label_map) if d not in LOADERS]
        problems += [
            f"positive label {task.positive!r} is not a label" for _ in [0] if task.positive not in (None, *labels)
        ]
        problems += [
            f"{d}: {a!r} maps to {b!r}, not a label"
            for d, m in task.label_map.items()
            for a, b in m.items()
            if b not in labels
        ]
        problems += [f"no label map for {d}" for d in task.train_on if d not in task.label_map]
        if task.split is not None:
            problems += [f"split: unknown data set {d!r}" for d in task.split.rules if d not in LOADERS]
            problems += [f"split: no rule for {d}" for d in task.train_on if d not in task.split.rules]
            problems += [
                f"split.{d}: rule {r.rule!r} is not one of {', '.join(SPLIT_RULES)}"
                for d, r in task.split.rules.items()
                if r.rule not in SPLIT_RULES
            ]
            problems += [
                f"split.{d}: fraction {r.fraction} is not between 0 and 1"
                for d, r in task.split.rules.items()
                if not 0 < r.fraction < 1
            ]
            problems += [
                f"split.{d}: the patients rule is CirCor's"
                for d, r in task.split.rules.items()
                if r.rule == "patients" and d != cc.CIRCOR
            ]
        if task.positive is not None and len(labels) != 2:
            problems.append("a positive label needs exactly two labels")
        if problems:
            raise ConfigError(f"{source}: " + "; ".join(problems), "see converter/task_definitions/ for examples")
        return task


def load_task(path: Path) -> Task:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable task definition ({exc})") from exc
    return Task.from_dict(data, str(path))


def _shipped() -> dict[str, Task]:
    folder = resources.files("converter").joinpath(DEFINITIONS)
    tasks = [load_task(Path(str(p))) for p in folder.iterdir() if p.name.endswith(".toml")]
    return {t.name: t for t in sorted(tasks, key=lambda t: t.name)}


TASKS = _shipped()
DEFAULT_TASK = "screening"


def get_task(spec: str) -> Task:
    """A shipped task by name, or a task definition file (.toml)."""
    if spec in TASKS:
        return TASKS[spec]
    if spec.endswith(".toml"):
        return load_task(Path(spec))
    raise ConfigError(f"unknown task {spec!r}", f"use one of {', '.join(TASKS)} or a task definition file (.toml)")


def task_of_run(report: Mapping[str, Any]) -> Task:
    """The task a `steth train` run was trained for: its own definition (older runs: the shipped one)."""
    if isinstance(report.get("task_definition"), Mapping):
        return Task.from_dict(report["task_definition"], "report.json task_definition")
    return get_task(str(report["task"]))


def task_of_model(meta: Mapping[str, Any]) -> Task:
    """The task a shipped model was trained for, from its sidecar: its own definition when the sidecar
    carries one, the shipped task of that name, or else its labels taken as they are in every data set."""
    if isinstance(meta.get("task_definition"), Mapping):
        return Task.from_dict(meta["task_definition"], f"model {meta.get('name')} task_definition")
    if meta.get("task") in TASKS:
        return TASKS[str(meta["task"])]
    labels = tuple(str(x) for x in meta["labels"])
    identity = {label: label for label in labels}
    return Task(
        name=str(meta.get("task", "?")),
        labels=labels,
        positive=meta.get("positive_label"),
        params=FeatureParams.from_dict(dict(meta["feature_params"])),
        description="",
        label_map={d: identity for d in LOADERS},
    )
