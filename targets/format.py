"""The artifact format interface and its registry.

A format is one file under `targets/formats/` holding a `Format` subclass decorated with
`@register_format` (as timm's `@register_model`). It owns everything edgekiln knows about
that kind of artifact: its encodings, export, the session that runs it (accuracy and
latency), its metadata, its structure check, its on-device command lines and its tool
versions. Nothing else in edgekiln names a format.

Format files import only the standard library, numpy and this package's light modules at
the top (converters and runtimes inside the methods that need them): the config validator
lists the formats without importing torch, and the ssh runner ships the format files to a
device that has nothing but numpy and the runtime.

Third-party formats register through the `edgekiln.formats` entry-point group.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekiln.targets.errors import RunnerFailed, RuntimeUnavailable
from edgekiln.targets.int8 import Int8Options

if TYPE_CHECKING:  # type names only: importing torch here would slow every config check
    import torch

    from edgekiln.targets.profiles import Profile

_REGISTRY: dict[str, "Format"] = {}
_DISCOVERED = False


class Session:
    """One artifact loaded in its runtime, fed float32 NCHW images (whatever the model's own
    input type: a format converts) and giving float32 logits."""

    runtime: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def set_input(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def invoke(self) -> None:
        raise NotImplementedError

    def output(self) -> np.ndarray:
        raise NotImplementedError


class Format:
    """What edgekiln needs of one artifact format. Subclasses set the constants and implement
    `export` and `open_session`; the rest has defaults a format overrides where it can do more."""

    # The module that simulates this format's INT8 scheme in torch (targets/int8.py's
    # Int8Simulation), for what decides on INT8 accuracy before any artifact exists: the
    # quantize stage, QAT, the ranking of layers to keep in float. None: it has none.
    INT8_SIMULATION: str | None = None

    NAME: str = ""
    SUFFIX: str = ""  # file (or package directory) suffix, e.g. ".onnx"
    RUNTIME: str = ""  # the runtime that runs it, in words and as the host benchmark names it
    RUNTIME_MODULE: str = ""  # imported before the memory baseline of a host benchmark
    PRECISION: str = "int8"  # the int8 encoding's precision, as the cost model names it
    MIXED_PRECISION: bool = False  # INT8 artifacts can keep chosen layers in float
    INT16_LAYERS: bool = False  # ... or give them int16 activations ([quantize] sensitive_layers = "int16")
    # Encodings built only when a target lists them, never by encoding = "auto" (one whose
    # kernels are rarely the fastest, e.g. TFLite's int16x8 reference kernels on a CPU).
    ON_REQUEST: tuple[str, ...] = ()
    READS_INT8_SPEC: bool = False  # a profile's [int8] (weight type, reduce_range) applies (for_profile)
    # encoding -> precision, as the cost model and the latency references name it
    ENCODINGS: dict[str, str] = {}
    # How an app feeds the artifact and reads its output ([[targets]] io); the first is the
    # default. The export reads the asked-for one from the metadata's `edgekiln_io`.
    IO_MODES: tuple[str, ...] = ("float",)
    # The converted model's own interface, which needs no labels or preprocessing: what an
    # export without them gets (a pre-check, a pruning step's timing).
    BODY_IO: str = "float"
    # runtime option -> (default, allowed values or None for any string). A profile's
    # [runtime] table may set these besides `threads`.
    RUNTIME_OPTIONS: dict[str, tuple[str, tuple[str, ...] | None]] = {}
    # import name -> distribution, recorded in the manifest's tool versions
    TOOLS: dict[str, str] = {}
    # The pip extra that installs TOOLS: `pip install 'edgekiln[EXTRA]'` (pyproject.toml).
    EXTRA: str = ""
    PRECHECK_ORDER: int = 50  # the pre-check converts cheap formats first
    # The on-device benchmark binary the adb runner calls (a profile's runner.benchmark_tool
    # overrides the path); empty: the format has no adb command.
    ADB_TOOL: str = ""

    # --- capabilities -------------------------------------------------------------------
    def missing_tools(self) -> str | None:
        """What a target of this format lacks here (its converter or runtime packages not
        installed), with the install line; None when all of TOOLS is installed."""
        import importlib.util

        missing = [dist for module, dist in self.TOOLS.items() if importlib.util.find_spec(module) is None]
        return None if not missing else f"{self.NAME} artifacts need {self._install(missing)}"

    def _install(self, missing: list[str]) -> str:
        how = f"pip install 'edgekiln[{self.EXTRA}]'" if self.EXTRA else f"pip install {' '.join(missing)}"
        return f"{', '.join(missing)}, not installed here: {how}"

    def runtime_unavailable(self) -> str | None:
        """Why this host cannot run the format's runtime (its package not installed; a format
        adds the platforms it cannot run on), or None when it can."""
        import importlib.util

        package = self.RUNTIME_MODULE.split(".")[0]
        if package and importlib.util.find_spec(package) is None:
            return f"the {self.RUNTIME} runtime needs {self._install([self.TOOLS.get(package, package)])}"
        return None

    def require_runtime(self) -> None:
        why = self.runtime_unavailable()
        if why is not None:
            raise RuntimeUnavailable(why)

    # --- the app-facing interface -----------------------------------------------------
    def io_of(self, metadata: dict[str, str]) -> str:
        """The interface `metadata` asks for (its `edgekiln_io`), the format's default without;
        BODY_IO where it lacks the labels and preprocessing an app interface is built from."""
        if "labels" not in metadata or "preprocessing" not in metadata:
            return self.BODY_IO
        io = metadata.get("edgekiln_io", self.IO_MODES[0])
        if io not in self.IO_MODES:
            raise ValueError(f"{self.NAME} artifacts have no io {io!r}; known: {', '.join(self.IO_MODES)}")
        return io

    def interface(self, io: str, preprocessing: dict) -> dict:
        """What an app feeds an artifact built with `io`, and what it gets back."""
        size = preprocessing["image_size"]
        return {"input": {"layout": "NCHW", "shape": [1, 3, size, size], "dtype": "float32",
                          "values": "(pixel / 255 - mean) / std per channel, RGB",
                          "mean": preprocessing["mean"], "std": preprocessing["std"]},
                "output": "float32 logits, one per label"}

    def io_problem(self, io: str, encoding: str) -> str | None:
        """Why an artifact cannot be built with interface `io` in `encoding`, or None."""
        if io not in self.IO_MODES:
            return f"{self.NAME} artifacts have io {', '.join(self.IO_MODES)}, not {io!r}"
        return None

    # --- export -------------------------------------------------------------------------
    def for_profile(self, options: Int8Options, profile: "Profile") -> tuple[Int8Options, dict]:
        """The INT8 options for an artifact that runs on `profile`'s device, and what was
        decided for it and why (a format whose INT8 layout depends on the device's kernels
        overrides this; see READS_INT8_SPEC)."""
        return options, {}

    def export(self, model: "torch.nn.Module", example: "torch.Tensor", calibration: np.ndarray, path: Path,
               metadata: dict[str, str], encoding: str = "int8", options: Int8Options = Int8Options()) -> dict:
        """Write the model in `encoding` (one of ENCODINGS) at `path`, with `metadata` embedded;
        returns what was applied (calibrator, float layers...). ConversionError names the op."""
        raise NotImplementedError

    def export_int8(self, model, example, calibration, path, metadata, options: Int8Options = Int8Options()) -> dict:
        return self.export(model, example, calibration, path, metadata, "int8", options)

    def proxy_model(self, model: "torch.nn.Module", options: Int8Options = Int8Options(),
                    encoding: str = "int8") -> "torch.nn.Module":
        """A torch stand-in for the artifact, scored where the runtime cannot run here."""
        raise RuntimeUnavailable(f"{self.NAME} has no torch-side proxy")

    # --- metadata and structure -------------------------------------------------------
    def write_metadata(self, path: Path, metadata: dict[str, str]) -> None:
        raise NotImplementedError

    def read_metadata(self, path: Path) -> dict[str, str]:
        raise NotImplementedError

    def check(self, path: Path, input_shape: tuple[int, ...], encoding: str | None = None) -> dict | None:
        """A structural check that runs on any OS (what was found), or None where the format
        has none beyond loading in its runtime. ConversionError when the artifact is wrong."""
        return None

    # --- running ------------------------------------------------------------------------
    def open_session(self, path: Path | str, threads: int = 1, **runtime_options: str) -> Session:
        """A session of the artifact in its runtime with `threads` threads and the profile's
        runtime options. `interleaved=True`: it will take turns with other sessions on the same
        cores (a runtime whose idle threads spin, onnxruntime, then lets them sleep)."""
        raise NotImplementedError

    def session(self, path: Path, threads: int = 1, **runtime_options: str) -> Session:
        """`open_session` here, where a runtime that cannot prepare the model (an op the
        converter wrote but the runtime lacks) is a ConversionError naming it."""
        from edgekiln.targets.errors import ConversionError

        self.require_runtime()
        try:
            return self.open_session(path, threads, **runtime_options)
        except RuntimeError as e:
            raise ConversionError(self.NAME, f"the converted model does not run in {self.RUNTIME}: "
                                             f"{' '.join(str(e).split())}") from e

    def load(self, path: Path) -> None:
        """Load the artifact in its runtime and run one inference (ConversionError if it cannot)."""
        session = self.session(path, 1)
        predict_each(session, np.zeros((1, *session.input_shape[1:]), dtype=np.float32))

    def predict(self, path: Path, images: np.ndarray, threads: int = 1) -> np.ndarray:
        """Logits for preprocessed float32 NCHW `images`, computed in the format's runtime."""
        return predict_each(self.session(path, threads), images)

    # --- devices ------------------------------------------------------------------------
    def adb_tool(self, profile: "Profile") -> str:
        """The benchmark binary's path on the device."""
        if not self.ADB_TOOL:
            raise RunnerFailed(f"the adb runner cannot run {self.NAME} artifacts "
                               f"(formats with an adb command: {', '.join(f.NAME for f in _REGISTRY.values() if f.ADB_TOOL)})")
        return profile.runner.benchmark_tool or self.ADB_TOOL

    def adb_command(self, profile: "Profile", remote_artifact: str) -> list[str]:
        """The on-device command (after `adb shell`) that times `remote_artifact`."""
        self.adb_tool(profile)
        raise NotImplementedError

    def parse_adb_output(self, text: str, profile: "Profile") -> tuple[dict, float | None, list[str]]:
        """Latency (ms), peak memory (MB) and notes from the adb command's output."""
        raise NotImplementedError


