"""Triton's ``config.pbtxt``, read and written as text.

A model folder's ``config.pbtxt`` is protobuf text format. The mesh must
rename the model in it (Triton refuses a folder whose name differs from the
config's) and add the backend where a user's config leaves it out, without
knowing the schema: a config written for a newer Triton must pass through
untouched. So a small reader finds the top-level fields and where each one
lies (:func:`top_level_fields`), and edits splice text. Where Triton has
refused a config, :func:`config_problem` checks it against the schema these
protos know, to say where it is wrong.
"""

from __future__ import annotations

import ast
import dataclasses
import re

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from mesh.core import errors
from runtime_adapters.triton import formats

CONFIG_FILE = "config.pbtxt"
"""The file Triton reads in each model folder."""


@dataclasses.dataclass(frozen=True)
class TextField:
    """One top-level field of a protobuf text-format document."""

    name: str
    start: int
    """Offset of the field's name."""
    end: int
    """Offset just past its value (a scalar, a list or a message)."""
    value: str | None
    """The decoded value of a string scalar; ``None`` for anything else."""


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<word>[A-Za-z0-9_.+-]+)
  | (?P<open>[{\[<])
  | (?P<close>[}\]>])
  | (?P<colon>:)
  | (?P<separator>[,;])
    """,
    re.VERBOSE,
)

_CLOSING = {"{": "}", "[": "]", "<": ">"}


@dataclasses.dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int
    end: int


def _tokens(text: str) -> list[_Token]:
    found: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise ValueError(f"line {line}: unexpected {text[pos]!r}")
        kind = m.lastgroup or ""
        if kind not in ("space", "comment"):
            found.append(_Token(kind, m.group(), m.start(), m.end()))
        pos = m.end()
    return found


def _decode_string(literal: str) -> str | None:
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def _line_of(text: str, token: _Token) -> int:
    return text.count("\n", 0, token.start) + 1


def _skip_group(text: str, tokens: list[_Token], j: int) -> int:
    """Index just past the bracket group opening at ``tokens[j]``."""
    stack = [tokens[j].text]
    j += 1
    while stack:
        if j >= len(tokens):
            raise ValueError(f"{stack[-1]!r} is never closed")
        t = tokens[j]
        if t.kind == "open":
            stack.append(t.text)
        elif t.kind == "close":
            if _CLOSING[stack[-1]] != t.text:
                raise ValueError(f"line {_line_of(text, t)}: unexpected {t.text!r}")
            stack.pop()
        j += 1
    return j


def top_level_fields(text: str) -> tuple[TextField, ...]:
    """The top-level fields of a config.pbtxt, with where each one lies.

    A small reader of protobuf's text format, enough to find and replace
    fields without knowing the schema (so a config written for a newer Triton
    passes through untouched): ``name: "x"``, ``name: 'a' "b"`` (adjacent
    strings join), ``input [ ... ]``, ``optimization { ... }``, ``<...>``,
    ``#`` comments, ``,``/``;`` separators. Raises ``ValueError`` saying
    where the text is malformed.
    """
    tokens = _tokens(text)
    fields: list[TextField] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.kind == "separator":
            i += 1
            continue
        if t.kind != "word":
            raise ValueError(f"line {_line_of(text, t)}: expected a field name, found {t.text!r}")
        name, start = t.text, t.start
        i += 1
        if i < len(tokens) and tokens[i].kind == "colon":
            i += 1
        if i >= len(tokens):
            raise ValueError(f"line {_line_of(text, t)}: field {name!r} has no value")
        v = tokens[i]
        value: str | None = None
        if v.kind == "open":
            i = _skip_group(text, tokens, i)
        elif v.kind == "string":
            parts = []
            while i < len(tokens) and tokens[i].kind == "string":
                parts.append(_decode_string(tokens[i].text))
                i += 1
            value = None if any(p is None for p in parts) else "".join(p or "" for p in parts)
        elif v.kind == "word":
            i += 1
        else:
            raise ValueError(f"line {_line_of(text, v)}: field {name!r} has no value")
        fields.append(TextField(name, start, tokens[i - 1].end, value))
    return tuple(fields)


def quote(value: str) -> str:
    """``value`` as a text-format string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def named_config(model_id: str, fmt: formats.TritonFormat, user_config: str) -> str:
    """The user's config.pbtxt, unchanged but for its top-level ``name``,
    which becomes ``model_id`` (added at the top where there is none), and a
    ``backend`` (or ``platform``) line added where it names neither. Raises
    ``ValueError`` for text that is not a text-format message."""
    fields = top_level_fields(user_config)
    out = user_config
    names = [f for f in fields if f.name == "name"]
    for f in reversed(names):
        out = out[: f.start] + f"name: {quote(model_id)}" + out[f.end :]
    if not names:
        out = f"name: {quote(model_id)}\n" + out
    if not any(f.name in ("backend", "platform") for f in fields):
        out = out.rstrip("\n") + "\n" + _runtime_line(fmt)
    return out


def generated_config(model_id: str, fmt: formats.TritonFormat) -> str:
    """A config.pbtxt for a folder that came without one. Raises
    :class:`mesh.core.errors.ModelLoadFailed` for a format whose inputs and outputs
    Triton cannot find out by itself."""
    if not fmt.config_generated:
        raise errors.ModelLoadFailed(
            model_id,
            f"a {fmt.model_type} model needs a {CONFIG_FILE} listing its inputs and "
            "outputs (Triton cannot read them from the model file); none is in the folder",
        )
    return (
        f"# Written by meshserve: the model came without a {CONFIG_FILE}.\n"
        f"name: {quote(model_id)}\n" + _runtime_line(fmt) + fmt.generated_extra
    )


def _runtime_line(fmt: formats.TritonFormat) -> str:
    if fmt.platform:
        return f"platform: {quote(fmt.platform)}\n"
    return f"backend: {quote(fmt.backend)}\n"


def config_problem(text: str) -> str | None:
    """Why ``text`` is not a valid ``ModelConfig`` (line, column and field),
    or ``None``. Triton's own answer to a bad config.pbtxt says only "failed
    to read text proto"; this says where. Used only after Triton refused a
    config: a config written for a newer Triton may name fields these protos
    do not know, and that alone must not stop a load."""
    try:
        text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        return f"{CONFIG_FILE} {e}"
    return None
