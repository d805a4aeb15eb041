from __future__ import annotations

import contextlib
import re
import subprocess
import sys

from device.cli import main


def test_help_lists_the_command_groups(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    assert "data" in capsys.readouterr().out


def test_pipeline_command_describes_a_recording(samples_dir, capsys):
    assert main(["data", "pipeline", str(samples_dir / "a0405.flac")]) == 0
    out = capsys.readouterr().out
    assert "12.53 s at 2000 Hz" in out and "(4, 201, 16)" in out


def test_a_bad_file_is_a_clear_error_with_exit_2(tmp_path):
    bad = tmp_path / "x.wav"
    bad.write_text("hello")
    proc = subprocess.run(
        [sys.executable, "-m", "device", "data", "pipeline", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "steth: error:" in proc.stderr and "not a readable WAV or FLAC" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_summary_of_the_full_data(data_dir, capsys):
    assert main(["data", "summary", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "total        2750 labelled  (abnormal 569, normal 2181)" in out
    assert "normal 320 [noisynormal 120]" in out


def test_commands_come_from_the_installed_entry_points():
    from importlib import metadata

    from device import cli

    declared = {ep.name for ep in metadata.entry_points(group=cli.COMMAND_GROUP)}
    assert {"data", "train", "classify", "device", "provision", "dashboard"} <= declared
    choices = next(a for a in cli.build_parser()._actions if a.dest == "command").choices
    assert set(choices) == declared


def test_a_command_whose_extra_is_missing_names_the_extra(monkeypatch, capsys):
    from device import cli

    # as on a Pi installed with the device extra only: TensorFlow is absent, so `train` is too
    real = cli._installed
    monkeypatch.setattr(cli, "_installed", lambda name: name != "tensorflow" and real(name))
    with contextlib.suppress(SystemExit):
        main(["--help"])
    listed = set(re.findall(r"^    ([a-z]+)\b", capsys.readouterr().out, flags=re.MULTILINE))
    assert "classify" in listed and not listed & {"train", "ablate", "convert"}
    assert main(["train", "/data", "--task", "screening"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "steth: 'train' needs the train extra: pip install 'stethoscope-edge[train]'"
    assert "train" in cli.build_parser()._subparsers._group_actions[0].choices  # present, only refusing
