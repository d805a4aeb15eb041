"""`--set KEY=VALUE`: a run, training or feature setting given on the command line (`steth train`, `steth ablate`).

Product code both commands share; it imports neither (the old home, converter.ablation, imported
converter.train, which imported it back).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from converter.run_config import RunConfig
from converter.trainer import TrainSettings
from device.core.errors import ConfigError
from device.core.features import FeatureParams

__all__ = ["parse_overrides", "with_overrides"]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs naming a RunConfig, TrainSettings or (``features.X``) FeatureParams field."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        owner: Any = FeatureParams() if key.startswith("features.") else None
        field_name = key.removeprefix("features.")
        if owner is None:
            owner = next((o for o in (RunConfig(), TrainSettings()) if field_name in {f.name for f in fields(o)}), None)
        names = {f.name for f in fields(owner)} if owner is not None else set()
        if not sep or field_name not in names or field_name in _NOT_SETTABLE:
            raise ConfigError(
                f"--set {item!r}: not a setting that can be varied",
                "use KEY=VALUE with a field of RunConfig (e.g. augment_copies), TrainSettings (e.g. "
                "learning_rate) or features.FIELD of FeatureParams (e.g. features.kind)",
            )
        current = getattr(owner, field_name)
        try:
            if isinstance(current, bool) and raw.lower() in ("true", "false", "1", "0"):
                value: Any = raw.lower() in ("true", "1")
            elif isinstance(current, bool):
                if not isinstance(owner, FeatureParams):  # only FeatureParams validates a word (cmvn=mean)
                    raise ValueError(f"{raw!r} is not true or false")
                value = raw
            else:
                value = raw if isinstance(current, str) else type(current)(raw) if current is not None else int(raw)
            replace(owner, **{field_name: value})  # the owner's own validation, now rather than mid-run
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"--set {item!r}: {exc}", f"give a valid {type(current).__name__}") from exc
        out[key] = value
    return out


# the splits (test_fraction, limit_per_stratum would move recordings between held-out and development
# data, and the held-out split must stay untouched), what the command sets itself, and the containers
_NOT_SETTABLE = {
    "task",
    "archs",
    "folds",
    "jobs",
    "lodo",
    "score_test",
    "test_fraction",
    "limit_per_stratum",
    "settings",
    "features",
    "seed",
    "domain_adversarial",
}


def with_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """``cfg`` with ``--set`` overrides (from ``parse_overrides``) applied where each belongs."""
    run_fields = {f.name for f in fields(RunConfig)}
    train = {k: v for k, v in overrides.items() if k in {f.name for f in fields(TrainSettings)}}
    run = {k: v for k, v in overrides.items() if k in run_fields}
    feats = {k.removeprefix("features."): v for k, v in overrides.items() if k.startswith("features.")}
    return replace(cfg, settings=replace(cfg.settings, **train), features={**cfg.features, **feats}, **run)
