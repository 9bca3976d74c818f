"""What is wrong with a config, in words a user can act on. Each problem names its key (a
target by its `name`), the value given, what is allowed, a close name where one was probably
meant, and the line of the TOML file it is on; a config's problems are all reported at once."""

from __future__ import annotations

import json
import re
import typing
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from edgekiln.system.errors import did_you_mean


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: its key (dotted, a target named by its `name`; "" for
    the config as a whole), what is wrong, and the value given (None: not worth echoing)."""

    key: str
    message: str
    given: object = None

    @classmethod
    def from_message(cls, text: str) -> "Problem":
        """A problem from a message that starts with its key ("pipeline.stages: ...")."""
        keyed = re.match(r"^([a-z_]+(?:\.[A-Za-z0-9_-]+)*): (.*)$", text, re.S)
        return cls(keyed.group(1), keyed.group(2)) if keyed else cls("", text)

    def render(self, lines: dict[str, int] | None = None) -> str:
        given = "" if self.given is None else f" = {_toml_text(self.given)}"
        line = line_of(self.key, lines or {}) if self.key else None
        where = f" (line {line})" if line else ""
        return f"{self.key}{given}{where}: {self.message}" if self.key else f"{self.message}{where}"


def key_name(loc: tuple, raw: dict | None = None) -> str:
    """The dotted key of `loc`, a target named by its `name` ("targets.android-cpu.profile",
    as budget keys name them) where the config gives one, else by its place ("targets[1]")."""
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            name = _item_name(raw, loc[:i], item)
            if name is not None:
                parts.append(name)
            else:
                parts[-1:] = [f"{parts[-1]}[{item}]" if parts else f"[{item}]"]
        else:
            parts.append(str(item))
    return ".".join(parts)


def _item_name(raw: dict | None, loc: tuple, index: int) -> str | None:
    node = raw
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    try:
        name = node[index].get("name")
    except (IndexError, TypeError, AttributeError, KeyError):
        return None
    return name if isinstance(name, str) and name else None


def _toml_text(value: object) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, bool) else str(value).lower()
    return text if len(text) <= 60 else text[:57] + "..."


# pydantic's wording, in the words of a TOML file
_PLAIN = {
    "int_type": "must be a whole number", "int_from_float": "must be a whole number",
    "int_parsing": "must be a whole number", "float_type": "must be a number", "float_parsing": "must be a number",
    "string_type": "must be text in quotes", "bool_type": "must be true or false",
    "bool_parsing": "must be true or false", "list_type": "must be a list, [...]", "tuple_type": "must be a list, [...]",
    "model_type": "must be a table", "model_attributes_type": "must be a table", "dict_type": "must be a table",
    "missing": "is required", "path_type": "must be a path in quotes",
}
_TYPE_MISMATCH = {message for kind, message in _PLAIN.items() if kind != "missing"}
_BOUNDS = {"greater_than_equal": ("at least", "ge"), "less_than_equal": ("at most", "le"),
           "greater_than": ("more than", "gt"), "less_than": ("less than", "lt"),
           "too_short": ("at least", "min_length"), "too_long": ("at most", "max_length")}
# pydantic names the branch of a union in the error's location: not part of the user's key
_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none", "path"}


def _user_loc(loc: tuple) -> tuple:
    return tuple(p for p in loc if isinstance(p, int) or not (
        "[" in p or p[:1].isupper() or p in _TYPE_NAMES))


def _message(error: dict, model: type[BaseModel], loc: tuple) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key" + did_you_mean(str(loc[-1]), fields_at(model, loc[:-1]))
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        given = error.get("input")
        return (f"must be {ctx.get('expected')}"
                + (did_you_mean(given, choices) if isinstance(given, str) else ""))
    if kind in ("value_error", "assertion_error"):
        return re.sub(r"^(Value|Assertion) error, ", "", error["msg"])
    if kind in _BOUNDS:
        words, field = _BOUNDS[kind]
        items = " item(s)" if kind.startswith("too_") else ""
        return f"must be {words} {ctx.get(field)}{items}"
    return _PLAIN.get(kind, error["msg"])


def from_validation(error: ValidationError, model: type[BaseModel], raw: dict | None = None) -> list[Problem]:
    """The problems of a failed validation of `raw` against `model`; the branches of a union
    that complain about one key become one problem ("must be "auto" or must be a list")."""
    merged: dict[tuple, list] = {}
    for e in error.errors():
        loc = _user_loc(tuple(e["loc"]))
        message = _message(e, model, loc)
        given = None if e["type"] in ("missing",) or isinstance(e.get("input"), dict) else e.get("input")
        entry = merged.setdefault(loc, [[], given])
        if message not in entry[0]:
            entry[0].append(message)
    # A union's branch of another type ("must be text" for a table given where a name or a
    # table may go) says nothing when the branch that fits the type complains inside it.
    for loc in [loc for loc, (messages, _) in merged.items() if all(m in _TYPE_MISMATCH for m in messages)]:
        if any(other[:len(loc)] == loc and len(other) > len(loc) for other in merged):
            del merged[loc]
    problems = []
    for loc, (messages, given) in merged.items():
        if loc:
            problems.append(Problem(key_name(loc, raw), " or ".join(messages), given))
        else:  # the config's own checks (the plan, target names) each name their keys
            problems.extend(Problem.from_message(message) for message in messages)
    return problems


def fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the table at `loc` may hold (for "did you mean"), or [] where it is not a table."""
    node: object = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(node, type) and issubclass(node, BaseModel)) or part not in node.model_fields:
            return []
        node = _model_in(node.model_fields[part].annotation)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _model_in(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _dotted(text: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(r"""(?:"[^"]*"|'[^']*'|[^.]+)""", text)]


def toml_lines(text: str) -> dict[tuple, int]:
    """The line (1-based) of each table header and key in TOML `text`, by its path as pydantic
    locates it (an array of tables by index: ("targets", 1, "profile")). Lines inside a
    multi-line string are skipped; a key in an inline table takes its table's line (line_of)."""
    lines: dict[tuple, int] = {}
    arrays: dict[tuple, int] = {}
    table: tuple = ()
    in_string = None
    for number, line in enumerate(text.splitlines(), 1):
        if in_string:
            if line.count(in_string) % 2:
                in_string = None
            continue
        header = _HEADER.match(line)
        if header and "=" not in line.split("#")[0].split("]")[0]:
            path = _indexed(tuple(_dotted(header.group(2))), arrays)
            if header.group(1) == "[[":
                arrays[path] = arrays.get(path, 0) + 1
                path = (*path, arrays[path] - 1)
            table = path
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*table, *_dotted(key.group(1))), number)
            rest = line[key.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2:
                    in_string = quote
    return lines


def _indexed(path: tuple, arrays: dict[tuple, int]) -> tuple:
    """A table header's path with the current index of every array of tables it is inside
    (`[targets.budget]` after the second `[[targets]]`: ("targets", 1, "budget"))."""
    out: tuple = ()
    for part in path:
        out = (*out, part)
        if out in arrays and out != path:
            out = (*out, arrays[out] - 1)
    return out


def key_lines(text: str, raw: dict) -> dict[str, int]:
    """toml_lines by dotted key, named as problems name them (key_name)."""
    return {key_name(loc, raw): line for loc, line in toml_lines(text).items()}


def line_of(key: str, lines: dict[str, int]) -> int | None:
    """The line of `key`, or of the nearest table or key that holds it."""
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return None


def render(name: str, problems: list[Problem], lines: dict[str, int] | None = None) -> str:
    """The message of a config error: how many problems, then one line each."""
    lines = lines or {}
    in_file_order = sorted(problems, key=lambda p: line_of(p.key, lines) or 0)
    count = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
    return f"{name} has {count}:\n" + "\n".join(f"  {p.render(lines)}" for p in in_file_order)
