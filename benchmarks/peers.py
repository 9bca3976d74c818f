"""edgekiln's artifacts against what a user would do instead: quantize the reference model
(the teacher of a run that trained one, or the given model of `edgekiln compress`).

    .venv/bin/python benchmarks/peers.py OUT_DIR [--cache-dir .edgekiln-cache] [--runs 200] [--json FILE]
    .venv/bin/python benchmarks/peers.py OUT_DIR --tiny     # a few rounds: that it runs (tests/test_slow.py)

Takes a finished run (OUT_DIR/manifest.json and the stage cache it ran on) and, on the same
reference model, the same splits and the same calibration sample, builds:

- the fp32 reference in onnxruntime;
- the reference through onnxruntime `quantize_static` (QDQ, per-channel): U8S8 with
  `reduce_range` and U8U8; the better on val is "ort-static" (both are listed);
- the reference through NNCF's `nncf.quantize` (default PTQ) when nncf is installed
  (`pip install -e '.[peers]'`), else a note;
- with `--max-drop POINTS`, the reference through NNCF's accuracy control
  (`nncf.quantize_with_accuracy_control`: INT8, then the worst ops reverted to float until
  the val accuracy is within POINTS of the fp32 reference's, decided on the run's val split);

and puts the run's artifacts beside them. For each: size, test accuracy (its own runtime;
Core ML off macOS: the manifest's proxy figure, marked), host p50 at 1 and 2 threads timed
interleaved in this one process (every model once per round, `--runs` rounds after
warm-up, so load on the shared host hits all alike), and the estimate on a phone profile.
Ratios are against the fp32 reference and, for each edgekiln artifact, against the best peer
in its own runtime (the most accurate on val of the quantized references in that format: for
TFLite, the reference quantized by litert-torch's PT2E INT8; for ONNX, the better
quantize_static or NNCF; else the best peer overall). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgekiln.data.dataset import DataConfig, load_dataset, to_input
from edgekiln.stats import accuracy_interval, hits, paired_drop
from edgekiln.targets import get_format
from edgekiln.targets.cost import CostFeatures, cost_features
from edgekiln.system.files import sha256, size_bytes
from edgekiln.targets.format import predict_each as predict
from edgekiln.targets.formats.onnx import export_float
from edgekiln.targets.runners import estimate
from edgekiln.training import modeling
from edgekiln.training.evaluation import accuracy


def open_session(fmt: str, path: str, threads: int = 1):
    return get_format(fmt).session(path, threads)

PHONE = "pixel-3-cpu"


class Reader:
    """onnxruntime's calibration reader over a fixed array of preprocessed images."""

    def __init__(self, images: np.ndarray, name: str):
        self.items = iter([{name: images[i : i + 1]} for i in range(len(images))])

    def get_next(self):
        return next(self.items, None)


def ort_static(fp32: Path, out: Path, calibration: np.ndarray, activation: str, reduce_range: bool) -> Path:
    """onnxruntime quantize_static, QDQ, per-channel: what the onnxruntime docs show."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    name = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    weights = QuantType.QUInt8 if activation == "U8U8" else QuantType.QInt8
    quantize_static(str(pre), str(out), Reader(calibration, name), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                    weight_type=weights)
    pre.unlink()
    return out


def nncf_quantize(fp32: Path, out: Path, calibration: np.ndarray) -> Path | str:
    """NNCF's default post-training quantization of the ONNX teacher, or why not."""
    try:
        import nncf
        import onnx
    except ImportError:
        return "nncf is not installed (pip install -e '.[peers]')"
    model = onnx.load(str(fp32))
    name = model.graph.input[0].name
    dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))], lambda x: {name: x})
    onnx.save(nncf.quantize(model, dataset, subset_size=len(calibration)), str(out))
    return out


