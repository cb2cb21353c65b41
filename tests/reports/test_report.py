"""gan-study report against real studies (see conftest.py): sections, tables, figures, states."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.common import gan_study, journal_study
from tests.reports.conftest import MIXED, PNG, image_links, make_report, pdf_images, pdf_text, section, table_rows

pytestmark = pytest.mark.slow  # the session's real studies and reports


# -- the sweep ----------------------------------------------------------------------------------
def test_cli_prints_the_written_files(sweep_report):
    printed = [Path(line) for line in (sweep_report.parent / "stdout.txt").read_text().split()]
    assert printed[:2] == [sweep_report / "report.md", sweep_report / "report.pdf"]
    assert all(p.is_file() for p in printed[:-1])
    # the spec has claims: claims.csv beside report.md, then the figures folder (each figure with --verbose, #29)
    assert printed[2] == sweep_report / "claims.csv"
    assert printed[3:] == [sweep_report / "figures"] and any((sweep_report / "figures").glob("*.png"))


def test_leaderboard_has_one_row_per_trial_and_the_floors(workdir, sweep_report):
    md = (sweep_report / "report.md").read_text()
    study = journal_study(workdir, "sweep")
    header, *rows = table_rows(section(md, "2. Leaderboard"))
    for column in ("trial", "state", "point", "fd", "modes", "kl_uniform", "is", "precision", "recall", "d_acc_generated", "train_seconds (s)"):
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
    assert {"best_samples_20.png", "best_histogram.png", "best_interpolation.png", "best_arithmetic.png", "best_real_vs_generated.png"} <= names


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
    assert len(reader.pages) >= 6
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
    from study.storage.tracking import Stores

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
    reader = pypdf.PdfReader(str(written[1]))
    # sections flow on without a page each; the outline still lists them all
    assert [o.title for o in reader.outline if not isinstance(o, list)][:6] == [
        "1. Summary", "2. Leaderboard", "3. Per-factor comparison", "4. Best trial", "5. Search diagnostics", "6. Findings"
    ]
