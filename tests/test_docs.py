"""The docs: a short README, a site that builds strictly, and the generated reference pages
(every config key, every command and option) as the code defines them today."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import gen_reference  # noqa: E402


def test_the_generated_reference_is_what_the_code_defines():
    for path, text in gen_reference.generate().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} is out of date: run `.venv/bin/python docs/gen_reference.py`")


def test_every_config_key_is_in_the_reference():
    from edgekiln.engine.config import config_model

    page = gen_reference.PAGES["config"].read_text(encoding="utf-8")
    for section, field in config_model().model_fields.items():
        for model in gen_reference._models_in(field.annotation):
            for key in model.model_fields:
                assert f"`{section}.{key}`" in page or f"`{section}[].{key}`" in page, f"{section}.{key}"


def test_the_site_builds_strictly_and_the_readme_stays_short(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "architecture" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "config-keys" / "index.html").is_file()
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250