def nncf_accuracy_control(fp32: Path, out: Path, calibration: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                          max_drop: float) -> tuple[Path | str, float]:
    """NNCF's quantization with accuracy control of the ONNX reference, judged on val (top-1
    in percent, in onnxruntime) with at most `max_drop` points lost; (its path or why not,
    seconds)."""
    started = time.perf_counter()
    try:
        import nncf
        import onnx
        import onnxruntime as ort
    except ImportError:
        return "nncf is not installed (pip install -e '.[peers]')", 0.0
    model = onnx.load(str(fp32))
    name = model.graph.input[0].name

    def validate(candidate, items) -> float:
        session = ort.InferenceSession(candidate.SerializeToString(), providers=["CPUExecutionProvider"])
        logits = np.concatenate([session.run(None, {name: x})[0] for x, _ in items])
        return accuracy(logits, np.array([y for _, y in items]))

    calibration_set = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))], lambda x: {name: x})
    # one image an item: NNCF ranks the ops to revert by how each changes the items' results
    validation_set = nncf.Dataset([(val_x[i : i + 1], int(val_y[i])) for i in range(len(val_x))],
                                  lambda item: {name: item[0]})
    quantized = nncf.quantize_with_accuracy_control(
        model, calibration_set, validation_set, validation_fn=lambda m, items: validate(m, list(items)),
        max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration))
    onnx.save(quantized, str(out))
    return out, time.perf_counter() - started


def timing_session(fmt: str, path: Path, threads: int):
    """A session for interleaved timing: onnxruntime's intra-op threads spin after each run by
    default; with a dozen sessions interleaved on two cores, the idle ones' spinning would
    steal the running one's cores, so the format opens it `interleaved` (spinning off)."""
    return get_format(fmt).session(path, threads=threads, interleaved=True)


