"""reports.claims_summary: the claims of studies that each ran some factors, in one table."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from reports.claims_csv import write_claims_csv
from reports.claims_summary import summary
from reports.inference import ALPHA, holm
from reports.verdicts import judge_all
from study.spec.claims import Claim
from tests.common import REPO
from tests.reports.test_claims_budget import LEVELS, _study

CLAIMS = [
    Claim("on-f", "000", "x", "f", ("a", "b"), "fd", ">"),  # a ends above b run for run: supported
    Claim("on-g", "000", "x", "g", ("b", "c"), "fd", "<"),  # c spreads wide: inconclusive
    Claim("on-h", "000", "x", "h", ("a", "b"), "fd", ">"),  # no study ran h
]


def _report(tmp_path, factor: str):
    data, factors = _study(LEVELS)
    judgements = judge_all(data, [dataclasses.replace(factors[0], name=factor)], CLAIMS)
    return write_claims_csv(judgements, tmp_path / f"{factor}.csv"), {j.claim.id: j for j in judgements}


def test_each_claim_comes_from_the_study_that_ran_it_with_holm_across_the_table(tmp_path):
    f_csv, f = _report(tmp_path, "f")
    g_csv, g = _report(tmp_path, "g")
    rows = {e["claim"]: e for e in summary([f_csv, g_csv])}
    assert [rows[c]["report"] for c in ("on-f", "on-g", "on-h")] == [str(f_csv), str(g_csv), ""]
    assert rows["on-f"]["headline"] == str(f["on-f"].headline.verdict) == "supported"
    assert rows["on-g"]["headline"] == str(g["on-g"].headline.verdict) == "inconclusive"
    assert rows["on-h"]["headline"] == "not run" and rows["on-h"]["holm"] == ""
    assert rows["on-f"]["headline_budget"] == rows["on-f"]["last_budget"] == "10 epochs"
    # One family across the table: each study's report adjusted within itself only.
    adjusted = holm([f["on-f"].headline.p, g["on-g"].headline.p])
    assert rows["on-f"]["holm"] == ("supported" if adjusted[0] < ALPHA else "inconclusive")
    assert rows["on-g"]["holm"] == "inconclusive"
    assert f["on-f"].headline.p < adjusted[0]  # the adjustment did something


def test_the_command_prints_a_table_and_refuses_a_missing_file(tmp_path):
    f_csv, _ = _report(tmp_path, "f")
    ok = subprocess.run([sys.executable, "-m", "reports.claims_summary", str(f_csv)], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[2].startswith("| on-f | observed | supported (10 epochs) |")
    bad = subprocess.run([sys.executable, "-m", "reports.claims_summary", str(tmp_path / "nope.csv")], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nope.csv is not a file" in bad.stderr
