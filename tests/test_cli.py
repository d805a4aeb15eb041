from __future__ import annotations

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
