"""Rule-file errors that read ``path:line:col: message`` and show the line with a caret."""
from __future__ import annotations

from rlx.errors import RlxError
from rlx.rules.ast import Span


class RuleError(RlxError):
    """A malformed or ill-typed rule file."""

    def __init__(self, span: Span, message: str, source: str | None = None) -> None:
        self.span, self.message = span, message
        text = f"{span}: {message}"
        if source is not None:
            lines = source.splitlines()
            if 1 <= span.line <= len(lines):
                line = lines[span.line - 1]
                text += f"\n    {line}\n    {' ' * (span.col - 1)}^"
        super().__init__(text)
