"""What would fail after training fails before it: `validate` and the start of `run` refuse,
exit 2, a data folder that cannot be a dataset and a device that cannot be reached, and the
run leaves no stage in the cache."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgekiln.interfaces.cli import app

TARGET_SERVER = '[[targets]]\nname = "server"\nprofile = "x86-server-avx2"\n'
TARGET_PHONE = '[[targets]]\nname = "phone"\nprofile = "pixel-6-cpu"\n'


def _images(folder, count=3):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((12, 12, 3), i * 40, dtype=np.uint8)).save(folder / f"{i}.png")


def _folder_with_classes(root):
    _images(root / "a")
    _images(root / "b")
    return root


def _file_instead_of_folder(root):
    root.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(root.with_suffix(".png"))
    return root.with_suffix(".png")


def _an_empty_class(root):
    _images(root / "a")
    (root / "b" / ".thumbnails").mkdir(parents=True)  # only a hidden folder: no image
    return root


def _flat_folder(root):
    _images(root, 4)
    return root


CASES = {
    "a file, not a folder": (_file_instead_of_folder, TARGET_SERVER, "is a file; give the folder that holds one "
                             "sub-folder of images per class"),
    "an empty class folder": (_an_empty_class, TARGET_SERVER, "/b holds no images"),
    "images with no class folders": (_flat_folder, TARGET_SERVER, "holds 4 images but 0 class sub-folders"),
    "an adb device not attached": (_folder_with_classes, TARGET_PHONE, "targets.phone (line 9): cannot reach the device of "
                                   "profile pixel-6-cpu (adb runner): adb executable '/nonexistent/adb' not found"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_validate_and_run_refuse_before_any_training(tmp_path, case):
    make, target, message = CASES[case]
    data = make(tmp_path / "data")
    config = tmp_path / "c.toml"
    config.write_text(f'[data]\nsource = "imagefolder"\npath = "{data}"\n\n[teacher]\ncandidates = ["resnet10t"]\n'
                      f'epochs = 1\n\n{target}')
    checked = CliRunner().invoke(app, ["validate", str(config)])
    assert checked.exit_code == 2 and message in " ".join(checked.stderr.split()), checked.output
    assert "config error" not in checked.stdout  # errors go to stderr, results to stdout
    ran = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "out"),
                                   "--cache-dir", str(tmp_path / "cache")])
    assert ran.exit_code == 2 and message in " ".join(ran.stderr.split()), ran.output
    assert not (tmp_path / "cache" / "teacher").exists() and not (tmp_path / "out" / "manifest.json").exists()


def test_the_phone_target_that_allows_an_estimate_validates_without_the_phone(tmp_path):
    data = _folder_with_classes(tmp_path / "data")
    config = tmp_path / "c.toml"
    config.write_text(f'[data]\nsource = "imagefolder"\npath = "{data}"\n\n[teacher]\ncandidates = ["resnet10t"]\n\n'
                      f'{TARGET_PHONE}allow_estimate = true\n')
    checked = CliRunner().invoke(app, ["validate", str(config)])
    assert checked.exit_code == 0, checked.output


def test_validate_refuses_pretrained_weights_this_machine_cannot_have(tmp_path, monkeypatch):
    """Offline (HF_HUB_OFFLINE) and not in the hub cache: `validate` refuses `pretrained =
    true` naming the candidate, without importing torch; a cached repo of the architecture
    (any tag) lets it pass."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    from edgekiln import hub_access

    hub_access._connects.cache_clear()
    config = tmp_path / "c.toml"
    config.write_text('[data]\nsource = "digits"\n[teacher]\ncandidates = ["resnet18", "clip:some/model"]\n'
                      'pretrained = true\n[student]\narch = "resnet10t_w16"\n' + TARGET_SERVER)
    result = CliRunner().invoke(app, ["validate", str(config)], terminal_width=400)
    said = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "teacher.candidates[0]: pretrained = true needs timm's weights for resnet18" in said
    assert "HF_HUB_OFFLINE is set" in said and "candidates[1]" not in said  # clip: is not timm's
    snapshot = tmp_path / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"")
    assert CliRunner().invoke(app, ["validate", str(config)]).exit_code == 0
