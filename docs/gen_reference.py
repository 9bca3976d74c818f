"""Write the generated reference pages of the docs from the code, so they cannot drift:
docs/reference/config-keys.md from the config's pydantic schema (every key of every section,
its type, default and the comment beside it in the source) and docs/reference/cli.md from
the typer app (every command and option with its help). tests/test_docs.py fails when the
committed pages differ from what this writes.

    .venv/bin/python docs/gen_reference.py            # rewrite both pages
"""

from __future__ import annotations

import inspect
import io
import sys
import tokenize
import types
import typing
from pathlib import Path

from pydantic import BaseModel

HERE = Path(__file__).resolve().parent
PAGES = {"config": HERE / "reference" / "config-keys.md", "cli": HERE / "reference" / "cli.md"}


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """The comment on each field's line in the source of `model` (and its bases)."""
    out: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        lines: dict[int, str] = {}
        names: dict[int, str] = {}
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                lines[token.start[0]] = token.string.lstrip("# ").strip()
        for number, line in enumerate(source.splitlines(), 1):
            stripped = line.strip()
            if ":" in stripped and not stripped.startswith(("#", "def ", "@", "class ", "return", '"')):
                name = stripped.split(":")[0].strip()
                if name.isidentifier():
                    names[number] = name
        for number, name in names.items():
            comment = lines.get(number)
            # a comment on the lines just above the field, when the field's own line has none
            above = []
            k = number - 1
            while comment is None and k in lines and source.splitlines()[k - 1].strip().startswith("#"):
                above.insert(0, lines[k])
                k -= 1
            out[name] = comment or " ".join(above)
    return out


def _type(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type(typing.get_args(annotation)[0])
    if origin in (list, tuple, dict):
        args = ", ".join(_type(a) for a in typing.get_args(annotation))
        return f"{origin.__name__}[{args}]"
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.default
    if isinstance(value, BaseModel):
        return "(a table)"
    if value is None:
        return "none"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) < 40 else text[:37] + "..."


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models_in(a)]


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    comments = _comments(model)
    rows, nested = [], []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        comment = comments.get(name, "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_type(field.annotation)} | {_default(field)} | {comment} |")
        for sub in _models_in(field.annotation):
            nested.append((f"{key}[]" if typing.get_origin(field.annotation) is list else key, sub))
    for key, sub in nested:
        rows += _rows(sub, key)
    return rows


def config_page() -> str:
    from edgekiln.engine.config import config_model

    model = config_model()
    out = ["# Every config key", "",
           "Generated from the config's schema by `docs/gen_reference.py` (the comment column is the comment",
           "beside the key in the source). The prose reference, with what each key does and why, is",
           "[Configuration](configuration.md). `[]` marks a list of tables (`[[targets]]`).", ""]
    for section, field in model.model_fields.items():
        doc = " ".join((inspect.getdoc(_models_in(field.annotation)[0]) or "").split()) \
            if _models_in(field.annotation) else ""
        out += [f"## `[{section}]`", "", doc, "", "| key | type | default | note |", "|---|---|---|---|"]
        subs = _models_in(field.annotation)
        out += _rows(subs[0], section) if subs else [f"| `{section}` | {_type(field.annotation)} | "
                                                     f"{_default(field)} | |"]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def cli_page() -> str:
    import typer.main

    from edgekiln.interfaces.cli import app

    root = typer.main.get_command(app)
    out = ["# Every command and option", "",
           "Generated from the command line's definitions by `docs/gen_reference.py`; `edgekiln COMMAND -h`",
           "prints the same. The prose guide is [The command line](command-line.md).", ""]

    def walk(command, path: list[str]) -> None:
        if getattr(command, "commands", None):  # a group (typer's own click types, or click's)
            for name in sorted(command.commands):
                walk(command.commands[name], path + [name])
            return
        out.extend([f"## `edgekiln {' '.join(path)}`", "", " ".join((command.help or "").split()), ""])
        params = [p for p in command.params if p.name != "help"]
        if params:
            out.extend(["| argument or option | default | help |", "|---|---|---|"])
            for p in params:
                names = ", ".join(f"`{o}`" for o in p.opts + getattr(p, "secondary_opts", [])) \
                    if getattr(p, "param_type_name", "") == "option" else f"`{p.name.upper()}`"
                default = "" if p.default in (None, False) or callable(p.default) else f"`{p.default}`"
                help_text = " ".join((getattr(p, "help", None) or "").split()).replace("|", "\\|")
                out.append(f"| {names} | {default} | {help_text} |")
            out.append("")

    walk(root, [])
    return "\n".join(out).rstrip() + "\n"


def generate() -> dict[Path, str]:
    return {PAGES["config"]: config_page(), PAGES["cli"]: cli_page()}


if __name__ == "__main__":
    for path, text in generate().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    sys.exit(0)
