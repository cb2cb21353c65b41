"""The storage-scale benchmark's short version (benchmarks/storage_scale.py): 2 workers on the
journal for 3 s. What it guarantees: every timed trial is COMPLETE in the storage and claimed by
one worker only, every latency is positive and finite, and no worker imported torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.common import REPO


def _scale(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.storage_scale", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow  # 76 s under nice -n 19 beside other work (about 20 s on a quiet machine)
def test_two_workers_on_the_journal_add_up(tmp_path):
    out = _scale("--kinds", "journal", "--workers", "2", "--seconds", "3", "--json", str(tmp_path / "cells.json"))
    assert out.returncode == 0, out.stdout + out.stderr
    [cell] = json.loads((tmp_path / "cells.json").read_text())
    assert (cell["kind"], cell["workers"], cell["errors"], cell["hung"], cell["problems"]) == ("journal", 2, [], 0, [])
    numbers = cell["numbers"]
    assert numbers and len(set(numbers)) == len(numbers)  # no trial claimed twice
    assert len(cell["claim"]) == len(cell["open"]) == len(cell["finish"]) == len(numbers)
    assert all(math.isfinite(x) and 0 < x < 60 for x in cell["claim"] + cell["open"] + cell["finish"])
    assert f"journal        2  {len(numbers):>6}" in out.stdout  # the printed table's row


def test_bad_flags_are_refused_in_one_line():
    out = _scale("--kinds", "redis")
    assert out.returncode == 2 and "unknown --kinds redis" in out.stderr, out.stderr