def predict_each(session: Session, images: np.ndarray) -> np.ndarray:
    """Logits for `images`, one image per invoke (batch 1, as on device)."""
    outs = []
    for image in images:
        session.set_input(image[None])
        session.invoke()
        outs.append(np.asarray(session.output())[0])
    return np.stack(outs) if outs else np.zeros((0, 0), dtype=np.float32)


def register_format(cls: type[Format]) -> type[Format]:
    """Class decorator: make the format available under its NAME."""
    if not cls.NAME or not cls.SUFFIX or not cls.ENCODINGS:
        raise TypeError(f"{cls.__name__} must set NAME, SUFFIX and ENCODINGS")
    _REGISTRY[cls.NAME] = cls()
    return cls


def _discover() -> None:
    """Import every format file under targets/formats/, then entry-point plugins."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    from edgekiln.targets import formats

    for module in pkgutil.iter_modules(formats.__path__):
        importlib.import_module(f"{formats.__name__}.{module.name}")
    try:
        from importlib.metadata import entry_points

        for entry in entry_points(group="edgekiln.formats"):
            entry.load()
    except Exception:  # a remote device running runtime_bench has no installed distribution
        pass


def format_names() -> tuple[str, ...]:
    """Every registered format's name, sorted."""
    _discover()
    return tuple(sorted(_REGISTRY))


