"""Long runs, outside the default suite: `make test-all` (or pytest -m slow)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from edgekiln.engine.config import load_config
from edgekiln.interfaces.cli import app

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(config, out, cache):
    return CliRunner().invoke(app, ["run", str(config), "--out", str(out), "--cache-dir", str(cache)])


def test_the_executorch_example_ships_a_pte_scored_in_executorch(tmp_path):
    result = run(ROOT / "examples" / "executorch.toml", tmp_path / "out", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    [artifact] = manifest["artifacts"]
    assert artifact["path"] == "model.pte" and artifact["accuracy_source"] == "runtime"
    assert artifact["test_accuracy_source"] == "runtime" and artifact["latency_source"] == "host"


@pytest.mark.parametrize("example", ["digits.toml", "mobilevit.toml", "mobilenetv4.toml", "prune_to_latency.toml",
                                     "qat.toml"])
def test_example_config_passes_its_own_budget(example, tmp_path):
    """The demo, one example per student family, pruning to a latency and QAT: exit 0 and all three artifacts."""
    result = run(ROOT / "examples" / example, tmp_path / "out", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {a["path"] for a in manifest["artifacts"]} == {"model.tflite", "model.onnx", "model.mlpackage"}
    assert min(a["accuracy"] for a in manifest["artifacts"]) > 90


# The shipped examples' recipe, scaled down to run here: no pretrained weights (no
# network), so small models trained from scratch, fewer epochs, a lenient budget.
SCALE_DOWN = [('candidates = ["resnet50", "efficientnet_b0"]', 'candidates = ["resnet10t"]'),
              ("pretrained = true", "pretrained = false"), ("\nepochs = 10", "\nepochs = 4"),
              ('arch = "mobilenetv3_large_100"', 'arch = "mobilenetv3_small_050"'),
              ("\nepochs = 30\nlr = 2e-3", "\nepochs = 12\nlr = 6e-3"), ("finetune_epochs = 10", "finetune_epochs = 2"),
              ("max_drop_total = 3.0", "max_drop_total = 30.0")]


def scaled_down(example: str, tmp_path, replacements) -> Path:
    """examples/`example` with `replacements` and SCALE_DOWN applied (each must be there),
    written under `tmp_path`."""
    text = (ROOT / "examples" / example).read_text()
    for old, new in [*replacements, *SCALE_DOWN]:
        assert old in text, old
        text = text.replace(old, new)
    config = tmp_path / example
    config.write_text(text)
    return config


def test_imagefolder_example_runs_on_a_generated_folder(tmp_path):
    """The shipped imagefolder example, pointed at digits written out as PNG files and
    scaled down to run here: no pretrained weights (no network), so the small student
    trained from scratch, fewer epochs, small images."""
    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = tmp_path / "images" / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 15).astype(np.uint8)).resize((40, 40)).save(folder / f"{i}.png")
    config = scaled_down("imagefolder.toml", tmp_path, [
        ('path = "../data/my_images"', f'path = "{tmp_path / "images"}"'), ("image_size = 96", "image_size = 32"),
        ("prune = 1.5", "prune = 30"), ("quantize = 1.0", "quantize = 30"), ("export = 0.5", "export = 30")])
    assert load_config(config).data.path == tmp_path / "images"
    result = run(config, tmp_path / "out", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["labels"] == [f"digit_{i}" for i in range(10)]
    assert all(a["accuracy"] > 60 for a in manifest["artifacts"])  # chance: 10%; 76-77% seen


def test_the_digits_imagefolder_example_passes_on_the_folder_its_command_writes(tmp_path):
    """examples/digits_imagefolder.toml as shipped (peers.py's second dataset), on the folder
    `train_your_model.py --images-only` writes: exit 0 within its budget, at 40 px."""
    import subprocess
    import sys

    subprocess.run([sys.executable, str(ROOT / "examples" / "compress" / "train_your_model.py"), "--out",
                    str(tmp_path / "your-model"), "--images-only"], check=True)
    text = (ROOT / "examples" / "digits_imagefolder.toml").read_text().replace(
        '"../out/your-model/', f'"{tmp_path / "your-model"}/')
    config = tmp_path / "digits_imagefolder.toml"
    config.write_text(text)
    result = run(config, tmp_path / "out", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["labels"] == [str(i) for i in range(10)] and manifest["splits"]["test"] == 360
    assert manifest["preprocessing"]["image_size"] == 40
    assert min(a["accuracy"] for a in manifest["artifacts"]) > 97


def test_webdataset_example_runs_on_generated_shards(tmp_path):
    """The shipped webdataset example, pointed at the digits written out as shards (train,
    val and test) and scaled down to run here, streamed."""
    import io

    import webdataset as wds

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    parts = {"train": order[:1100], "val": order[1100:1450], "test": order[1450:]}
    (tmp_path / "shards").mkdir()
    for split, members in parts.items():
        with wds.ShardWriter(str(tmp_path / "shards" / f"{split}-%06d.tar"), maxcount=300, verbose=0) as sink:
            for i in members:
                png = io.BytesIO()
                Image.fromarray((digits.images[i] * 15).astype(np.uint8)).resize((40, 40)).save(png, format="PNG")
                sink.write({"__key__": f"{i:06d}", "png": png.getvalue(), "cls": str(digits.target[i])})
    config = scaled_down("webdataset.toml", tmp_path, [
        ('"../data/shards/train-{000000..000099}.tar"', f'"{tmp_path}/shards/train-{{000000..000003}}.tar"'),
        ('"../data/shards/val-{000000..000004}.tar"', f'"{tmp_path}/shards/val-{{000000..000001}}.tar"'),
        ('"../data/shards/test-{000000..000004}.tar"', f'"{tmp_path}/shards/test-{{000000..000001}}.tar"'),
        ('classes = ["cat", "dog", "fox"]', "streaming = true"), ("image_size = 224", "image_size = 32"),
        ("shuffle_buffer = 5000", "shuffle_buffer = 500"), ("num_workers = 8", "num_workers = 2"),
        ("hflip = true", "hflip = false")])
    result = run(config, tmp_path / "out", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["labels"] == [str(i) for i in range(10)]
    assert manifest["splits"]["test"] == len(parts["test"]) and manifest["splits"]["release_gates_on"] == "test"
    assert all(a["accuracy"] > 60 for a in manifest["artifacts"])  # chance: 10%
    assert list((tmp_path / "cache" / ".index").glob("shards-*.json"))


def test_the_fashion_mnist_example_runs_on_the_idx_files_scaled_down(tmp_path):
    """examples/fashion_mnist.toml on Debian's dataset-fashion-mnist (.ci/run installs it),
    scaled down to run here: 1,000 training images, small caps (3 epochs for teacher and
    student). Every loop on "auto"; the official t10k files are the test split."""
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file():
        pytest.fail("no /usr/share/datasets/fashion-mnist: apt-get install dataset-fashion-mnist (.ci/run does)")
    config = tmp_path / "fashion_mnist.toml"
    text = (ROOT / "examples" / "fashion_mnist.toml").read_text()
    for old, new in (("max_samples = 10000", "max_samples = 1000"), ("max_epochs = 40", "max_epochs = 3"),
                     ('candidates = ["resnet14t", "resnet10t"]', 'candidates = ["resnet10t"]'),
                     ('arch = ["resnet10t_w24", "resnet10t_w32"]', 'arch = "resnet10t_w16"'),
                     ("max_epochs = 12", "max_epochs = 1"),
                     ("max_drop_total = 1.5", "max_drop_total = 60")):
        assert old in text, old
        text = text.replace(old, new)
    config.write_text(text)
    result = run(config, tmp_path / "out", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["labels"][0] == "T-shirt/top" and manifest["splits"]["test"] == 10000
    assert manifest["teacher"]["candidates"][0]["schedule"]["mode"] == "auto"
    assert manifest["student"]["auto"]["epochs"] <= 3


def test_the_auto_epochs_benchmark_runs_in_its_tiny_mode():
    """benchmarks/auto_epochs.py --tiny: a benchmark nobody runs rots."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "auto_epochs.py"), "--tiny"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| fixed", "| auto"))]
    assert len(rows) == 4, done.stdout
    assert all("auto" not in row or "reached" in row or "no val improvement" in row for row in rows)


