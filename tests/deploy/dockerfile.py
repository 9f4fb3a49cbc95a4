"""Reading the root ``Dockerfile`` and ``.dockerignore`` the way a container
engine does, without one (CI has none, and building the image would download
hundreds of MB).

- :func:`parse` splits a Dockerfile into stages and instructions, with the
  ``ARG`` and ``ENV`` values each stage sees, so tests can check what the
  manifests in ``deploy/`` rely on (entry point, ports, user, stage names)
  and run the build stage's own ``RUN`` lines.
- :func:`build_context` lists the files of the build context a
  ``.dockerignore`` lets through, with Docker's rules: patterns in order, the
  last one that matches a path or one of its parent folders wins, ``!``
  re-includes, ``*`` and ``?`` stop at ``/``, ``**`` crosses folders.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shlex
from collections.abc import Iterator, Mapping

_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def expand(text: str, values: Mapping[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced as the Dockerfile parser does (an
    unknown name becomes empty)."""
    return _VARIABLE.sub(lambda m: values.get(m.group(1) or m.group(2), ""), text)


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One instruction, continuation lines joined."""

    keyword: str
    """Upper case: ``RUN``, ``COPY``..."""
    text: str
    """Everything after the keyword, unexpanded."""

    def exec_form(self) -> list[str] | None:
        """The JSON array of ``ENTRYPOINT ["a", "b"]``; None for the shell form."""
        if not self.text.startswith("["):
            return None
        value = json.loads(self.text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self.text
        return [str(v) for v in value]


@dataclasses.dataclass(frozen=True)
class Stage:
    """``FROM base AS name`` and what follows it up to the next ``FROM``."""

    base: str
    """The image, ARGs expanded."""
    name: str
    instructions: tuple[Instruction, ...]
    global_args: Mapping[str, str]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def variables(self, until: Instruction | None = None) -> dict[str, str]:
        """The ARG and ENV values an instruction of this stage sees (those
        set before ``until``; all of them by default)."""
        values: dict[str, str] = {}
        for i in self.instructions:
            if i is until:
                break
            if i.keyword == "ARG":
                name, eq, default = i.text.partition("=")
                values[name] = expand(default, values) if eq else self.global_args.get(name, "")
            elif i.keyword == "ENV":
                values.update({k: expand(v, values) for k, v in key_values(i.text).items()})
        return values

    def env(self) -> dict[str, str]:
        """The ENV of the stage alone (what a container of it starts with,
        less the base image's own)."""
        values: dict[str, str] = {}
        seen = self.variables()
        for i in self.all("ENV"):
            values.update({k: expand(v, seen) for k, v in key_values(i.text).items()})
        return {k: seen[k] for k in values}

    def labels(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in self.all("LABEL"):
            out.update(key_values(i.text))
        return out


@dataclasses.dataclass(frozen=True)
class Dockerfile:
    global_args: Mapping[str, str]
    """ARGs declared before the first FROM, with their defaults."""
    stages: tuple[Stage, ...]

    def stage(self, name: str) -> Stage:
        (found,) = [s for s in self.stages if s.name == name]
        return found


def key_values(text: str) -> dict[str, str]:
    """``K=V K2="v 2"`` of ENV and LABEL (quotes removed, ``\\`` escapes kept
    out); the old ``ENV K V`` form too."""
    words = shlex.split(text)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


def _logical_lines(text: str) -> Iterator[str]:
    """Lines with comments dropped and ``\\`` continuations joined."""
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if line:
            yield line
    assert not pending, "the Dockerfile ends inside a continued line"


def parse(text: str) -> Dockerfile:
    """The stages of a Dockerfile, in order."""
    global_args: dict[str, str] = {}
    heads: list[tuple[str, str]] = []
    bodies: list[list[Instruction]] = []
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        ins = Instruction(keyword.upper(), rest.strip())
        if ins.keyword == "FROM":
            words = [w for w in ins.text.split() if not w.startswith("--")]
            named = len(words) == 3 and words[1].upper() == "AS"
            heads.append((expand(words[0], global_args), words[2] if named else str(len(heads))))
            bodies.append([])
        elif not bodies:
            assert ins.keyword == "ARG", f"only ARG may come before the first FROM: {line}"
            name, _, default = ins.text.partition("=")
            global_args[name] = default
        else:
            bodies[-1].append(ins)
    stages = tuple(
        Stage(base, name, tuple(body), global_args)
        for (base, name), body in zip(heads, bodies, strict=True)
    )
    return Dockerfile(global_args, stages)


# --- .dockerignore ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    regex: re.Pattern[str]
    include: bool
    """A ``!`` rule: re-includes what it matches."""


def _regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1].replace("[!", "[^"), end + 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            out, i = out + re.escape(pattern[i + 1]), i + 2
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignore_rules(text: str) -> list[IgnoreRule]:
    """The rules of a .dockerignore, in order."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append(IgnoreRule(pattern, _regex(pattern), include))
    return rules


def excluded(rules: list[IgnoreRule], path: str) -> bool:
    """Whether the context leaves out this path (``a/b/c``, relative)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for rule in rules:
        if any(rule.regex.match(p) for p in prefixes):
            result = not rule.include
    return result


def _may_include_below(rules: list[IgnoreRule], folder: str) -> bool:
    """Whether some ``!`` rule could re-include a path inside this excluded
    folder (else the walk skips it, as Docker does)."""
    depth = folder.count("/") + 1
    for rule in rules:
        if not rule.include:
            continue
        if "**" in rule.pattern:
            return True
        head = "/".join(rule.pattern.split("/")[:depth])
        if rule.pattern.count("/") + 1 > depth and _regex(head).match(folder):
            return True
    return False


def build_context(root: pathlib.Path, rules: list[IgnoreRule]) -> list[str]:
    """The files (relative, ``/``-separated) a build of ``root`` sends."""
    files: list[str] = []
    for folder, dirs, names in os.walk(root):
        rel = pathlib.Path(folder).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        dirs[:] = sorted(
            d
            for d in dirs
            if not excluded(rules, prefix + d) or _may_include_below(rules, prefix + d)
        )
        files += [prefix + n for n in sorted(names) if not excluded(rules, prefix + n)]
    return files
