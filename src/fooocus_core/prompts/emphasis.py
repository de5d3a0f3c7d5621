"""Prompt emphasis: ``(text)`` and ``(text:weight)`` (spec §1.3, ComfyUI syntax).

* ``(text)`` multiplies the weight by 1.1 per nesting level;
* ``(text:w)`` sets the weight to ``w`` (it replaces, it does not multiply), the number being what
  follows the group's last ``:``;
* ``\\(`` and ``\\)`` are literal parentheses;
* ``[text]`` has no meaning (no de-emphasis): brackets are ordinary characters.

Unbalanced parentheses are kept as literal text: an unclosed ``(`` and everything after it stay
at the surrounding weight, a stray ``)`` is an ordinary character.
"""

from __future__ import annotations

import math

#: Weight factor of one level of ``( )``.
EMPHASIS_FACTOR = 1.1

# Escaped parentheses are swapped for private-use characters while parsing.
_ESCAPED_OPEN = "\ue000"
_ESCAPED_CLOSE = "\ue001"


def _split_groups(text: str) -> list[tuple[str, bool]]:
    """Split ``text`` into top-level pieces: ``(inner, True)`` for ``( )`` groups, else literal."""
    pieces: list[tuple[str, bool]] = []
    buffer: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            if depth == 0:
                if buffer:
                    pieces.append(("".join(buffer), False))
                buffer = []
            else:
                buffer.append(char)
            depth += 1
        elif char == ")" and depth > 0:
            depth -= 1
            if depth == 0:
                pieces.append(("".join(buffer), True))
                buffer = []
            else:
                buffer.append(char)
        else:
            buffer.append(char)
    if depth > 0:
        pieces.append(("(" + "".join(buffer), False))
    elif buffer:
        pieces.append(("".join(buffer), False))
    return pieces


def _explicit_weight(inner: str) -> tuple[str, float] | None:
    """``("text", w)`` when a group's content ends with ``:number``, else ``None``."""
    colon = inner.rfind(":")
    if colon <= 0:
        return None
    try:
        weight = float(inner[colon + 1 :])
    except ValueError:
        return None
    if not math.isfinite(weight):
        return None
    return inner[:colon], weight


def _parse(text: str, weight: float) -> list[tuple[str, float]]:
    segments: list[tuple[str, float]] = []
    for piece, is_group in _split_groups(text):
        if not is_group:
            segments.append((piece, weight))
            continue
        explicit = _explicit_weight(piece)
        if explicit is None:
            segments.extend(_parse(piece, weight * EMPHASIS_FACTOR))
        else:
            segments.extend(_parse(explicit[0], explicit[1]))
    return segments


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """Split a prompt into ``(text, weight)`` segments, in order; escapes resolved.

    >>> parse_emphasis("a (b:1.5) ((c))")
    [('a ', 1.0), ('b', 1.5), (' ', 1.0), ('c', 1.2100000000000002)]
    """
    escaped = text.replace("\\(", _ESCAPED_OPEN).replace("\\)", _ESCAPED_CLOSE)
    return [
        (segment.replace(_ESCAPED_OPEN, "(").replace(_ESCAPED_CLOSE, ")"), weight)
        for segment, weight in _parse(escaped, 1.0)
        if segment
    ]
