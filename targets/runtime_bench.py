"""Run an artifact in its own runtime: batch-1 latency, peak memory, optionally logits.

This file is also a standalone script: the host runner runs it in a child process (so the
peak memory it reports is the runtime's, not the pipeline's), and the ssh runner copies it
to a board or a Mac and runs it with the remote python. It therefore imports nothing but
the standard library, numpy and the runtime of the artifact's format.

    python runtime_bench.py tflite model.tflite --threads 4 --runs 100 [--inputs x.npy --logits-out y.npy]

prints one JSON object on its last line of output.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import numpy as np


class TfliteSession:
    """An ai-edge-litert interpreter taking float NCHW input and giving float logits, whatever
    the model's own input/output types (INT8 models are fed through their scale and zero point)."""

    def __init__(self, path: str, threads: int, delegate: str = "xnnpack"):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if delegate not in ("xnnpack", "none"):
            raise ValueError(f"delegate {delegate!r} is not available to ai-edge-litert on this machine "
                             "(xnnpack and none are)")
        resolver = (OpResolverType.AUTO if delegate == "xnnpack"
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.interpreter = Interpreter(model_path=path, num_threads=threads,
                                       experimental_op_resolver_type=resolver)
        self.interpreter.allocate_tensors()  # RuntimeError: an op the runtime cannot prepare
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]
        self.runtime = "ai-edge-litert"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.inp["shape"])

    def set_input(self, x: np.ndarray) -> None:
        dtype = self.inp["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero = self.inp["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(self.inp["index"], x.astype(dtype))

    def invoke(self) -> None:
        self.interpreter.invoke()

    def output(self) -> np.ndarray:
        y = self.interpreter.get_tensor(self.out["index"])
        if np.issubdtype(y.dtype, np.integer):
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y


class OnnxSession:
    """An onnxruntime session with `threads` intra-op threads on one execution provider."""

    def __init__(self, path: str, threads: int, execution_provider: str = "cpu"):
        import onnxruntime as ort

        providers = {"cpu": "CPUExecutionProvider", "xnnpack": "XnnpackExecutionProvider",
                     "nnapi": "NnapiExecutionProvider", "coreml": "CoreMLExecutionProvider"}
        provider = providers.get(execution_provider, execution_provider)
        if provider not in ort.get_available_providers():
            raise ValueError(f"execution provider {execution_provider!r} is not available in this "
                             f"onnxruntime ({', '.join(ort.get_available_providers())})")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=[provider])
        self.input = self.session.get_inputs()[0]
        self.runtime = "onnxruntime"
        self._feed: dict | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else 1 for d in self.input.shape)

    def set_input(self, x: np.ndarray) -> None:
        self._feed = {self.input.name: x.astype(np.float32)}

    def invoke(self) -> None:
        self._out = self.session.run(None, self._feed)[0]

    def output(self) -> np.ndarray:
        return self._out


class CoremlSession:
    """A Core ML model (macOS only) on the compute units asked for."""

    def __init__(self, path: str, compute_units: str = "ALL"):
        import coremltools as ct

        self.model = ct.models.MLModel(path, compute_units=ct.ComputeUnit[compute_units])
        spec = self.model.get_spec()
        self.input_name = spec.description.input[0].name
        self.output_name = spec.description.output[0].name
        self._shape = tuple(spec.description.input[0].type.multiArrayType.shape)
        self.runtime = "coremltools"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._shape

    def set_input(self, x: np.ndarray) -> None:
        self._feed = {self.input_name: x.astype(np.float32)}

    def invoke(self) -> None:
        self._out = self.model.predict(self._feed)[self.output_name]

    def output(self) -> np.ndarray:
        return np.asarray(self._out)


def open_session(fmt: str, path: str, threads: int = 1, delegate: str = "xnnpack",
                 execution_provider: str = "cpu", compute_units: str = "ALL"):
    """The session for an artifact of format `fmt` (onnx, tflite or coreml)."""
    if fmt == "tflite":
        return TfliteSession(path, threads, delegate)
    if fmt == "onnx":
        return OnnxSession(path, threads, execution_provider)
    if fmt == "coreml":
        return CoremlSession(path, compute_units)
    raise ValueError(f"unknown format {fmt!r}")


def predict(session, images: np.ndarray) -> np.ndarray:
    """Logits for preprocessed float32 NCHW `images`, one image per invoke (batch 1, as on device)."""
    outs = []
    for image in images:
        session.set_input(image[None])
        session.invoke()
        outs.append(np.asarray(session.output())[0])
    return np.stack(outs)


def measure_ms(call, warmup: int, runs: int) -> dict:
    """p50, p90, mean and std in ms of `runs` calls of `call` after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start
    ms = times * 1000.0
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "mean": float(ms.mean()), "std": float(ms.std()), "runs": runs}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("format", choices=("onnx", "tflite", "coreml"))
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--delegate", default="xnnpack")
    parser.add_argument("--execution-provider", default="cpu")
    parser.add_argument("--compute-units", default="ALL")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--inputs", help=".npy of preprocessed NCHW float32 images to predict")
    parser.add_argument("--logits-out", help="where to write their logits (.npy)")
    args = parser.parse_args(argv)

    # Import the runtime before the baseline, so the peak counts the model, not the library.
    __import__({"tflite": "ai_edge_litert.interpreter", "onnx": "onnxruntime",
                "coreml": "coremltools"}[args.format])
    baseline = _rss_mb()
    session = open_session(args.format, args.model, args.threads, args.delegate,
                           args.execution_provider, args.compute_units)
    sample = np.random.default_rng(0).standard_normal(session.input_shape).astype(np.float32)
    if args.inputs:
        sample = np.load(args.inputs)[:1].astype(np.float32)
    session.set_input(sample)
    latency = measure_ms(session.invoke, args.warmup, args.runs)
    result = {"latency_ms": latency, "peak_memory_mb": round(_peak_rss_mb() - baseline, 2),
              "runtime": session.runtime, "machine": f"{platform.system()} {platform.machine()}",
              "python": platform.python_version()}
    if args.inputs:
        np.save(args.logits_out, predict(session, np.load(args.inputs)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
