"""edgekiln as a package: the wheel holds every module it imports (a stage package or a
format left out of pyproject.toml would only show outside the repository), and installed in
a fresh venv it gives a working `edgekiln` command and `python -m edgekiln` away from the
source tree."""

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_a_working_edgekiln_outside_the_repository(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("edgekiln-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # The dependencies (torch and the converters) from this venv, not downloaded again; its
    # editable edgekiln is not on the path (a .pth line adds a folder, not its .pth files).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    config = tmp_path / "digits.toml"
    config.write_text((ROOT / "examples" / "digits.toml").read_text())

    def edgekiln(*args, module=False):
        command = [str(python), "-m", "edgekiln"] if module else [str(venv / "bin" / "edgekiln")]
        return subprocess.run([*command, *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)

    where = subprocess.run([str(python), "-c", "import edgekiln.stages.given, edgekiln; print(edgekiln.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert where.returncode == 0 and where.stdout.startswith(str(site)), where.stdout + where.stderr
    version = edgekiln("--version")
    assert version.returncode == 0 and version.stdout.strip().startswith("edgekiln 0."), version.stdout
    assert edgekiln("-h").returncode == 0 and "compress" in edgekiln("-h").stdout
    valid = edgekiln("validate", str(config))
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "stages: teacher → distill → prune → quantize → export" in " ".join(valid.stdout.split())
    listed = edgekiln("profile", "ls", module=True)
    assert listed.returncode == 0 and "x86-server-avx2" in listed.stdout and "shipped" in listed.stdout
    assert "Apache-2.0" in (next(site.glob("edgekiln-*.dist-info")) / "METADATA").read_text()
    schema = subprocess.run([str(python), "-c", "from edgekiln.engine.manifest_schema import SCHEMA_FILE; "
                             "import json; print(json.loads(SCHEMA_FILE.read_text())['title'])"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert schema.returncode == 0 and "schema_version 2" in schema.stdout, schema.stdout + schema.stderr


def test_the_all_extra_is_every_format_extra():
    """`all` is listed in full (a project naming its own extras sends pip's resolver into
    minutes of backtracking); it must stay the union of the format extras."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    from edgekiln.targets import format_names, get_format

    formats = {get_format(name).EXTRA for name in format_names()}
    assert formats == {"onnx", "tflite", "coreml", "executorch"}
    assert sorted(extras["all"]) == sorted(req for name in formats for req in extras[name])
