"""gan-study report against real studies, made once per session with the real CLI.

``sweep``: a one-factor sweep of 2 factors (3 points) with 2 repeats, 30 steps of batch 32 each.
``mixed``: a 2-point grid over ``loss_bound`` where the tiny bound diverges at once (PRUNED,
reason "diverged: ...") and the other completes, plus a FAIL trial told through Optuna's API
on the same storage (the state a crashed worker leaves).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.common import gan_study, journal_study


EVAL = {"every": 15, "samples": 500, "final_samples": 1000}
SWEEP = {
    "name": "sweep",
    "objective": "fd",
    "repeats": 2,
    "budget": {"steps": 30},
    "evaluation": EVAL,
    "fixed": {"batch_size": 32},
    "sweep": {
        "factors": {
            "lr": [{"label": "1e-4", "lr_g": 1.0e-4, "lr_d": 1.0e-4}, {"label": "2e-4", "lr_g": 2.0e-4, "lr_d": 2.0e-4}],
            "optimizer": ["adam", "rmsprop"],
        }
    },
}
MIXED = {
    "name": "mixed",
    "objective": "fd",
    "sampler": {"name": "grid", "seed": 0},
    "budget": {"steps": 30},
    "evaluation": EVAL,
    "fixed": {"batch_size": 32},
    "space": {"loss_bound": [0.001, 1000.0]},
}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory, evaluator) -> Path:
    """Stores holding the 'sweep' and 'mixed' studies (both run at once: 'mixed' trains one run).

    ``evaluator`` fills a cold evaluator cache first, so the two processes do not both train it.
    """
    from optuna.trial import TrialState

    root = tmp_path_factory.mktemp("report-studies")
    work = root / "runs"
    procs = []
    for spec in (SWEEP, MIXED):
        path = root / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        command = [sys.executable, "-m", "study.cli", "run", str(path), "--workdir", str(work), "--quiet"]
        # Started together on a new work folder: the two processes also prove that setting up one
        # MLflow SQLite store at once works (they take turns on its schema migration).
        procs.append(subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()))
    for proc in procs:
        _, err = proc.communicate(timeout=1800)  # against a hang only: a busy machine is slow
        assert proc.returncode == 0, err[-3000:]
    mixed = journal_study(work, "mixed")
    mixed.tell(mixed.ask(), state=TrialState.FAIL)
    return work


def make_report(workdir: Path, name: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    result = gan_study("report", name, "--workdir", str(workdir), "--out", str(out), *extra, cwd=out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="session")
def sweep_report(workdir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep-report") / "report"
    result = make_report(workdir, "sweep", out)
    (out.parent / "stdout.txt").write_text(result.stdout)
    return out


@pytest.fixture(scope="session")
def mixed_report(workdir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mixed-report") / "report"
    make_report(workdir, "mixed", out)
    return out


# -- helpers --------------------------------------------------------------------------------------
PNG = b"\x89PNG\r\n\x1a\n"


def section(md: str, title: str) -> str:
    """The text of the '## <title>' section, up to the next '## ' heading."""
    start = md.index(f"## {title}")
    end = md.find("\n## ", start + 3)
    return md[start : end if end > 0 else len(md)]


def table_rows(text: str) -> list[list[str]]:
    """Rows of the first pipe table in ``text`` (header and separator excluded)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    header = rows[0]
    assert set("".join(rows[1])) <= set("|-: "), rows[1]
    body = []
    for row in rows[2:]:
        if row == header:  # the next table
            break
        body.append(row)
    return [header, *body]


def image_links(md: str) -> list[str]:
    import re

    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def pdf_images(reader) -> int:
    count = 0
    for page in reader.pages:
        xobjects = page.get("/Resources", {}).get("/XObject", {})
        count += sum(1 for x in xobjects.values() if x.get_object().get("/Subtype") == "/Image")
    return count


def pdf_text(reader) -> str:
    return "\n".join(page.extract_text() or "" for page in reader.pages)


