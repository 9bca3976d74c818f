"""Calibrate a latency profile on its own device: build a set of reference models (timm
architectures at several widths and input sizes, plus a one-layer probe that shows the
runtime's fixed cost), export each in every encoding the profile's format writes, time it
through a runner (host, adb or ssh), and write the references CSV and a profile that
estimates from it.

The CSV is the state: every row is written as soon as it is measured, so an interrupted
calibration continues where it stopped (rows already in the file are not measured again).
"""

from __future__ import annotations

import csv
import datetime
import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgekiln.targets.errors import ConversionError
from edgekiln.targets.int8 import Int8Options
from edgekiln.targets.profiles import Profile

# (timm architecture or PROBE, input size). Chosen to span MACs (0.01 to 1,800 MMACs),
# depthwise share (ResNet none, MobileNets most), activation traffic and attention blocks.
PROBE = "edgekiln_probe_conv1"
REFERENCE_SET: tuple[tuple[str, int], ...] = (
    *((arch, 224) for arch in ("mobilenetv3_small_050", "mobilenetv3_small_100", "mobilenetv3_large_100",
                               "mobilenetv2_100", "mobilenetv4_conv_small", "mobilevit_xxs", "efficientnet_b0",
                               "resnet18")),
    *((arch, 128) for arch in ("mobilenetv3_small_100", "mobilenetv3_large_100", "mobilenetv2_100", "resnet18")),
    *((arch, 64) for arch in ("mobilenetv3_small_050", "mobilenetv3_large_100", "mobilenetv4_conv_small", "resnet18")),
    *((arch, 32) for arch in ("mobilenetv3_small_050", "mobilenetv3_small_100", "mobilevit_xxs", "resnet18")),
    (PROBE, 32),
)
COLUMNS = ("model", "precision", "encoding", "input_px", "threads", "latency_ms", "source", "macs",
           "depthwise_macs", "params", "activations", "layers", "device", "runtime", "date")


@dataclass(frozen=True)
class Job:
    arch: str
    size: int
    encoding: str

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.arch, self.size, self.encoding)


def jobs(profile: Profile, models: list[tuple[str, int]] | None = None,
         encodings: list[str] | None = None) -> list[Job]:
    """Every (model, input size, encoding) to measure: each reference model in each encoding
    of the profile's format (or the `encodings` asked for)."""
    from edgekiln.targets import get_format

    supported = get_format(profile.format).ENCODINGS
    unknown = [e for e in encodings or [] if e not in supported]
    if unknown:
        raise ValueError(f"{profile.format} has no encoding {', '.join(unknown)}; it writes {', '.join(supported)}")
    return [Job(arch, size, e) for arch, size in (models or REFERENCE_SET) for e in (encodings or supported)]


def read_rows(path: Path) -> list[dict]:
    """The rows already measured (none when the file does not exist yet)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in ("model", "encoding", "input_px", "latency_ms") if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{path} is not a calibration table (no column {', '.join(missing)}): "
                         "give --out a new file, or the one an interrupted calibration wrote")
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    """The whole table, atomically: an interruption leaves the previous version, never half a row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make a shared table unreadable to others
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def reference_model(arch: str):
    """The model behind a reference row: a timm architecture with random weights (latency
    depends on the architecture, not the weights; nothing is downloaded), or the probe."""
    import timm
    import torch

    torch.manual_seed(0)
    if arch == PROBE:  # one 3x3 convolution and a classifier: little beyond the runtime's fixed cost
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    return timm.create_model(arch, pretrained=False, num_classes=10).eval()


def pending(todo: list[Job], rows: list[dict]) -> list[Job]:
    """The jobs of `todo` that no row of the table measured yet."""
    done = {(r["model"], int(r["input_px"]), r["encoding"]) for r in rows}
    return [job for job in todo if job.key not in done]


def measure_job(job: Job, profile: Profile, workdir: Path) -> dict:
    """The CSV row of one reference artifact, built in `workdir` and timed on `profile`'s
    device through its runner."""
    import torch

    from edgekiln.targets import get_format, runners
    from edgekiln.targets.cost import cost_features

    fmt = get_format(profile.format)
    model = reference_model(job.arch)
    calibration = np.random.default_rng(0).standard_normal((16, 3, job.size, job.size)).astype(np.float32)
    path = workdir / f"{job.arch}-{job.size}-{job.encoding}{fmt.SUFFIX}"
    fmt.export(model, torch.from_numpy(calibration[:1]), calibration, path, {}, job.encoding,
               fmt.for_profile(Int8Options(), profile)[0])  # the INT8 layout the profile's artifacts get
    features = cost_features(model, job.size)
    precision = fmt.ENCODINGS[job.encoding]
    measurement = runners.measure(path, profile, features, precision)
    row = {"model": job.arch, "precision": precision, "encoding": job.encoding, "input_px": job.size,
           "threads": profile.runtime.threads, "latency_ms": round(measurement.latency_ms["p50"], 4),
           "source": f"measured by edgekiln profile calibrate ({measurement.runner} runner, {measurement.tool})",
           **{k: v for k, v in features.to_dict().items() if k != "image_size"},
           "device": measurement.device, "runtime": measurement.tool, "date": datetime.date.today().isoformat()}
    return row


def calibrate(profile: Profile, out_csv: Path, todo: list[Job],
              on_row: Callable[[Job, dict | None, str | None], None] = lambda job, row, skipped: None
              ) -> tuple[list[dict], list[tuple[Job, str]]]:
    """Measure every job not yet in `out_csv`, writing the table after each; returns (all
    rows, jobs whose export the converter refused, with why). A device that cannot be reached
    propagates (DeviceUnreachable): the rows measured so far stay, and a re-run continues."""
    rows = read_rows(out_csv)
    refused = []
    for job in pending(todo, rows):
        try:
            with tempfile.TemporaryDirectory(prefix="edgekiln-calibrate-") as tmp:  # one artifact on disk at a time
                row = measure_job(job, profile, Path(tmp))
        except ConversionError as e:
            refused.append((job, str(e)))
            on_row(job, None, str(e))
            continue
        rows.append(row)
        write_rows(out_csv, rows)
        on_row(job, row, None)
    return rows, refused


def write_profile(source: Profile, runner: str, out_toml: Path, out_csv: Path, rows: list[dict]) -> Path:
    """A profile for `source`'s device that measures with `runner` and estimates from the
    calibration table (its own precisions: no borrowed aliases, ratios or floors)."""
    import tomli_w

    if runner == "estimate":
        raise ValueError("a profile is calibrated by measuring: --runner host, adb or ssh")
    raw = tomllib.loads(source.path.read_text()) if source.path else source.model_dump(exclude={"path"})
    devices = sorted({r["device"] for r in rows})
    raw["name"] = out_toml.stem
    raw["device"] = devices[0] if len(devices) == 1 else source.device
    raw["description"] = (f"Calibrated by `edgekiln profile calibrate {source.name} --runner {runner}` on "
                          f"{datetime.date.today().isoformat()}: {len(rows)} reference rows measured on "
                          f"{', '.join(devices)}.")
    raw["runner"] = {**raw.get("runner", {}), "kind": runner}
    raw["estimate"] = {"references": os.path.relpath(out_csv, out_toml.parent)}
    text = (f"# Written by edgekiln profile calibrate from profile {source.name!r}.\n"
            "# Re-run the same command to add rows; delete a row of the CSV to measure it again.\n"
            + tomli_w.dumps(raw))
    out_toml.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_toml.with_name(f".{out_toml.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out_toml)
    return out_toml
