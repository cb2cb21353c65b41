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
