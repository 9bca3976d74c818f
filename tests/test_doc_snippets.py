"""Every snippet in README.md and docs/ is true to the code: each `edgekiln` command line
names a real command with options it has (a concrete line parses as the command line would
parse it), and each Python snippet runs against the shared tiny run's default artifacts."""

import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest
import typer

from edgekiln.interfaces.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md")
                                     if p.name not in ("cli.md", "config-keys.md"))]  # generated from the code
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SYNOPSIS = re.compile(r"[\[\]|()]|\.\.\.")  # a usage line: [optional], a | b, (group), repeated...


def blocks(language: str):
    for page in PAGES:
        for match in FENCE.finditer(page.read_text(encoding="utf-8")):
            if match.group(1) == language:
                yield page, match.group(2)


def command_lines() -> list[tuple[str, str]]:
    """(page, line) of every `edgekiln ...` line in a shell block, continuations joined."""
    found = []
    for language in ("", "sh", "bash", "console"):
        for page, body in blocks(language):
            for line in body.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ").strip()
                if line.startswith("edgekiln "):
                    found.append((str(page.relative_to(ROOT)), line))
    return found


def python_snippets() -> dict[str, str]:
    return {f"{page.relative_to(ROOT)}#{i}": body
            for i, (page, body) in enumerate(blocks("python"))}


def _command(words: list[str]):
    """The (click) command a line names, through groups such as `profile ls`; its arguments."""
    command, name = typer.main.get_command(app), "edgekiln"
    while hasattr(command, "commands") and words and words[0] in command.commands:
        name += " " + words[0]
        command, words = command.commands[words[0]], words[1:]
    return command, words, name


def test_the_pages_hold_commands_and_python_to_check():
    assert len(command_lines()) >= 20 and len(python_snippets()) >= 2


@pytest.mark.parametrize("page,line", command_lines(), ids=lambda v: v if "/" in v or v.endswith(".md") else None)
def test_every_command_line_in_the_docs_is_one_the_cli_takes(page, line):
    words = shlex.split(line, comments=True)[1:]
    command, args, name = _command(words)
    assert not hasattr(command, "commands"), f"{page}: `{line}` names no command of `{name}`"
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    for word in args:
        flag = word.split("=", 1)[0]
        if flag.startswith("--"):
            assert flag in options, f"{page}: `{line}`: `{name}` has no option {flag}"
    if SYNOPSIS.search(" ".join(args)):
        return  # a usage line: its options exist; its placeholders are not values
    try:
        command.make_context(name, list(args), resilient_parsing=False)
    except typer.Exit:
        pass
    except Exception as e:  # typer's own click: a usage error, which says what is wrong
        if not hasattr(e, "format_message"):
            raise
        pytest.fail(f"{page}: `{line}`: {e.format_message()}")


@pytest.fixture(scope="module")
def artifacts_folder(run, tmp_path_factory):
    """A folder holding what the snippets name: the shared run's default ONNX artifact as
    model.onnx, a camera frame (a test image) as frame.jpg, the shared run's config as
    examples/digits.toml with its cache, and its output as the last release."""
    import json

    import numpy as np
    import torch
    from PIL import Image

    from edgekiln.targets import get_format

    root, _, manifest = run
    tmp_path = tmp_path_factory.mktemp("snippets")
    onnx = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
    shutil.copy(root / "out" / onnx["path"], tmp_path / "model.onnx")
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images[0] * 255 / 16).astype("uint8")
    Image.fromarray(pixels).convert("RGB").resize((64, 64)).save(tmp_path / "frame.jpg")
    # No .pte among the shared run's artifacts (lowering is slow): a small model of its own.
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, len(manifest["labels"]))).eval()
    metadata = {"labels": json.dumps(manifest["labels"])}
    get_format("executorch").export(model, torch.zeros(1, 3, 32, 32), np.zeros((4, 3, 32, 32), np.float32),
                                    tmp_path / "model.pte", metadata, encoding="fp32")
    (tmp_path / "examples").mkdir()
    shutil.copy(root / "tiny.toml", tmp_path / "examples" / "digits.toml")
    shutil.copytree(root / "out", tmp_path / "releases" / "v1")
    return tmp_path, root / "cache", manifest


@pytest.fixture
def artifacts_here(artifacts_folder, monkeypatch):
    folder, cache, manifest = artifacts_folder
    monkeypatch.chdir(folder)
    monkeypatch.setenv("EDGEKILN_CACHE_DIR", str(cache))
    return manifest


@pytest.mark.parametrize("name", sorted(python_snippets()))
def test_every_python_snippet_in_the_docs_runs(name, artifacts_here):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(python_snippets()[name], name, "exec"), {"__name__": "__snippet__"})
    assert printed.getvalue().strip(), f"{name} printed nothing"
    if "onnxruntime" in python_snippets()[name]:
        assert printed.getvalue().strip() in artifacts_here["labels"], printed.getvalue()
    if "model.pte" in python_snippets()[name]:
        assert printed.getvalue().strip() == str(artifacts_here["labels"]), printed.getvalue()