# -- the sweep ----------------------------------------------------------------------------------
def test_cli_prints_the_written_files(sweep_report):
    printed = [Path(line) for line in (sweep_report.parent / "stdout.txt").read_text().split()]
    assert printed[:2] == [sweep_report / "report.md", sweep_report / "report.pdf"]
    assert all(p.is_file() for p in printed)
    assert {p.name for p in printed[2:]} == {p.name for p in (sweep_report / "figures").glob("*.png")}


def test_leaderboard_has_one_row_per_trial_and_the_floors(workdir, sweep_report):
    md = (sweep_report / "report.md").read_text()
    study = journal_study(workdir, "sweep")
    header, *rows = table_rows(section(md, "2. Leaderboard"))
    for column in ("trial", "state", "point", "fd", "modes", "kl_uniform", "is", "precision", "recall", "d_acc_generated", "train time (s)"):
        assert column in header
    floor, *trial_rows = rows
    assert floor[header.index("trial")] == "*floor*"
    for metric in ("fd", "modes", "kl_uniform", "is", "precision", "recall"):
        value = floor[header.index(metric)].strip("*")
        assert float(value) >= 0, (metric, value)
    assert float(floor[header.index("modes")].strip("*")) == 10  # real digits cover every class
    numbers = sorted(int(r[header.index("trial")]) for r in trial_rows)
    assert numbers == sorted(t.number for t in study.get_trials())
    # repeats: mean ± the half-width of the 95 % t-interval; ranks follow fd
    fds = [r[header.index("fd")] for r in trial_rows]
    assert all("±" in v for v in fds)
    means = [float(v.split("±")[0]) for v in fds]
    assert means == sorted(means)
    points = {r[header.index("point")] for r in trial_rows}
    # the spec's label 1e-4 reads back as the number 0.0001 (the spec loader's float rule)
    assert points == {"baseline", "lr=0.0001", "optimizer=rmsprop"}


def test_every_linked_image_is_a_png(sweep_report):
    md = (sweep_report / "report.md").read_text()
    links = image_links(md)
    assert links, "no figures"
    for link in links:
        assert not link.startswith("/") and "://" not in link  # relative: renders on GitHub
        path = sweep_report / link
        assert path.is_file() and path.stat().st_size > 1000, link
        assert path.read_bytes()[:8] == PNG, link
    names = {Path(link).name for link in links}
    # one per-factor row per swept factor, the best trial's pictures, the history
    assert {"factor_lr.png", "factor_optimizer.png", "optimization_history.png"} <= names
    assert {"best_grid.png", "best_samples_20.png", "best_histogram.png", "best_interpolation.png"} <= names


def test_sections_summary_and_findings(sweep_report):
    md = (sweep_report / "report.md").read_text()
    for title in ("1. Summary", "2. Leaderboard", "3. Per-factor comparison", "4. Best trial", "5. Search diagnostics", "6. Findings"):
        assert f"## {title}" in md
    summary = section(md, "1. Summary")
    assert "| sampler | grid |" in summary and "| pruner | none |" in summary
    assert "3 complete, 0 pruned, 0 failed" in summary
    assert "| device | cpu" in summary  # from final/metrics.json of the best trial
    assert "```yaml" in summary and "optimizer:" in summary
    assert "do not apply to a sweep" in section(md, "5. Search diagnostics")
    findings = section(md, "6. Findings")
    for factor in ("lr", "optimizer"):
        header, *rows = table_rows(findings[findings.index(f"### {factor}") :])
        assert header[0] == "value" and "vs baseline" in header
        assert len(rows) == 2 and sum("(baseline)" in r[0] for r in rows) == 1
        other = next(r for r in rows if "(baseline)" not in r[0])
        assert other[-1] in ("clear", "within noise")
        assert sum("★" in r[0] for r in rows) == 1  # the best value by fd
    assert "the baseline" in findings


def test_pdf_holds_the_tables_and_figures(sweep_report):
    import pypdf

    reader = pypdf.PdfReader(str(sweep_report / "report.pdf"))
    assert len(reader.pages) >= 6  # every section starts on a new page
    text = pdf_text(reader)
    for title in ("Summary", "Leaderboard", "Per-factor comparison", "Best trial", "Search diagnostics", "Findings"):
        assert title in text
    for word in ("floor", "optimizer=rmsprop", "lr=0.0001", "baseline", "d_acc_generated"):
        assert word in text
    assert "within noise" in text or "clear" in text
    md = (sweep_report / "report.md").read_text()
    assert pdf_images(reader) >= len(set(image_links(md)))
    assert [o.title for o in reader.outline if not isinstance(o, list)][:6] == [
        "1. Summary", "2. Leaderboard", "3. Per-factor comparison", "4. Best trial", "5. Search diagnostics", "6. Findings"
    ]