def test_the_peers_and_onnx_weight_type_benchmarks_run_in_their_tiny_modes_on_a_compress_run(tmp_path):
    """benchmarks/peers.py --tiny on `edgekiln compress`'s output: the given model through
    onnxruntime quantize_static beside edgekiln's artifact, on the same checkpoint."""
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "examples" / "compress"))
    import train_your_model

    weights = train_your_model.main(["--out", str(tmp_path), "--arch", "resnet10t", "--epochs", "2"])
    digits = tmp_path / "digits"
    result = CliRunner().invoke(app, [
        "compress", "--arch", "resnet10t", "--weights", str(weights), "--data", str(digits / "train"),
        "--test-data", str(digits / "test"), "--image-size", "32", "--budget", "5", "--target", "x86-server-avx2",
        "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peers.py"), str(tmp_path / "out"), "--tiny",
                           "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    names = [row.split("|")[1].strip() for row in rows[1:]]
    assert names[:3] == ["your model fp32 (onnxruntime)", "your model ort quantize_static U8S8 reduce_range",
                         "your model ort quantize_static U8U8"], done.stdout
    assert any(name.startswith("edgekiln x86-server-avx2 (onnx") for name in names), done.stdout
    assert "best peer in the same runtime" in done.stdout and "onnx: your model ort quantize_static" in done.stdout
    # benchmarks/onnx_int8_weight_types.py on the same run: each ONNX INT8 layout beside fp32
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "onnx_int8_weight_types.py"),
                           str(tmp_path / "out"), "--tiny", "--cache-dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    names = [line.split("|")[1].strip() for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    assert names == ["fp32", "U8S8", "U8S8 + reduce_range", "U8U8"], done.stdout
    assert "int8_types on this host: weight type int8" in done.stdout