def get_format(name: str) -> Format:
    """The registered format called `name`; KeyError lists the known ones."""
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown artifact format {name!r}; known: {', '.join(format_names())}")
    return _REGISTRY[name]


def format_of(path: Path) -> Format:
    """The format a file name implies (its suffix); KeyError when none does."""
    _discover()
    for fmt in _REGISTRY.values():
        if Path(path).name.endswith(fmt.SUFFIX):
            return fmt
    raise KeyError(f"{Path(path).name}: not an artifact edgekiln knows "
                   f"({', '.join(f.SUFFIX for f in _REGISTRY.values())})")


def int8_simulation(name: str):
    """The INT8 simulation of format `name`: the module its `INT8_SIMULATION` names, holding
    the functions of targets/int8.py's `Int8Simulation` (imported now: it needs torch)."""
    fmt = get_format(name)
    if fmt.INT8_SIMULATION is None:
        raise ValueError(f"format {name!r} has no INT8 simulation (formats with one: "
                         f"{', '.join(simulating_formats())})")
    return importlib.import_module(fmt.INT8_SIMULATION)


def simulating_formats() -> list[str]:
    """The formats whose INT8 scheme can be simulated in torch before any artifact exists."""
    return [name for name in format_names() if get_format(name).INT8_SIMULATION is not None]


def format_files() -> list[Path]:
    """The files a device needs to open any format's session (see runners/ssh.py)."""
    here = Path(__file__).parent
    return [here / "__init__.py", here / "format.py", here / "errors.py", here / "int8.py",
            *sorted((here / "formats").rglob("*.py"))]