def interleaved_p50(sessions: dict[str, tuple[object, tuple[int, ...]]], warmup: int, runs: int) -> dict[str, float]:
    """Median batch-1 latency (ms) of each (session, input shape), every session once per round."""
    rng = np.random.default_rng(0)
    inputs = {name: rng.standard_normal(shape).astype(np.float32) for name, (_, shape) in sessions.items()}
    for name, (s, _) in sessions.items():
        s.set_input(inputs[name])
        for _ in range(warmup):
            s.invoke()
    times = {name: [] for name in sessions}
    for _ in range(runs):
        for name, (s, _) in sessions.items():
            s.set_input(inputs[name])
            started = time.perf_counter()
            s.invoke()
            times[name].append((time.perf_counter() - started) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--cache-dir", type=Path, default=Path(".edgekiln-cache"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--tiny", action="store_true", help="a few rounds, 1 thread, no NNCF: that it runs")
    parser.add_argument("--max-drop", type=float, default=None,
                        help="also NNCF's accuracy control, at most this many val points below the fp32 reference")
    args = parser.parse_args(argv)
    if args.tiny:
        args.runs, args.warmup = 5, 1
    manifest = json.loads((args.out_dir / "manifest.json").read_text())
    data = load_dataset(DataConfig.model_validate(manifest["config"]["data"]))
    if not data.has_test:
        sys.exit("the run has no test split: peers are compared on test")
    if sha256(args.out_dir / "splits.json") != manifest["splits"]["sha256"]:
        sys.exit("splits.json does not match the manifest")
    stages = {s["name"]: s for s in manifest["stages"]}
    plan = manifest.get("plan") or {"reference": "teacher", "reference_title": "teacher"}  # older runs: the teacher
    reference = plan["reference"]
    who = "your model" if reference != "teacher" else "teacher"
    teacher = modeling.load_bundle(args.cache_dir / reference / stages[reference]["key"] / "model")
    images = torch.from_numpy(np.load(args.cache_dir / "quantize" / stages["quantize"]["key"] / "calibration.npy"))

    def prepared(bundle, x):
        return to_input(x, bundle.mean, bundle.std, bundle.input_size).numpy()

    t_cal, t_val, t_test = (prepared(teacher, x) for x in (images, data.val_x, data.test_x))
    work = Path(tempfile.mkdtemp(prefix="edgekiln-peers-"))
    fp32 = work / "reference_fp32.onnx"
    export_float(teacher.model.eval(), torch.from_numpy(t_val[:1]), fp32)
    reference_row = f"{who} fp32 (onnxruntime)"
    rows = {reference_row: {"path": fp32, "format": "onnx", "kind": "teacher"}}
    peers = {}
    for scheme, activation, reduce_range in (("U8S8 reduce_range", "U8S8", True), ("U8U8", "U8U8", False)):
        path = ort_static(fp32, work / f"teacher_{activation}.onnx", t_cal, activation, reduce_range)
        peers[f"{who} ort quantize_static {scheme}"] = {"path": path, "format": "onnx", "kind": "peer"}
    formats = {a["format"] for a in manifest["artifacts"]}
    if "tflite" in formats:  # the same runtime's peer: litert-torch's PT2E INT8, as its docs show
        path = work / "teacher_int8.tflite"
        get_format("tflite").export(teacher.model.eval(), torch.from_numpy(t_val[:1]), t_cal, path, {}, "int8")
        peers[f"{who} litert-torch PT2E INT8"] = {"path": path, "format": "tflite", "kind": "peer"}
    nncf_out = nncf_quantize(fp32, work / "teacher_nncf.onnx", t_cal) if not args.tiny else "not run with --tiny"
    notes = []
    if isinstance(nncf_out, Path):
        peers[f"{who} NNCF PTQ"] = {"path": nncf_out, "format": "onnx", "kind": "peer"}
    else:
        notes.append(f"NNCF not measured: {nncf_out}")
    if args.max_drop is not None and not args.tiny:
        controlled, seconds = nncf_accuracy_control(fp32, work / "teacher_nncf_ac.onnx", t_cal, t_val, data.val_y,
                                                    args.max_drop)
        if isinstance(controlled, Path):
            peers[f"{who} NNCF accuracy control (max drop {args.max_drop:g} on val)"] = {
                "path": controlled, "format": "onnx", "kind": "peer"}
            notes.append(f"NNCF accuracy control took {seconds:.0f} s")
        else:
            notes.append(f"NNCF accuracy control not measured: {controlled}")
    rows.update(peers)
    teacher_features = cost_features(teacher.model, teacher.input_size)
    for a in manifest["artifacts"]:
        rows[f"edgekiln {a['target']} ({a['format']} {a.get('encoding', 'int8')})"] = {
            "path": args.out_dir / a["path"], "format": a["format"], "kind": "edgekiln", "record": a}
    student_pre = manifest["preprocessing"]
    s_val, s_test = (to_input(x, student_pre["mean"], student_pre["std"]).numpy() for x in (data.val_x, data.test_x))
    teacher_hits = None
    for name, row in rows.items():
        row["size_bytes"] = size_bytes(row["path"])
        val_x, test_x = (t_val, t_test) if row["kind"] != "edgekiln" else (s_val, s_test)
        if row["format"] == "coreml":  # no Core ML runtime off macOS: the run's own proxy figure
            row.update(val=row["record"]["accuracy"], test=row["record"].get("test_accuracy"),
                       source=row["record"].get("test_accuracy_source", "proxy"))
            continue
        session = open_session(row["format"], str(row["path"]), threads=2)
        top1 = predict(session, test_x).argmax(1)
        row.update(val=accuracy(predict(session, val_x), data.val_y), test=float(hits(top1, data.test_y).mean() * 100),
                   source="runtime", test_ci=accuracy_interval(hits(top1, data.test_y)))
        if row["kind"] == "teacher":
            teacher_hits = hits(top1, data.test_y)
        else:
            drop = paired_drop(teacher_hits, hits(top1, data.test_y))
            row["drop_ci"] = [round(drop.drop, 2), round(drop.low, 2), round(drop.high, 2)]
    best_peer = max(peers, key=lambda n: rows[n]["val"])
    notes.append(f"best peer (most accurate on val): {best_peer}")
    same_runtime = {}  # format -> the most accurate on val of the peers in that runtime
    for name in peers:
        fmt = rows[name]["format"]
        if fmt not in same_runtime or rows[name]["val"] > rows[same_runtime[fmt]]["val"]:
            same_runtime[fmt] = name
    for name, row in rows.items():
        row["peer"] = same_runtime.get(row["format"], best_peer) if row["kind"] == "edgekiln" else None
    notes.append("best peer in the same runtime (the ratios of an edgekiln row): "
                 + ", ".join(f"{fmt}: {name}" for fmt, name in sorted(same_runtime.items())))
    for threads in (1,) if args.tiny else (1, 2):
        sessions = {n: (timing_session(r["format"], r["path"], threads),
                        (t_val if r["kind"] != "edgekiln" else s_val)[:1].shape)
                    for n, r in rows.items() if r["format"] != "coreml"}
        for name, p50 in interleaved_p50(sessions, args.warmup, args.runs).items():
            rows[name][f"p50_{threads}t"] = p50
    phone = estimate.ProfileEstimator(PHONE, teacher.input_size)
    int8, float32 = estimate.calibrate(phone.profile, "int8"), estimate.calibrate(phone.profile, "float")
    for name, row in rows.items():
        if row["kind"] == "edgekiln":
            features = row["record"].get("cost_features")
            precision = row["record"].get("precision", "int8")
            if features is None or row["format"] == "coreml":
                row["phone_ms"] = None
                continue
            calibrated = {"int8": int8, "float": float32}.get(precision) or estimate.calibrate(phone.profile, precision)
            row["phone_ms"] = calibrated.predict(CostFeatures.from_dict(features))
        else:
            row["phone_ms"] = (float32 if row["kind"] == "teacher" else int8).predict(teacher_features)
    print(table(rows, reference_row, best_peer, who))
    for note in notes:
        print(f"\n{note}")
    print(f"\n{len(data.test_y)} test images (one image = {100 / len(data.test_y):.2f} points); "
          f"{args.runs} interleaved timed runs after {args.warmup} warm-up (onnxruntime thread spinning off); "
          f"phone: {PHONE} estimate of each model's cost features at its precision")
    if args.json:
        args.json.write_text(json.dumps({n: {k: v for k, v in r.items() if k not in ("path", "record")}
                                         for n, r in rows.items()}, indent=2, default=str))
    return 0


