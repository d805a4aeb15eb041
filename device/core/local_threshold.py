"""A decision threshold set on a kit's own labelled recordings (`steth calibrate`), and its checks.

The file ``MODEL.threshold.json`` in ``models.threshold_dir`` names the model it was set for by sha256.
A threshold only means something for the scores of that exact model, so a file for another model is an
error at start-up, not a silent fallback: after a model upgrade the kit must be calibrated again (or the
file removed), and the person doing it is told so. Every result decided at a local threshold carries it
(``decision`` in the result message), so a physician sees which threshold gave the answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from device.core.errors import ModelError

SUFFIX = ".threshold.json"


@dataclass(frozen=True)
class LocalThreshold:
    model_name: str
    model_version: str
    model_sha256: str
    threshold: float  # on the model's raw score, the scale of the sidecar's "threshold"
    model_threshold: float
    labelled: dict[str, int]  # {"normal": n, "abnormal": n}
    macc_model: float  # on the labelled recordings, at the model's own threshold
    macc_local_cv: float  # cross-validated, at a threshold set on the other folds
    set_at: str

    def write(self, folder: Path) -> Path:
        """Write ``folder/MODEL.threshold.json`` atomically (a crash leaves the old file or the new one)."""
        folder.mkdir(parents=True, exist_ok=True)
        path = path_for(folder, self.model_name)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(asdict(self), handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return path

    def decision(self) -> dict[str, Any]:
        """What a result decided at this threshold says about it (result contract: ``decision``)."""
        return {
            "source": "local",
            "threshold": self.threshold,
            "model_threshold": self.model_threshold,
            "labelled": dict(self.labelled),
            "set_at": self.set_at,
        }


def path_for(folder: Path, model_name: str) -> Path:
    return folder / f"{model_name}{SUFFIX}"


def load(folder: Path, model_name: str, model_sha256: str) -> LocalThreshold | None:
    """The local threshold for this model, None if the folder has none for it; ModelError if unusable
    (a folder that does not exist is a mistyped setting, not "no threshold")."""
    if not folder.is_dir():
        raise ModelError(
            f"threshold folder {folder} does not exist or is not a folder",
            "give the folder `steth calibrate --out` wrote to (models.threshold_dir), or leave it unset",
        )
    path = path_for(folder, model_name)
    fix = f"run `steth calibrate` again for this model, or remove {path} to use the model's own threshold"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelError(f"local threshold {path}: cannot read it ({exc})", fix) from exc
    try:
        local = LocalThreshold(
            model_name=str(raw["model_name"]),
            model_version=str(raw["model_version"]),
            model_sha256=str(raw["model_sha256"]),
            threshold=float(raw["threshold"]),
            model_threshold=float(raw["model_threshold"]),
            labelled={"normal": int(raw["labelled"]["normal"]), "abnormal": int(raw["labelled"]["abnormal"])},
            macc_model=float(raw["macc_model"]),
            macc_local_cv=float(raw["macc_local_cv"]),
            set_at=str(raw["set_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"local threshold {path}: incomplete ({exc!r} missing or wrong)", fix) from exc
    if not 0.0 < local.threshold < 1.0:
        raise ModelError(f"local threshold {path}: {local.threshold} is not between 0 and 1", fix)
    if local.model_sha256 != model_sha256:
        raise ModelError(
            f"local threshold {path} was set for {local.model_name} {local.model_version} "
            f"({local.model_sha256[:12]}), not for the installed model ({model_sha256[:12]})",
            fix,
        )
    return local


def problems(folder: Path, model_names: Sequence[str]) -> list[str]:
    """What `steth device validate-config` reports: threshold files the device would refuse at start-up.

    Reads the models' descriptions only (no interpreter), so the installer can check before a restart.
    """
    from device.core.inference import describe_model

    found = []
    for name in model_names:
        try:
            path, meta = describe_model(name)
        except ModelError:
            continue  # a missing model is the model's problem, reported when the device loads it
        try:
            load(folder, str(meta.get("name", path.stem)), str(meta.get("sha256", "")))
        except ModelError as exc:
            found.append(f"models.threshold_dir: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
    return found
