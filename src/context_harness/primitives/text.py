"""Text from elsewhere (a server's answer, a config file, a person) made safe to show in a message.

Standard library only, and not even `re`: chctl imports this and must start fast. `unicodedata` is imported
only for text that is not ASCII (it costs chctl's start about 0.3 ms; ASCII text, nearly all of it, never pays).
"""

from __future__ import annotations

# A server's error or description quoted in one of our messages: enough to read, never a whole page.
SERVER_TEXT_LIMIT = 200

# C0 and C1 control characters and DEL: an ESC sequence from a server must not reach the terminal (it can
# retitle the window, rewrite what is shown, or on some terminals feed input back).
_CONTROL = {c: None for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def printable(text: object, limit: int | None = None, *, ascii_only: bool = False) -> str:
    """`text` without control characters (line breaks and tabs included) or Unicode format characters (a bidi
    override such as U+202E would show a name or URL reversed), cut to `limit` characters.

    `ascii_only` keeps printable ASCII alone: for a remote server's words quoted in our errors and logs,
    where a bidi override or a look-alike letter has no business either. Characters are removed before
    the text is cut, so `limit` counts what is shown.
    """
    shown = str(text)
    if ascii_only:
        shown = shown.encode("ascii", "ignore").decode("ascii")
    shown = shown.translate(_CONTROL)
    if not shown.isascii():
        shown = _without_format_characters(shown)
    return shown if limit is None else shown[:limit]


def _without_format_characters(text: str) -> str:
    import unicodedata  # here, not above: see the module's docstring

    return "".join(c for c in text if unicodedata.category(c) != "Cf")
