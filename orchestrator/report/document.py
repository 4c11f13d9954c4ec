"""A report as data — a title, a header, the verdict, sections of markdown with charts — and its
two renderings: report.md (words and tables) and report.html (one self-contained page from a
Jinja2 template, the markdown rendered by Python-Markdown, charts as inline SVG)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import markdown as markdown_lib
from markupsafe import Markup, escape

from orchestrator.report.charts import Chart

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Section:
    """An extra section given by the caller: a title and its content in markdown (tables on)."""

    title: str
    markdown: str


@dataclass
class Block:
    """One section of the page: its markdown and its charts (the charts come after the text)."""

    title: str
    markdown: str
    charts: list[Chart] = field(default_factory=list)
    anchor: str = ""


@dataclass
class Document:
    title: str
    # Short lines under the title (date, version, command, host): markdown, one per line.
    header: list[str]
    verdict: list[str]
    warnings: list[str]
    implications: list[str]
    blocks: list[Block]


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(headers: list[str], rows: list[list[object]], numeric: set[int] | None = None) -> str:
    """A markdown pipe table; columns in `numeric` (by index) are right-aligned. By default every
    column but the first is numeric."""
    numeric = set(range(1, len(headers))) if numeric is None else numeric
    align = ["---:" if i in numeric else ":---" for i in range(len(headers))]
    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def labelled(line: str) -> str:
    """A verdict line with its label (the text before the first ': ') in bold."""
    label, sep, rest = line.partition(": ")
    return f"**{label}**: {rest}" if sep and len(label) < 60 else line


def bullets(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def to_markdown(doc: Document) -> str:
    parts = [f"# {doc.title}", "", *(f"{line}  " for line in doc.header), ""]
    verdict = bullets([labelled(line) for line in doc.verdict])
    parts += ["## Verdict", "", verdict or "No comparison to make.", ""]
    if doc.warnings:
        parts += ["### Warnings", "", bullets(doc.warnings), ""]
    if doc.implications:
        parts += ["### What this means for your job", "", bullets(doc.implications), ""]
    for block in doc.blocks:
        parts += [f"## {block.title}", "", block.markdown.strip(), ""]
        for chart in block.charts:
            parts += [
                f"*Chart (in report.html): {chart.title}.* {chart.caption} "
                f"Text alternative: {chart.alt}",
                "",
            ]
    return "\n".join(parts).rstrip() + "\n"


# A command-line option with its words (--batch-size, --test-limit): a line breaks at a hyphen,
# which would cut an option in two ("--" / "batch-size").
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# What in rendered HTML is a tag, or a code span with its content.
TAG_OR_CODE = re.compile(r"(<code>.*?</code>|<[^>]+>)", flags=re.DOTALL)


def unbroken_options(html: str) -> str:
    """Each option in `html`'s text set in <code class="option"> and, within a code span, a
    <span class="option">: report.css keeps either on one line."""
    parts = TAG_OR_CODE.split(html)
    for i, part in enumerate(parts):
        if part.startswith("<code>"):
            parts[i] = OPTION.sub(r'<span class="option">\g<0></span>', part)
        elif not part.startswith("<"):
            parts[i] = OPTION.sub(r'<code class="option">\g<0></code>', part)
    return "".join(parts)


def _md_to_html(text: str) -> str:
    html = markdown_lib.markdown(text, extensions=["tables", "sane_lists"], output_format="html")
    return unbroken_options(html)


def chart_svg(chart: Chart) -> str:
    """The chart's SVG as an image with its title and its text alternative, for a screen reader
    and a tooltip."""
    alt = str(escape(chart.alt))
    return chart.svg.replace("<svg", f'<svg role="img" aria-label="{alt}"', 1).replace(
        ">", f"><title>{escape(chart.title)}</title>", 1
    )


def to_html(doc: Document) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md"] = lambda text: Markup(_md_to_html(text))
    env.filters["labelled"] = labelled
    env.filters["inline_md"] = lambda text: Markup(
        _md_to_html(text).removeprefix("<p>").removesuffix("</p>")
    )
    return env.get_template("report.html.j2").render(
        doc=doc,
        # Our own stylesheet, trusted: escaping would turn its `>` selectors into `&gt;`.
        css=Markup((TEMPLATES / "report.css").read_text()),
        svg=lambda chart: Markup(chart_svg(chart)),
    )


def write(doc: Document, out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, html_path = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
    md_path.write_text(to_markdown(doc))
    html_path.write_text(to_html(doc))
    return md_path, html_path
