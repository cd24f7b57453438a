"""Rule-file errors that read ``path:line:col: message`` and show the line with a caret."""
from __future__ import annotations

from rlx.errors import RlxError
from rlx.rules.ast import Span

SHOWN = 120  # characters of the offending line an error shows


class RuleError(RlxError):
    """A malformed or ill-typed rule file."""

    def __init__(self, span: Span, message: str, source: str | None = None) -> None:
        self.span, self.message = span, message
        text = f"{span}: {message}"
        if source is not None:
            lines = source.splitlines()
            if 1 <= span.line <= len(lines):
                line, col = lines[span.line - 1], span.col
                if len(line) > SHOWN:  # a window of the line around the caret
                    start = max(0, min(col - 1 - SHOWN // 2, len(line) - SHOWN))
                    line, col = line[start:start + SHOWN], col - start
                text += f"\n    {line}\n    {' ' * (col - 1)}^"
        super().__init__(text)
