"""The chaos soak's short version (benchmarks/chaos.py): 4 workers on one search of 10 trials,
5 faults (kill -9, SIGTERM, SIGSTOP past the grace), killed workers started again; nothing
lost, nothing done twice, both stores consistent, the report and status agree."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.common import REPO

pytestmark = pytest.mark.slow  # worker processes killed and started again for minutes


def test_a_short_soak_loses_nothing_and_does_nothing_twice(evaluator):
    out = subprocess.run([sys.executable, "-m", "benchmarks.chaos", "--workers", "4", "--trials", "10", "--faults", "5",
                          "--every", "5", "10", "--kinds", "search", "--max-minutes", "8"],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    [(faults, summary)] = re.findall(r"^search: (\d+) faults \((.*)$", out.stdout, re.MULTILINE)
    complete = int(re.search(r"complete (\d+),", summary).group(1))
    final = int(re.search(r"retries failed \(final: one retry per trial\) (\d+),", summary).group(1))
    # a retry killed too is final (one retry per trial): the slot is accounted for, not lost
    assert int(faults) == 5 and "lost 0, duplicated 0" in summary and complete + final == 10, out.stdout
    assert "PROBLEM" not in out.stdout
