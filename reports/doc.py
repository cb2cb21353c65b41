"""A report as a list of blocks, rendered twice: GitHub markdown and a paginated PDF (fpdf2).

Both renderers walk the same blocks, so the markdown and the PDF hold the same tables,
figures and sentences.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2
    """1 is the title; 2 a numbered section; 3 a subsection."""


@dataclass
class Text:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Code:
    text: str
    lang: str = ""


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric: list[bool] = field(default_factory=list)
    """Right-align these columns (numbers)."""
    emphasis_rows: list[int] = field(default_factory=list)
    """Row indexes shown in italics (a floor row, say)."""


@dataclass(frozen=True)
class Link:
    """A table cell that links to a file of the report (a figure): a link in markdown, its text in the PDF."""

    text: str
    path: Path

    def __str__(self) -> str:
        return self.text


@dataclass
class Figure:
    path: Path
    caption: str
    width: float = 1.0
    """Fraction of the text width in the PDF."""


@dataclass
class PageBreak:
    """A new PDF page (nothing in markdown)."""


Block = Heading | Text | Bullets | Code | Table | Figure | PageBreak


# -- markdown -----------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], base: Path) -> str:
    """GitHub-flavoured markdown; figure links relative to ``base`` (the report's folder)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Text):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Code):
            out.append(f"```{b.lang}\n{b.text.rstrip()}\n```")
        elif isinstance(b, Table):
            numeric = b.numeric or [False] * len(b.columns)
            lines = [
                "| " + " | ".join(_md_cell(c) for c in b.columns) + " |",
                "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
            ]
            for i, row in enumerate(b.rows):
                cells = [f"[{_md_cell(c.text)}]({Path(os.path.relpath(c.path, base)).as_posix()})" if isinstance(c, Link) else _md_cell(c)
                         for c in row]
                if i in b.emphasis_rows:
                    cells = [f"*{c}*" if c else c for c in cells]
                lines.append("| " + " | ".join(cells) + " |")
            text = "\n".join(lines)
            if b.caption:
                text = f"{text}\n\n{b.caption}"
            out.append(text)
        elif isinstance(b, Figure):
            rel = Path(os.path.relpath(b.path, base)).as_posix()
            out.append(f"![{_md_cell(b.caption)}]({rel})\n\n*{b.caption}*")
        elif isinstance(b, PageBreak):
            continue
    return "\n\n".join(out).rstrip() + "\n"


# -- PDF ----------------------------------------------------------------------------------------
def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


MIN_SHRINK = 0.55
"""A figure that does not fit the rest of a page is drawn down to this fraction of its size
there, rather than leaving the space blank and starting a new page."""
MIN_ROOM_MM = 45  # less room than this at a page's foot is not worth a shrunk figure
MAX_FIGURE_HEIGHT = 0.72
"""Of the page's text height: a taller figure is drawn narrower. With MIN_SHRINK, a figure
starts a new page only when the current one is about 60 % full or more."""


def to_pdf(blocks: list[Block], path: Path, title: str, fills: list[float] | None = None) -> int:
    """Write a landscape A4 PDF of the blocks; returns its page count.

    ``fills`` (when given) receives the used fraction of each page's text height, a measure
    of blank space for the tests.
    """
    from fpdf import FPDF
    from fpdf.fonts import FontFace
    from PIL import Image

    class Doc(FPDF):
        def add_page(self, *args, **kwargs) -> None:
            if self.page > 0:
                used[self.page] = (self.get_y() - self.t_margin) / self.eph
            super().add_page(*args, **kwargs)

        def footer(self) -> None:
            self.set_y(-10)
            self.set_font("Sans", size=8)
            self.set_text_color(110)
            self.cell(0, 5, f"{title} · page {self.page_no()}/{{nb}}", align="C")
            self.set_text_color(0)

    used: dict[int, float] = {}  # page -> used fraction of its text height
    pdf = Doc(orientation="L", unit="mm", format="A4")
    pdf.set_margins(12, 12, 12)
    pdf.set_auto_page_break(True, margin=14)
    fonts = _font_dir()
    pdf.add_font("Sans", "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font("Sans", "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.add_font("Sans", "I", str(fonts / "DejaVuSans-Oblique.ttf"))
    pdf.add_font("Mono", "", str(fonts / "DejaVuSansMono.ttf"))
    pdf.set_title(title)
    pdf.set_creator("gan-study reports")
    pdf.alias_nb_pages()
    pdf.add_page()
    pdf.set_font("Sans", size=10)

    def space(mm: float) -> None:
        if pdf.get_y() + mm < pdf.h - pdf.b_margin:
            pdf.ln(mm)

    def figure_size(fig: Figure) -> tuple[float, float]:
        with Image.open(fig.path) as im:
            px_w, px_h = im.size
        width = pdf.epw * fig.width
        height = width * px_h / px_w
        max_h = pdf.eph * MAX_FIGURE_HEIGHT
        if height > max_h:  # a tall figure: fit the height cap
            height = max_h
            width = height * px_w / px_h
        return width, height

    for i, b in enumerate(blocks):
        if isinstance(b, PageBreak):
            if pdf.get_y() > pdf.t_margin + 1:
                pdf.add_page()
        elif isinstance(b, Heading):
            size = {1: 18, 2: 14, 3: 11.5}.get(b.level, 10)
            # keep a heading with what follows it (the figure, shrunk as far as allowed, when one follows)
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            need = figure_size(nxt)[1] * MIN_SHRINK + 16 if isinstance(nxt, Figure) else 40
            if b.level > 1 and pdf.get_y() + min(need, pdf.eph - 20) > pdf.h - pdf.b_margin:
                pdf.add_page()
            space(2 if b.level == 3 else 3)
            if b.level > 1:  # the outline (bookmarks): sections and their subsections
                pdf.start_section(b.text, level=b.level - 2, strict=False)
            pdf.set_font("Sans", "B", size)
            pdf.multi_cell(0, size * 0.5, b.text, new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("Sans", size=10)
            space(1.5)
        elif isinstance(b, Text):
            pdf.set_font("Sans", size=10)
            pdf.multi_cell(0, 5, b.text.replace("**", ""), new_x="LMARGIN", new_y="NEXT")
            space(2)
        elif isinstance(b, Bullets):
            pdf.set_font("Sans", size=10)
            for item in b.items:
                pdf.set_x(pdf.l_margin + 3)
                pdf.multi_cell(0, 5, f"•  {item.replace('**', '')}", new_x="LMARGIN", new_y="NEXT")
            space(2)
        elif isinstance(b, Code):
            pdf.set_font("Mono", size=8)
            pdf.set_fill_color(245)
            pdf.multi_cell(0, 3.8, b.text.rstrip(), fill=True, new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("Sans", size=10)
            space(2)
        elif isinstance(b, Table):
            _pdf_table(pdf, b, FontFace)
        elif isinstance(b, Figure):
            width, height = figure_size(b)
            room = pdf.h - pdf.b_margin - pdf.get_y() - 10  # 10 mm: a caption line and space
            if height > room:
                if room >= max(height * MIN_SHRINK, MIN_ROOM_MM):  # fill the page with it, a little smaller
                    width, height = width * room / height, room
                else:
                    pdf.add_page()
            x = pdf.l_margin + (pdf.epw - width) / 2
            pdf.image(str(b.path), x=x, w=width, h=height, alt_text=b.caption)
            pdf.set_font("Sans", "I", 8.5)
            pdf.multi_cell(0, 4, b.caption, align="C", new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("Sans", size=10)
            space(3)
    used[pdf.page] = (pdf.get_y() - pdf.t_margin) / pdf.eph
    if fills is not None:
        fills[:] = [used.get(p, 0.0) for p in range(1, pdf.pages_count + 1)]
    pdf.output(str(path))
    return pdf.pages_count


def _natural_widths(pdf, b: Table, size: float) -> list[float]:
    """Each column's width for its widest cell on one line (at least its longest heading word)."""
    pdf.set_font("Sans", size=size)
    widths = []
    for j, col in enumerate(b.columns):
        widest = max([pdf.get_string_width(str(r[j])) for r in b.rows] or [0]) + 2.5
        widths.append(widest)
    pdf.set_font("Sans", "B", size)
    for j, col in enumerate(b.columns):
        # headings wrap between words only
        head = pdf.get_string_width(max(col.split(), key=len, default="")) + 2.5 if col else 4
        widths[j] = max(widths[j], head, 6)
    pdf.set_font("Sans", size=size)
    return widths


def _pdf_table(pdf, b: Table, FontFace) -> None:
    ncol = len(b.columns)
    # The largest font at which the table fits the page on one line per row, 6 pt at least.
    size = 6.0
    for candidate in (9.0, 8.0, 7.0, 6.5):
        if sum(_natural_widths(pdf, b, candidate)) <= pdf.epw:
            size = candidate
            break
    lengths = _natural_widths(pdf, b, size)
    pdf.set_font("Sans", size=size)
    total = sum(lengths)
    if total > pdf.epw:
        # shrink the widest columns first, so short numeric columns stay on one line
        excess = total - pdf.epw
        while excess > 0.5:
            j = max(range(ncol), key=lambda i: lengths[i])
            cut = min(excess, lengths[j] * 0.1 + 0.5)
            lengths[j] -= cut
            excess -= cut
    numeric = b.numeric or [False] * ncol
    heading = FontFace(emphasis="BOLD", fill_color=(225, 230, 240))
    headed = any(str(c).strip() for c in b.columns)
    with pdf.table(
        first_row_as_headings=headed,
        col_widths=tuple(lengths),
        # col_widths are relative: a table shrunk to the page width can exceed it by rounding,
        # which fpdf2 refuses
        width=min(sum(lengths), pdf.epw),
        align="LEFT",
        line_height=size * 0.48,
        text_align=tuple("RIGHT" if n else "LEFT" for n in numeric),
        headings_style=heading,
        padding=0.8,
        repeat_headings=1 if headed else 0,
    ) as table:
        if headed:
            row = table.row()
            for c in b.columns:
                row.cell(str(c))
        for i, r in enumerate(b.rows):
            row = table.row()
            style = FontFace(emphasis="ITALICS", fill_color=(248, 246, 235)) if i in b.emphasis_rows else None
            for c in r:
                row.cell(str(c), style=style)
    pdf.set_font("Sans", size=10)
    if b.caption:
        pdf.ln(1)
        pdf.set_font("Sans", "I", 8.5)
        pdf.multi_cell(0, 4, b.caption.replace("**", ""), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Sans", size=10)
    pdf.ln(3)
