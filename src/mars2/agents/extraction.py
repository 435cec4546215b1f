"""Program extraction from a model response (method.md §1)."""
from __future__ import annotations

import ast
import re
import warnings

# An opening fence ``` optionally followed by a language tag, the body, then a closing fence.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)


def extract_program(text: str) -> str | None:
    """The last fenced code block (```python or bare ```) that parses with ``ast``; None if there is none.

    Blocks tagged with another language (```text, ```bash) are ignored."""
    for lang, body in reversed(_FENCE.findall(text or "")):
        if lang and lang.lower() not in ("python", "py", "python3"):
            continue
        code = body.strip("\n")
        if not code.strip():
            continue
        try:
            with warnings.catch_warnings():  # model output is full of e.g. "invalid decimal literal" warnings
                warnings.simplefilter("ignore")
                ast.parse(code)
        except (SyntaxError, ValueError):  # ValueError: null bytes in source
            continue
        return code
    return None
