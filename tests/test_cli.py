"""The command line: space commands, lazy sub-commands, error handling."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys

import pytest

from trilemma.cli import main


def test_space_show_reports_paths_and_depths(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["space", "show", "2_21_112"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"│ P +│ 4 ", out)
    assert "P = 4 paths 0→3" in out
    assert "0 1 2 2" in out
    assert "0→1→2→3  depth 2" in out and "0→3  depth 0" in out
    assert "nngp_bound" in out and "params" in out


def test_space_list_csv_has_one_row_per_cell(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "h3.csv"
    assert main(["space", "list", "--nodes", "3", "--format", "csv", "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 729
    chain = next(r for r in rows if r["arch"] == "2_02_002")
    assert chain["P"] == "1" and chain["depths"] == "3" and chain["index"] == "542"
    assert sum(r["trainable"] == "True" for r in rows) == 541


def test_bad_cell_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["space", "show", "2_3_002"]) == 2
    err = capsys.readouterr().err
    assert "group 2 ('3') has 1 digit(s)" in err or "contains '3'" in err


def test_help_lists_every_command_without_importing_torch() -> None:
    code = (
        "import sys, io, contextlib\n"
        "from trilemma.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(buf.getvalue())\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for command in ("space", "run", "status", "export", "report", "measures", "datasets", "nb201", "lesson"):
        assert command in out
    assert out.strip().endswith("NO-TORCH")
