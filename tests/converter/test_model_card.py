"""The model card: a model retrained alone keeps the other's section; ablation results averaged over seeds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from converter import ablation, model_card
from device.core.inference import models_dir


def test_a_card_written_without_run_folders_keeps_every_section(tmp_path):
    dest = tmp_path / "models"
    shutil.copytree(models_dir(), dest)
    before = (dest / "MODEL_CARD.md").read_text()
    model_card.write([None, tmp_path / "gone"], dest)
    after = (dest / "MODEL_CARD.md").read_text()
    assert after == before
    for header in model_card.SECTION_HEADERS.values():
        assert header in after


def _result(folder: Path, value: float, seed: int, lodo: dict[str, float], cv_not_e: float) -> None:
    result = {
        "arch": "conv_lstm",
        "domain_adversarial": value,
        "seed": seed,
        "cv_not_e_macc": cv_not_e,
        "lodo_macc": lodo,
        "lodo_mean_macc": sum(lodo.values()) / len(lodo),
    }
    (folder / ablation.result_name(value, seed)).write_text(json.dumps(result))


def test_ablation_summary_is_the_mean_and_sd_over_seeds(tmp_path):
    _result(tmp_path, 0.0, 0, {"training-a": 0.5, "training-b": 0.7}, 0.60)
    _result(tmp_path, 0.0, 1, {"training-a": 0.7, "training-b": 0.5}, 0.64)
    _result(tmp_path, 0.3, 0, {"training-a": 0.8, "training-b": 0.6}, 0.70)
    summary = ablation.summarise(tmp_path)
    base, head = summary["variants"]
    assert base["seeds"] == [0, 1] and head["seeds"] == [0]
    assert base["cv_not_e_macc"]["mean"] == pytest.approx(0.62)
    assert base["cv_not_e_macc"]["sd"] == pytest.approx(0.0283, abs=1e-4)
    assert base["lodo_macc"] == pytest.approx({"training-a": 0.6, "training-b": 0.6})
    lines = ablation.table(summary)
    assert lines[2].startswith("| none | 2 | 0.620 ± 0.028 |")
    assert lines[3].startswith("| 0.3 | 1 | 0.700 ± 0.000 |")
    assert lines[0].endswith("| LODO a | LODO b |")


def test_the_hand_written_out_of_domain_check_survives_a_rewrite_of_the_murmur_section(tmp_path):
    card = tmp_path / "MODEL_CARD.md"
    card.write_text(
        "\n".join(
            [
                model_card.SECTION_HEADERS["murmur"],
                "- from the run",
                model_card.MURMUR_OOD_HEADER,
                "| measured | by hand |",
                "### Next subsection",
                "not part of it",
                "## Screening model",
            ]
        )
    )
    kept = model_card._kept_section(card, model_card.MURMUR_OOD_HEADER)
    assert kept == [model_card.MURMUR_OOD_HEADER, "| measured | by hand |"]
    # the whole murmur section (kept when no murmur run is given) still holds its subsections
    whole = model_card._kept_section(card, model_card.SECTION_HEADERS["murmur"])
    assert whole[-1] == "not part of it" and model_card.MURMUR_OOD_HEADER in whole
    # the shipped card has it, so a regenerated card keeps it
    shipped = (models_dir() / "MODEL_CARD.md").read_text().splitlines()
    assert model_card.MURMUR_OOD_HEADER in shipped


REPO = Path(__file__).resolve().parents[2]


def _unscored(report: dict) -> dict:
    """``report`` as `steth train` writes it without --score-test: no test figures, and why."""
    from converter.train import held_out_status

    rows = [{**r, "test": None} for r in report.get("cross_source", [])]
    return {**report, "test": None, "test_split": held_out_status(False), "cross_source": rows}


def test_a_run_that_did_not_score_its_test_split_says_so_wherever_the_card_gives_test_figures():
    report = _unscored(json.loads((REPO / "docs" / "screening_all_sources" / "full" / "report.json").read_text()))
    meta = json.loads((models_dir() / "screening.json").read_text())
    line = "`steth train --score-test` scores it once, with the final model."
    text = "\n".join(model_card.binary_section(report, meta))
    assert "never seen in training or model selection, not scored by this run)" in text
    # once in full (the held-out split), shorter in the cross-source transfer and the test split per source
    assert text.count(line) == 1 and text.count(model_card.SHORT_NOT_SCORED) == 2
    assert "### Held-out test split (float model; int8 parity below)" in text and "int8 vs float on" in text
    assert "| physionet2016 | test split not scored; no CV trains without physionet2016 |" in text
    cell = "not scored (`steth train --score-test`)"
    status = "\n".join(model_card.status_section(report, meta, report))
    assert f"| test split CirCor MAcc per patient | >= 0.80 | {cell} | – |" in status
    assert "The held-out targets were not measured" in status
    assert f"| rerun | {report['chosen_arch']} |" in status and f"| {cell} | {cell} |" in status
    # a multi-class run too
    multi = _unscored(
        {
            "labels": ["a", "b", "c"],
            "chosen_arch": "lstm",
            "feature_params": {"window_s": 3.0},
            "n_dev": 10,
            "n_test": 4,
            "cv": [{"scores": {"all": {"accuracy": 0.5}}}],
        }
    )
    text = "\n".join(model_card.multiclass_section(multi, {**meta, "name": "sound_type"}))
    assert line in text and "Cross-validation accuracy (1 folds)" in text


def test_an_ensemble_report_renders_and_says_how_often_its_test_split_was_scored(tmp_path):
    # the shipped average's own run (session 15, seed 1): a `steth ensemble` report has no transfer check
    report = json.loads((REPO / "docs/screening_all_sources/ensemble/seeds/report_seed1.json").read_text())
    meta = json.loads((models_dir() / "screening.json").read_text())
    once = "\n".join(model_card.binary_section(report, meta))
    assert "scored once)" in once and "### The average of two models" in once
    assert "**Ship decision for the all-sources model alone** (the shipped average is judged below)" in once
    runs = tmp_path / "run"
    runs.mkdir()
    (runs / "report.json").write_text(json.dumps(report))
    dest = tmp_path / "models"
    shutil.copytree(models_dir(), dest)
    card = model_card.write([runs], dest, test_looks=8).read_text()
    eighth = "scored for the 8th time: development data now, not an unseen estimate"
    assert "scored once" not in card.split("## Murmur model")[0]  # the status and screening sections
    assert f"### Held-out test split (float model; int8 parity below; {eighth})" in card
    assert f"### Test split per source (the shipped average, float; {eighth})" in card
    assert "each section says whether, and how often, the held-out split it scores had been scored" in card