# -- pruned, failed and running trials ---------------------------------------------------------------
def test_pruned_and_failed_trials_are_reported(workdir, mixed_report):
    import pypdf

    md = (mixed_report / "report.md").read_text()
    study = journal_study(workdir, "mixed")
    states = {t.number: t.state.name.lower() for t in study.get_trials()}
    assert sorted(states.values()) == ["complete", "fail", "pruned"]
    header, floor, *rows = table_rows(section(md, "2. Leaderboard"))
    assert {int(r[header.index("trial")]): r[header.index("state")] for r in rows} == states
    pruned = next(r for r in rows if r[header.index("state")] == "pruned")
    assert pruned[header.index("reason")].startswith("diverged")
    assert "1 complete, 1 pruned, 1 failed" in section(md, "1. Summary")
    assert "1 trial pruned and 1 failed" in section(md, "6. Findings")
    reader = pypdf.PdfReader(str(mixed_report / "report.pdf"))
    assert "diverged" in pdf_text(reader)
    for link in image_links(md):
        assert (mixed_report / link).read_bytes()[:8] == PNG


def test_report_while_a_trial_is_running(workdir, tmp_path):
    import shutil

    copy = tmp_path / "runs"
    shutil.copytree(workdir, copy)
    study = journal_study(copy, "sweep")
    running = study.ask()  # a worker that has just started its trial
    running.report(123.5, 15)
    out = tmp_path / "report"
    make_report(copy, "sweep", out)
    md = (out / "report.md").read_text()
    assert "still running (1 trial in progress)" in md
    header, floor, *rows = table_rows(section(md, "2. Leaderboard"))
    row = next(r for r in rows if r[header.index("trial")] == str(running.number))
    assert row[header.index("state")] == "running"
    assert "fd=123.5 at step 15" in row[header.index("reason")]
    assert "1 running" in section(md, "1. Summary")
    assert (out / "report.pdf").stat().st_size > 0


# -- errors ---------------------------------------------------------------------------------------
def test_unknown_study_exits_2_listing_the_studies(workdir, tmp_path):
    out = gan_study("report", "nope", "--workdir", str(workdir), cwd=tmp_path)
    assert out.returncode == 2
    assert "no study 'nope'" in out.stderr and "mixed, sweep" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_unknown_format_exits_2(workdir, tmp_path):
    out = gan_study("report", "sweep", "--workdir", str(workdir), "--format", "md,html", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert out.returncode == 2
    assert "md, pdf" in out.stderr and "html" in out.stderr


def test_a_study_with_no_finished_trial_and_no_mlflow_runs(tmp_path):
    """A study whose only trial has just started, and whose MLflow experiment does not exist yet."""
    import optuna
    import pypdf

    from reports import write_report
    from study.tracking import Stores

    stores = Stores.resolve(tmp_path / "runs")
    stores.workdir.mkdir()
    study = optuna.create_study(study_name="fresh", storage=stores.optuna_storage(heartbeat=False))
    study.set_user_attr("spec", {**MIXED, "name": "fresh"})
    study.set_user_attr("objectives", ["fd"])
    study.set_user_attr("repeats", 1)
    study.ask()
    written = write_report(study, stores, tmp_path / "out")
    assert written[:2] == [tmp_path / "out" / "report.md", tmp_path / "out" / "report.pdf"]
    md = written[0].read_text()
    assert "no MLflow store at sqlite:///" in md and "1 running" in md
    assert not (stores.workdir / "mlflow.db").exists()  # reading creates no store
    header, floor, row = table_rows(section(md, "2. Leaderboard"))
    assert row[header.index("state")] == "running"
    assert "No complete trial yet" in md
    assert len(pypdf.PdfReader(str(written[1])).pages) >= 4
