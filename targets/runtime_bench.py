"""Run an artifact in its own runtime: batch-1 latency, peak memory, optionally logits.

This file is also a standalone script: the host runner runs it in a child process (so the
peak memory it reports is the runtime's, not the pipeline's), and the ssh runner copies it
to a board or a Mac, with the format files zipped beside it (edgekiln_formats.zip), and runs
it with the remote python. It therefore imports nothing but the standard library, numpy,
the format files (targets/format.py) and the runtime of the artifact's format.

    python runtime_bench.py tflite model.tflite --threads 4 --option delegate=xnnpack --runs 100
        [--inputs x.npy --logits-out y.npy]
    python runtime_bench.py onnx a.onnx b.onnx --rounds 15 --runs 20

prints one JSON object on its last line of output. Given several models, it opens them all
and times them interleaved: in each of `--rounds` rounds every model runs `--runs` calls, in
an order that rotates from round to round, and each round's p50 is reported per model, so
that models are compared under the same drift of clock, cache and neighbours (the sessions
are opened `interleaved`: onnxruntime's idle threads do not spin on the cores of the next).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

FORMATS_ZIP = "edgekiln_formats.zip"


def _times_ms(call, runs: int) -> np.ndarray:
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start
    return times * 1000.0


def _summary(ms: np.ndarray) -> dict:
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "mean": float(ms.mean()), "std": float(ms.std()), "runs": int(len(ms))}


def measure_ms(call, warmup: int, runs: int) -> dict:
    """p50, p90, mean and std in ms of `runs` calls of `call` after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    return _summary(_times_ms(call, runs))


def measure_in_rounds(call, warmup: int, runs: int, rounds: int) -> dict:
    """`measure_ms` over all `runs` calls, taken in `rounds` equal rounds, with each round's
    p50 and p90 (`round_p50`, `round_p90`) and their ranges (`p50_interval`, `p90_interval`):
    rounds that disagree tell a busy host from a steady one."""
    for _ in range(warmup):
        call()
    rounds = max(1, min(rounds, runs))
    per_round = [_times_ms(call, max(1, runs // rounds)) for _ in range(rounds)]
    out = {**_summary(np.concatenate(per_round)), "round_p50": [float(np.percentile(r, 50)) for r in per_round],
           "round_p90": [float(np.percentile(r, 90)) for r in per_round]}
    out["p50_interval"] = [min(out["round_p50"]), max(out["round_p50"])]
    out["p90_interval"] = [min(out["round_p90"]), max(out["round_p90"])]
    return out


def interleaved_ms(calls: list, warmup: int, rounds: int, runs: int) -> list[list[float]]:
    """Per call, its p50 in ms in each of `rounds` rounds of `runs` calls; the calls take turns
    within a round, and the first of a round rotates, so no call always runs first or last."""
    for call in calls:
        for _ in range(warmup):
            call()
    medians: list[list[float]] = [[] for _ in calls]
    for r in range(rounds):
        for k in range(len(calls)):
            i = (r + k) % len(calls)
            medians[i].append(measure_ms(calls[i], 0, runs)["p50"])
    return medians


def _status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (Linux), in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    return None


def _rss_mb() -> float:
    return _status_mb("VmRSS") or _peak_rss_mb()


def _peak_rss_mb() -> float:
    # VmHWM belongs to this program's address space; ru_maxrss survives execve on Linux and so
    # would report the parent's (the pipeline's) size. macOS has no /proc: ru_maxrss, in bytes.
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10


def _import_formats():
    """The format registry: from the installed edgekiln, or from the zip shipped beside this file."""
    bundle = Path(__file__).resolve().parent / FORMATS_ZIP
    if bundle.is_file():
        sys.path.insert(0, str(bundle))
    from edgekiln.targets import format as formats

    return formats


def main(argv: list[str] | None = None) -> int:
    formats = _import_formats()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("format", choices=formats.format_names())
    parser.add_argument("model", nargs="+", help="one model, or several to time interleaved")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a runtime option of the format (a profile's [runtime] keys)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100, help="timed calls (per round, given several models)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of interleaved timing of several models")
    parser.add_argument("--timing-rounds", type=int, default=5, help="rounds one model's runs are taken in")
    parser.add_argument("--inputs", help=".npy of preprocessed NCHW float32 images to predict")
    parser.add_argument("--logits-out", help="where to write their logits (.npy)")
    args = parser.parse_args(argv)
    fmt = formats.get_format(args.format)
    options = dict(option.split("=", 1) for option in args.option)

    # Import the runtime before the baseline, so the peak counts the model, not the library.
    if fmt.RUNTIME_MODULE:
        __import__(fmt.RUNTIME_MODULE)
    machine = {"runtime": None, "machine": f"{platform.system()} {platform.machine()}",
               "python": platform.python_version()}
    if len(args.model) > 1:
        sessions = [fmt.open_session(model, args.threads, **options, interleaved=True) for model in args.model]
        rng = np.random.default_rng(0)
        for session in sessions:
            session.set_input(rng.standard_normal(session.input_shape).astype(np.float32))
        rounds = interleaved_ms([s.invoke for s in sessions], args.warmup, args.rounds, args.runs)
        print(json.dumps({**machine, "runtime": sessions[0].runtime, "rounds": args.rounds, "runs_per_round": args.runs,
                          "round_p50_ms": dict(zip(args.model, rounds))}))
        return 0
    baseline = _rss_mb()
    session = fmt.open_session(args.model[0], args.threads, **options)
    sample = np.random.default_rng(0).standard_normal(session.input_shape).astype(np.float32)
    if args.inputs:
        sample = np.load(args.inputs)[:1].astype(np.float32)
    session.set_input(sample)
    latency = measure_in_rounds(session.invoke, args.warmup, args.runs, args.timing_rounds)
    result = {**machine, "latency_ms": latency, "peak_memory_mb": round(_peak_rss_mb() - baseline, 2),
              "runtime": session.runtime}
    if args.inputs:
        np.save(args.logits_out, formats.predict_each(session, np.load(args.inputs)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
