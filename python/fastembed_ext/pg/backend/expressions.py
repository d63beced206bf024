"""Which models a stored SQL expression embeds with.

Generated columns, column defaults and index expressions that call ``embed()`` keep vectors of
the model they name; re-pointing or removing that model must be refused while they exist. The
expressions come from ``pg_get_expr`` (deparsed SQL), e.g. ``public.embed(body, 'minilm'::text)``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# A call's model, when it is not a name: the database's default (one-argument embed), or an
# expression whose value is only known per row.
DEFAULT = "(default)"
ANY = "(any)"

_CALL = re.compile(r'(?:(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)\.)?(embed|embed_batch)\(')
_LITERAL = re.compile(r"^'((?:[^']|'')*)'(?:::text)?$")


class EmbedCall(NamedTuple):
    function: str  # "embed" or "embed_batch"
    model: str  # a model name, DEFAULT or ANY


def _skip_quoted(text: str, i: int) -> int:
    """Index after the quoted token starting at ``text[i]`` (' or ")."""
    quote = text[i]
    i += 1
    while i < len(text):
        if text[i] == quote:
            if i + 1 < len(text) and text[i + 1] == quote:  # doubled quote inside
                i += 2
                continue
            return i + 1
        i += 1
    return i


def _arguments(text: str, start: int) -> tuple[list[str], int]:
    """Top-level arguments of the call whose '(' is at ``text[start - 1]``, and the index after ')'."""
    args, depth, i, begin = [], 0, start, start
    while i < len(text):
        ch = text[i]
        if ch in "'\"":
            i = _skip_quoted(text, i)
            continue
        if ch in "([":
            depth += 1
        elif ch in ")]":
            if depth == 0:
                args.append(text[begin:i].strip())
                return [a for a in args if a], i + 1
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(text[begin:i].strip())
            begin = i + 1
        i += 1
    return [a for a in args if a], i


def embed_calls(expression: str) -> list[EmbedCall]:
    """Every embed()/embed_batch() call in a deparsed expression, with the model it uses."""
    calls: list[EmbedCall] = []
    i = 0
    while i < len(expression):
        ch = expression[i]
        if ch in "'":
            i = _skip_quoted(expression, i)
            continue
        match = _CALL.match(expression, i)
        preceded_by_word = i > 0 and (expression[i - 1].isalnum() or expression[i - 1] in '_$".')
        if match and not preceded_by_word:
            args, _ = _arguments(expression, match.end())
            if len(args) < 2:
                model = DEFAULT
            else:
                literal = _LITERAL.match(args[1])
                model = literal.group(1).replace("''", "'") if literal else ANY
            calls.append(EmbedCall(match.group(1), model))
            i = match.end()  # the arguments may hold further calls
            continue
        if ch == '"':
            i = _skip_quoted(expression, i)
            continue
        i += 1
    return calls