def table(rows: dict, teacher: str, best_peer: str, label: str = "teacher") -> str:
    def ratio(value, reference):
        return "-" if value is None or reference in (None, 0) else f"{value / reference:.2f}"

    lines = [f"| model | size | test % (95% CI) | drop vs {label} (95% CI) | host p50 ms, 1 / 2 threads | "
             f"{PHONE} est. ms | size / {label} | size / peer | p50 (2 t) / {label} | p50 (1 t / 2 t) / peer |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    t = rows[teacher]
    for name, r in rows.items():
        p = rows[r.get("peer") or best_peer]  # an edgekiln row: the best peer in its own runtime
        ci = r.get("test_ci")
        test = "-" if r.get("test") is None else f"{r['test']:.2f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else
                                                                       f" ({r['source']})")
        drop = "-" if "drop_ci" not in r else f"{r['drop_ci'][0]:+.2f} [{r['drop_ci'][1]:+.2f}, {r['drop_ci'][2]:+.2f}]"
        lat = "-" if "p50_1t" not in r else f"{r['p50_1t']:.3f} / " + (f"{r['p50_2t']:.3f}" if "p50_2t" in r else "-")
        phone = "-" if r.get("phone_ms") is None else f"{r['phone_ms']:.3g}"
        lines.append(f"| {name} | {r['size_bytes'] / 1e6:.2f} MB | {test} | {drop} | {lat} | {phone} | "
                     f"{ratio(r['size_bytes'], t['size_bytes'])} | {ratio(r['size_bytes'], p['size_bytes'])} | "
                     f"{ratio(r.get('p50_2t'), t.get('p50_2t'))} | "
                     f"{ratio(r.get('p50_1t'), p.get('p50_1t'))} / {ratio(r.get('p50_2t'), p.get('p50_2t'))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