def test_the_unlabelled_benchmark_runs_in_its_tiny_mode_with_a_zero_shot_arm(tmp_path):
    """benchmarks/unlabelled.py --tiny, with a small CLIP model for arm (d)."""
    import subprocess
    import sys

    from test_zero_shot import tiny_clip

    clip = tiny_clip(tmp_path / "clip")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "unlabelled.py"), "--tiny", "--clip", str(clip)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    arms = [line.split("|")[1].strip() for line in done.stdout.splitlines() if line.startswith("| (")]
    assert arms == ["(a) supervised, labelled only", "(b) KD, labelled only", "(c) KD, labelled + unlabelled rest",
                    "(d) KD from zero-shot CLIP, no labels"], done.stdout
    assert "gain of (c) over (b):" in done.stdout


def test_the_preprocessing_check_benchmark_runs_in_its_tiny_mode():
    """benchmarks/preprocessing_check.py --tiny, on the Fashion-MNIST IDX files."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "preprocessing_check.py"), "--tiny"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "px" in line]
    assert len(rows) == 3 and rows[1].startswith("| 176 px with ImageNet mean/std | refused"), done.stdout


def test_the_first_run_benchmark_runs_init_and_its_config_in_its_tiny_mode(tmp_path):
    """benchmarks/first_run.py --tiny: `edgekiln init` on a Fashion-MNIST folder, then its
    config run as written (every cap cut to 2 epochs)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "first_run.py"), "--tiny", "--work",
                           str(tmp_path)], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| fashion"))
    assert "| 400 |" in row, done.stdout
    written = (tmp_path / "fashion-tiny" / "edgekiln.toml").read_text()
    assert 'arch = ["resnet10t_w24", "resnet10t_w32"]' in written and "pretrained = false" in written
