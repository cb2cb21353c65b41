"""The report's figures keep their style to themselves: importing reports and drawing a figure
leave the importing program's matplotlib settings as they were."""

from __future__ import annotations

import subprocess
import sys

# A fresh interpreter: the test session may have imported reports already.
PROGRAM = """
import sys
from pathlib import Path

import matplotlib as mpl


def changed():
    # reports picks the file-only backend on import (it draws PNGs, headless); only the style
    # must stay its own
    return sorted(k for k, v in mpl.rcParams.items() if repr(v) != repr(before[k]) and not k.startswith("backend"))


before = dict(mpl.rcParams)
from reports import figures

assert not changed(), f"importing reports changed {changed()}"
seen = {}


@figures.themed
def inside():
    seen.update(mpl.rcParams)


inside()
assert seen["axes.grid"] and seen["font.size"] != before["font.size"], "the report's theme is not applied"
path = figures.importances({"fd": {"lr": 0.7, "batch_size": 0.3}}, Path(sys.argv[1]) / "importances.png")
assert path.stat().st_size > 0
assert not changed(), f"drawing a figure changed {changed()}"
"""


def test_importing_reports_and_drawing_a_figure_leaves_rcparams_alone(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
