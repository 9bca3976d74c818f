"""mkdocs hook: the architecture page is ARCHITECTURE.md itself (one file, read by the site
and on GitHub), added to the site at build time."""

from pathlib import Path

from mkdocs.structure.files import File


def on_files(files, config):
    root = Path(config["config_file_path"]).parent
    files.append(File.generated(config, "architecture.md", content=(root / "ARCHITECTURE.md").read_text("utf-8")))
    return files
