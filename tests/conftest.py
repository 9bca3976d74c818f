import json
import os

import pytest

# Keep the converters' own progress output out of test logs.
os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests never reach the Hugging Face hub: a hub id fails at once instead of after retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# No Android device answers in tests, even on a machine that has one attached: the adb
# runner's tests put their own fake adb in place.
os.environ["EDGEKILN_ADB"] = "/nonexistent/adb"
# report.html renders with StrictUndefined: a figure the template reads without a guard fails
# the test that renders it, instead of a user's run.
os.environ["EDGEKILN_STRICT_TEMPLATES"] = "1"
# Every manifest a test writes (in this process or a command it starts) is validated against
# the shipped JSON Schema before it is written (engine/manifest.write_manifest).
os.environ["EDGEKILN_CHECK_MANIFESTS"] = "1"


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """The tiny pipeline, trained once for the whole session: (root, CLI result, manifest).
    Its cache (root / "cache") is shared by every test that re-runs a variant of it."""
    from tiny_pipeline import invoke, write_config

    root = tmp_path_factory.mktemp("e2e")
    result = invoke(write_config(root), root / "out", root / "cache")
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    return root, result, manifest


@pytest.fixture(scope="session")
def profileless_run(run):
    """The shared pipeline with targets that name no profile (ONNX, Core ML, TFLite), and a
    budget.max_drop.quantize of half what its plain INT8 simulation lost, so the quantize
    stage keeps layers in float: quantize and export re-run. (folder, CLI result, manifest)."""
    from tiny_pipeline import PROFILELESS_TARGETS, invoke, write_config

    root, _, first = run
    prune = next(s for s in first["stages"] if s["name"] == "prune")["accuracy"]
    plain_drop = prune - first["quantize"]["ptq_accuracy"]
    assert plain_drop > 0.2, f"the shared run's plain INT8 simulation lost {plain_drop:.2f} points: nothing to recover"
    work = root / "profileless"
    work.mkdir()
    config = write_config(work, targets=PROFILELESS_TARGETS,
                          extra=f"\n[budget.max_drop]\nquantize = {plain_drop / 2:.3f}\n")
    # straight to the float layers this fixture exists for (the ladder's calibration rung is
    # tests/test_int8_options.py's)
    config.write_text(config.read_text().replace("[quantize]\n", '[quantize]\nladder = ["float_layers"]\n'))
    result = invoke(config, work / "out", root / "cache")
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    return work, result, manifest
