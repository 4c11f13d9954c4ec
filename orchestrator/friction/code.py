"""How much code each framework's service needs, and how many `# friction:` workarounds."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from orchestrator.friction.common import (
    FRICTION_COMMENT,
    ROOT,
    Row,
)


def code_counts(path: Path) -> tuple[int, int]:
    """(non-blank, non-comment lines, `# friction:` comments) of a Python file. Docstrings
    count as comments; the lines of a multi-line statement or string all count."""
    source = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = body[0] if body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    code, friction = set(), 0
    layout = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            friction += FRICTION_COMMENT.match(token.string) is not None
        elif token.type not in layout:
            code.update(range(token.start[0], token.end[0] + 1))
    return len(code - docstrings), friction


def code_rows(framework: str) -> list[Row]:
    files = [ROOT / "services" / framework / name for name in ("trainer.py", "models.py")]
    present = [f for f in files if f.exists()]
    counts = [code_counts(f) for f in present]
    names = " + ".join(str(f.relative_to(ROOT)) for f in present)
    return [
        Row(framework, "code_lines", sum(c[0] for c in counts), "lines", names),
        Row(framework, "friction_comments", sum(c[1] for c in counts), "count", names),
    ]
