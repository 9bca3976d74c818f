"""The `ssh` runner: copy the artifact, runtime_bench.py and the format files (zipped) to a
Linux board or a Mac and run them with the remote python (which needs numpy and the format's
runtime: ai-edge-litert, onnxruntime, coremltools on macOS, executorch...). Given images, it also returns their logits, which is
how a Core ML artifact's accuracy is measured in Core ML itself."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import tempfile
import uuid
import zipfile
from pathlib import Path

import numpy as np

from edgekiln.targets import runtime_bench
from edgekiln.targets.format import format_files
from edgekiln.targets.errors import DeviceUnreachable, RunnerFailed
from edgekiln.targets.profiles import Profile
from edgekiln.targets.runners.host import parse_worker_output, worker_command

DEFAULT_REMOTE_DIR = "/tmp/edgekiln"
_TIMEOUT_S = 900


def connection(profile: Profile) -> tuple[str, list[str], list[str]]:
    """(destination, ssh options, scp options), EDGEKILN_SSH_* overriding the profile."""
    r = profile.runner
    host = os.environ.get("EDGEKILN_SSH_HOST") or r.host
    if not host:
        raise DeviceUnreachable(f"profile {profile.name!r} names no ssh host (runner.host or EDGEKILN_SSH_HOST)")
    user = os.environ.get("EDGEKILN_SSH_USER") or r.user
    port = os.environ.get("EDGEKILN_SSH_PORT") or str(r.port)
    key = os.environ.get("EDGEKILN_SSH_KEY") or r.identity_file
    common = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *r.ssh_options]
    if key:
        common += ["-i", str(Path(key).expanduser())]
    return (f"{user}@{host}" if user else host), ["-p", port, *common], ["-P", port, *common]


def reachable(profile: Profile, timeout_s: float = 10.0) -> None:
    """DeviceUnreachable unless the profile's ssh host answers (`ssh HOST true`, batch mode:
    no password prompt): the check `validate` and the run's start make."""
    destination, ssh_options, _ = connection(profile)
    try:
        done = subprocess.run(["ssh", *ssh_options, destination, "true"], capture_output=True, text=True,
                              timeout=timeout_s + 5)
    except subprocess.TimeoutExpired:
        raise DeviceUnreachable(f"ssh {destination}: no answer in {timeout_s:g} s") from None
    except FileNotFoundError:
        raise DeviceUnreachable("ssh is not installed on this machine") from None
    if done.returncode != 0:
        raise DeviceUnreachable(f"ssh {destination}: {' '.join(done.stderr.split()) or f'exit {done.returncode}'}")


def formats_zip(path: Path) -> Path:
    """A zip of the format files, importable as `edgekiln.targets` on a device that has no
    edgekiln installed (runtime_bench.py puts it on sys.path)."""
    targets_dir = Path(runtime_bench.__file__).resolve().parent
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("edgekiln/__init__.py", "")
        for file in format_files():
            z.write(file, f"edgekiln/targets/{file.resolve().relative_to(targets_dir).as_posix()}")
    return path


def _run(command: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DeviceUnreachable(f"{what}: no answer in {_TIMEOUT_S} s") from None
    if done.returncode == 255:  # ssh's own failure: connection refused, auth, unknown host
        raise DeviceUnreachable(f"{what}: {' '.join(done.stderr.split())}")
    if done.returncode != 0:
        raise RunnerFailed(f"{what} exited {done.returncode}: {' '.join(done.stderr.split()[-60:])}")
    return done


@contextlib.contextmanager
def _remote_dir(profile: Profile, uploads: list[Path]):
    """Copy `uploads`, runtime_bench.py and the format files into a fresh directory on the
    device; yield (run: remote command -> CompletedProcess, fetch: remote name -> local path,
    the directory, the destination); remove the directory afterwards."""
    dest, ssh_opts, scp_opts = connection(profile)
    remote_dir = f"{profile.runner.remote_dir or DEFAULT_REMOTE_DIR}/{uuid.uuid4().hex[:12]}"
    ssh = ["ssh", *ssh_opts, dest]
    _run([*ssh, f"mkdir -p {shlex.quote(remote_dir)}"], f"ssh {dest}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = [*map(str, uploads), runtime_bench.__file__,
                     str(formats_zip(Path(tmp) / runtime_bench.FORMATS_ZIP))]
            _run(["scp", "-q", "-r", *scp_opts, *files, f"{dest}:{remote_dir}/"], f"scp to {dest}")

            def run(command: list[str]) -> subprocess.CompletedProcess:
                return _run([*ssh, shlex.join(command)], f"ssh {dest} {shlex.join(command[:2])}")

            def fetch(name: str) -> Path:
                _run(["scp", "-q", *scp_opts, f"{dest}:{remote_dir}/{name}", tmp], f"scp from {dest}")
                return Path(tmp) / name

            yield run, fetch, remote_dir, dest
    finally:
        subprocess.run([*ssh, f"rm -rf {shlex.quote(remote_dir)}"], capture_output=True, timeout=60)


def run_remote(artifact: Path, profile: Profile, images: np.ndarray | None = None):
    """(Measurement, logits of `images` or None) from runtime_bench.py run on the remote host."""
    from edgekiln.targets.runners import Measurement

    with tempfile.TemporaryDirectory() as local:
        uploads = [artifact]
        if images is not None:
            np.save(Path(local) / "inputs.npy", images.astype(np.float32))
            uploads.append(Path(local) / "inputs.npy")
        with _remote_dir(profile, uploads) as (run, fetch, remote_dir, dest):
            command = worker_command(profile.runner.python, f"{remote_dir}/runtime_bench.py", profile.format,
                                     f"{remote_dir}/{artifact.name}", profile)
            if images is not None:
                command += ["--inputs", f"{remote_dir}/inputs.npy", "--logits-out", f"{remote_dir}/logits.npy"]
            done = run(command)
            result = parse_worker_output(done.stdout, command, done.stderr)
            logits = None if images is None else np.load(fetch("logits.npy"))
    measurement = Measurement(
        source="device", runner="ssh", device=f"{profile.device} via ssh ({dest}, {result['machine']})",
        latency_ms=result["latency_ms"], peak_memory_mb=result["peak_memory_mb"],
        tool=f"{result['runtime']} (python {result['python']})", extra={"threads": profile.runtime.threads})
    return measurement, logits


def interleave(artifacts: list[Path], profile: Profile):
    """The artifacts timed interleaved in one remote process (runtime_bench.interleaved_ms)."""
    from edgekiln.targets.runners import Interleaved

    if len({a.name for a in artifacts}) != len(artifacts):
        raise ValueError(f"artifacts to interleave share a file name: {[a.name for a in artifacts]}")
    with _remote_dir(profile, artifacts) as (run, _, remote_dir, dest):
        remote = [f"{remote_dir}/{a.name}" for a in artifacts]
        command = worker_command(profile.runner.python, f"{remote_dir}/runtime_bench.py", profile.format,
                                 remote, profile)
        done = run(command)
        result = parse_worker_output(done.stdout, command, done.stderr)
    return Interleaved(runner="ssh", device=f"{profile.device} via ssh ({dest}, {result['machine']})",
                       tool=f"{result['runtime']} (python {result['python']})", rounds=result["rounds"],
                       runs_per_round=result["runs_per_round"],
                       round_p50_ms=[result["round_p50_ms"][r] for r in remote])


def measure(artifact: Path, profile: Profile):
    return run_remote(artifact, profile)[0]
