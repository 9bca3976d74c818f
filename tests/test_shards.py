"""WebDataset shards (`source = "webdataset"`): indexed once and cached, read in sequence,
an epoch's order served from a bounded buffer, and training on streamed shards equal to
training on the same shards decoded into memory."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from edgekiln.data import shards
from edgekiln.data.config import DataConfig
from edgekiln.data.dataset import load_dataset
from edgekiln.errors import InputError
from edgekiln.training import distillation, modeling, trainer
from edgekiln.training.config import TrainConfig


def _jpeg(c: int, rng) -> bytes:
    w, h = int(rng.integers(36, 60)), int(rng.integers(36, 60))
    image = np.full((h, w, 3), 40 * c, dtype=np.uint8) + rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    image[h // 4: h // 2, :, c] = 255
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=90)
    return out.getvalue()


def write_shards(directory, name: str, count: int, per_shard: int, seed: int, **extra) -> str:
    """`count` samples of three classes in shards of `per_shard`; returns the brace pattern."""
    import webdataset as wds

    rng = np.random.default_rng(seed)
    n_shards = -(-count // per_shard)
    for s in range(n_shards):
        with wds.TarWriter(str(directory / f"{name}-{s:03d}.tar")) as sink:
            for i in range(s * per_shard, min(count, (s + 1) * per_shard)):
                c = i % 3
                sink.write({"__key__": f"{name}{i:05d}", "jpg": _jpeg(c, rng), "cls": str(c), **extra})
    return str(directory / f"{name}-{{000..{n_shards - 1:03d}}}.tar")


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    return root, {"shards": write_shards(root, "train", 90, 16, 0), "val_shards": write_shards(root, "val", 24, 12, 1),
                  "test_shards": write_shards(root, "test", 24, 24, 2)}


def _config(shard_dir, **extra) -> DataConfig:
    _, patterns = shard_dir
    return DataConfig(source="webdataset", image_size=32, classes=["red", "green", "blue"], **patterns, **extra)


def test_shards_load_as_three_splits_with_their_classes(shard_dir):
    data = load_dataset(_config(shard_dir, streaming=True))
    assert data.streamed and data.train_x.shape == (90, 3, 32, 32)
    assert data.classes == ["red", "green", "blue"] and data.train_y.tolist()[:4] == [0, 1, 2, 0]
    assert data.val_x.shape == (24, 3, 32, 32) and data.test_x.shape == (24, 3, 32, 32)
    assert data.splits["test"]["members"][0] == "test-000.tar/test00000"
    in_memory = load_dataset(_config(shard_dir, streaming=False))
    assert not in_memory.streamed and in_memory.fingerprint == data.fingerprint
    idx = torch.tensor([40, 3, 89, 17])
    assert torch.equal(data.train_x[idx], in_memory.train_x[idx])
    assert torch.equal(data.train_x[5], in_memory.train_x[5])


def test_an_epoch_order_is_a_permutation_a_sequential_reader_serves_from_its_buffer(shard_dir):
    data = load_dataset(_config(shard_dir, streaming=True, shuffle_buffer=10))
    in_memory = load_dataset(_config(shard_dir, streaming=False, shuffle_buffer=10))
    order = data.epoch_order(torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(90))
    assert torch.equal(order, in_memory.epoch_order(torch.Generator().manual_seed(0)))
    assert not torch.equal(order, data.epoch_order(torch.Generator().manual_seed(1)))
    # Every sample leaves at most `buffer` places after the last sample of the shard it is in is read.
    layout = data.train_x.layout()
    shard_of = {int(i): s for s, members in enumerate(layout) for i in members}
    index_batches = [order[i:i + 8] for i in range(0, 90, 8)]
    for streamed, indexed in zip(data.train_x.batches(index_batches, workers=2),
                                 (in_memory.train_x[b] for b in index_batches), strict=True):
        assert torch.equal(streamed, indexed)
    assert len({shard_of[int(i)] for i in order[:10]}) <= 2  # the first ten come from the first shard(s) read



def test_a_sequential_reader_holds_no_more_than_the_buffer_and_a_batch(shard_dir, monkeypatch):
    data = load_dataset(_config(shard_dir, streaming=True, shuffle_buffer=10))
    read = [0]
    real = shards._samples

    def counted(url, key):
        for sample in real(url, key):
            read[0] += 1
            yield sample

    monkeypatch.setattr(shards, "_samples", counted)
    order = data.epoch_order(torch.Generator().manual_seed(0))
    index_batches = [order[i:i + 8] for i in range(0, 90, 8)]
    handed = 0
    for batch in data.train_x.batches(index_batches):
        handed += len(batch)
        assert read[0] - handed <= 10 + 8  # read but not yet handed on: the buffer and a batch at most


def test_training_on_streamed_shards_equals_training_on_them_in_memory(shard_dir):
    results = []
    for streaming in (True, False):
        data = load_dataset(_config(shard_dir, streaming=streaming, num_workers=2))
        model = modeling.create("resnet10t", data.num_classes, seed=0, image_size=32)
        bundle = modeling.bundle("resnet10t", model, data.num_classes, 32, source="test")
        trainer.fit(bundle, data, 1, lr=1e-3, seed=0, desc="test", train=TrainConfig(batch_size=16),
                     resumable=False)
        teacher_logits, _ = distillation.Teacher([bundle]).precompute(data.train_x, batch_size=16, workers=data.workers)
        results.append((bundle.model.state_dict(), teacher_logits))
    (streamed, streamed_logits), (in_memory, logits) = results
    assert all(torch.equal(streamed[k], in_memory[k]) for k in in_memory)
    assert torch.equal(streamed_logits, logits)


def test_the_index_is_read_once_and_cached_by_fingerprint(shard_dir, tmp_path, monkeypatch):
    reads = []
    real = shards._samples
    monkeypatch.setattr(shards, "_samples", lambda url, key: reads.append(url) or real(url, key))
    load_dataset(_config(shard_dir, streaming=True), index_dir=tmp_path)
    first = [u for u in reads if "train-" in u]
    reads.clear()
    load_dataset(_config(shard_dir, streaming=True), index_dir=tmp_path)
    assert len(first) == 6 and not [u for u in reads if "train-" in u]  # streamed train shards: not read at all


def test_bad_shards_are_named(shard_dir, tmp_path):
    import webdataset as wds

    root, patterns = shard_dir
    with wds.TarWriter(str(tmp_path / "nolabel.tar")) as sink:
        sink.write({"__key__": "a", "jpg": _jpeg(0, np.random.default_rng(0))})
    with pytest.raises(InputError, match=r"data.shards: sample a of shard .*nolabel.tar has no class index"):
        load_dataset(DataConfig(source="webdataset", shards=str(tmp_path / "nolabel.tar"),
                                val_shards=patterns["val_shards"]))
    with wds.TarWriter(str(tmp_path / "noimage.tar")) as sink:
        sink.write({"__key__": "b", "cls": "0", "txt": "hello"})
    with pytest.raises(InputError, match=r"sample b of shard .*noimage.tar has no image"):
        load_dataset(DataConfig(source="webdataset", shards=str(tmp_path / "noimage.tar"),
                                val_shards=patterns["val_shards"]))
    with wds.TarWriter(str(tmp_path / "broken.tar")) as sink:
        sink.write({"__key__": "c", "cls": "0", "jpg": b"not a jpeg"})
    with pytest.raises(InputError, match=r"cannot read the image of sample c in shard .*broken.tar"):
        load_dataset(DataConfig(source="webdataset", shards=str(tmp_path / "broken.tar"),
                                val_shards=patterns["val_shards"]))
    with pytest.raises(InputError, match=r"data.val_shards: shard .*missing-1.tar is not a file"):
        load_dataset(DataConfig(source="webdataset", shards=patterns["shards"],
                                val_shards=str(tmp_path / "missing-{1..2}.tar")))
    with pytest.raises(InputError, match=r"data.classes names 2 classes; the shards hold labels up to 2"):
        load_dataset(DataConfig(source="webdataset", classes=["a", "b"], **patterns))


def test_the_config_says_what_shards_need():
    with pytest.raises(ValidationError, match="needs `shards` and `val_shards`"):
        DataConfig(source="webdataset", shards="a.tar")
    with pytest.raises(ValidationError, match="path, max_samples: not read with source 'webdataset'"):
        DataConfig(source="webdataset", shards="a.tar", val_shards="b.tar", path="x", max_samples=100)
    with pytest.raises(ValidationError, match="takes no `shards`"):
        DataConfig(source="digits", shards="a.tar")
    with pytest.raises(ValidationError, match="streaming = true needs source 'imagefolder' or 'webdataset'"):
        DataConfig(streaming=True)


def test_relative_shards_are_relative_to_the_config_file_and_urls_stay_urls(tmp_path):
    from edgekiln.engine.config import config_from_text

    cfg = config_from_text('[data]\nsource = "webdataset"\nshards = "s/train-{0..1}.tar"\n'
                           'val_shards = ["s/val.tar", "pipe:curl -s https://host/val.tar"]\n'
                           '[teacher]\ncandidates = ["resnet10t"]\n[[targets]]\nname = "s"\nformat = "onnx"\n',
                           base=tmp_path)
    assert cfg.data.shards == str(tmp_path.resolve() / "s" / "train-{0..1}.tar")
    assert cfg.data.val_shards == [str(tmp_path.resolve() / "s" / "val.tar"), "pipe:curl -s https://host/val.tar"]


def test_validate_names_a_missing_local_shard_before_any_work(shard_dir, tmp_path):
    from typer.testing import CliRunner

    from edgekiln.interfaces.cli import app

    _, patterns = shard_dir
    config = tmp_path / "shards.toml"
    config.write_text(f'[data]\nsource = "webdataset"\nshards = "{patterns["shards"]}"\n'
                      f'val_shards = ["{tmp_path}/val-a.tar::{tmp_path}/val-b.tar"]\n'
                      '[teacher]\ncandidates = ["resnet10t"]\n[[targets]]\nname = "s"\nformat = "onnx"\n')
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 2 and f"data.val_shards (line 4): shard {tmp_path}/val-a.tar does not exist" in result.stderr
