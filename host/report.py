"""Generated sections of Markdown files (RESULTS.md, README.md), kept between marker comments."""

from pathlib import Path

__all__ = ["replace_section"]


def replace_section(path, start, end, section):
    """Put ``section`` (which begins with ``start`` and ends with ``end``) into the file at
    ``path``: replace the text between the markers if present, else append it (or create the
    file with a ``# Results`` title)."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Results\n\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
    return path
