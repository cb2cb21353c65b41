"""PDF tables: whatever their content, they fit the page (fpdf2 refuses a table wider than it)."""

from __future__ import annotations

import pytest
from pypdf import PdfReader

from reports.doc import Table, to_pdf


@pytest.mark.parametrize("chars", [150, 173, 207, 260, 333])
def test_a_table_wider_than_the_page_is_shrunk_to_fit(tmp_path, chars):
    columns = ["parameters"] + [f"metric {i}" for i in range(10)]
    rows = [["lr=" + "7" * chars] + [f"{0.1234567 * (i + 1):.6f}" for i in range(10)] for _ in range(3)]
    path = tmp_path / "table.pdf"
    to_pdf([Table(columns=columns, rows=rows, numeric=[False] + [True] * 10)], path, "wide table")
    text = "".join(page.extract_text() for page in PdfReader(path).pages)
    assert "metric 9" in text and "1.234567" in text


def _png(path, width: int, height: int):
    from PIL import Image

    Image.new("RGB", (width, height), (200, 210, 230)).save(path)
    return path


def test_figures_fill_pages_instead_of_leaving_them_half_blank(tmp_path):
    """Sections of text and figures of many shapes: no page but the last is less than 55 % full,
    and every figure is in the PDF."""
    from reports.doc import Figure, Heading, Text

    blocks = []
    shapes = [(1500, 380), (1300, 900), (1500, 260), (900, 700), (1200, 1000), (1500, 500)]
    for i in range(4):
        blocks += [Heading(f"{i + 1}. Section", 2), Text("Some words about the figures. " * 8)]
        for j, (w, h) in enumerate(shapes):
            blocks += [Heading(f"figure {i}.{j}", 3), Figure(_png(tmp_path / f"f{i}_{j}.png", w, h), f"caption {i}.{j}", 0.9)]
    fills: list[float] = []
    pages = to_pdf(blocks, tmp_path / "flow.pdf", "flow", fills)
    assert len(fills) == pages == len(PdfReader(tmp_path / "flow.pdf").pages)
    assert min(fills[:-1]) >= 0.55, [round(f, 2) for f in fills]
    reader = PdfReader(tmp_path / "flow.pdf")
    images = sum(len(page.images) for page in reader.pages)
    assert images == 4 * len(shapes)
