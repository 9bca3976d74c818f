"""The ssh runner for real: an OpenSSH server started on 127.0.0.1 by the test, logged into
with a fresh key, runs runtime_bench.py with this python. Skips where sshd cannot start."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekiln.targets import get_format, runners
from edgekiln.targets.errors import DeviceUnreachable
from edgekiln.targets.formats import onnx as onnx_module
from edgekiln.targets.profiles import load_profile
from edgekiln.targets.runners import ssh

SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd",) if Path(p).exists()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        if os.environ.get("EDGEKILN_REQUIRE_SSHD"):  # CI installs it: a skip there would hide a failure
            pytest.fail("OpenSSH server or client not installed, and EDGEKILN_REQUIRE_SSHD is set")
        pytest.skip("OpenSSH server or client not installed (Debian: openssh-server)")
    root = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)], check=True)
    (root / "authorized_keys").write_text((root / "user_key.pub").read_text())
    (root / "authorized_keys").chmod(0o600)
    port = _free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n")
    Path("/run/sshd").mkdir(exist_ok=True) if Path("/run").is_dir() and Path("/run").stat().st_uid == 0 else None
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(50):
        if process.poll() is not None:
            why = f"sshd could not start: {process.stdout.read().strip()[:300]}"
            pytest.fail(why) if os.environ.get("EDGEKILN_REQUIRE_SSHD") else pytest.skip(why)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.skip("sshd did not listen within 5 s")
    profile = root / "loopback.toml"
    profile.write_text(
        'name = "loopback"\ndevice = "this machine over ssh"\nformat = "onnx"\n'
        '[runtime]\nthreads = 1\n[budget]\np50_ms = 1000.0\n'
        f'[runner]\nkind = "ssh"\nhost = "127.0.0.1"\nport = {port}\nidentity_file = "{root / "user_key"}"\n'
        f'python = "{sys.executable}"\nremote_dir = "{root / "remote"}"\nruns = 20\n'
        'ssh_options = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]\n')
    probe = subprocess.run(["ssh", *ssh.connection(load_profile(profile))[1], "127.0.0.1", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        process.kill()
        pytest.skip(f"cannot log in to the loopback sshd: {probe.stderr.strip()[:300]}")
    yield load_profile(profile), root
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    path = tmp_path_factory.mktemp("artifact") / "model.onnx"
    onnx_module.export_float(model, torch.randn(1, 3, 16, 16), path)
    return path


def test_ssh_runner_measures_on_the_remote_host(sshd, onnx_artifact):
    profile, root = sshd
    result = runners.measure(onnx_artifact, profile, None, "float")
    assert result.source == "device" and result.runner == "ssh" and "127.0.0.1" in result.device
    assert result.latency_ms["runs"] == 20 and 0 < result.latency_ms["p50"] <= result.latency_ms["p90"]
    assert result.peak_memory_mb is not None and result.tool.startswith("onnxruntime")
    assert list((root / "remote").iterdir()) == []  # the remote work directory is removed


def test_ssh_runner_times_candidates_interleaved_in_one_remote_process(sshd, onnx_artifact, tmp_path):
    profile, root = sshd
    other = tmp_path / "model.copy.onnx"
    shutil.copy(onnx_artifact, other)
    profile = profile.model_copy(update={"runner": profile.runner.model_copy(update={"choice_rounds": 3})})
    found = runners.interleave([onnx_artifact, other], profile)
    assert found.runner == "ssh" and "127.0.0.1" in found.device and found.rounds == 3
    assert found.runs_per_round == 5 and [len(r) for r in found.round_p50_ms] == [3, 3]
    assert list((root / "remote").iterdir()) == []


def test_ssh_runner_returns_the_remote_runtime_logits(sshd, onnx_artifact):
    profile, _ = sshd
    images = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    _, logits = ssh.run_remote(onnx_artifact, profile, images)
    np.testing.assert_allclose(logits, get_format("onnx").predict(onnx_artifact, images), rtol=1e-5, atol=1e-5)


def test_a_refused_connection_is_unreachable_and_can_fall_back_only_with_references(sshd, onnx_artifact):
    profile, _ = sshd
    closed = profile.model_copy(update={"runner": profile.runner.model_copy(update={"port": _free_port()})})
    with pytest.raises(DeviceUnreachable, match="ssh"):
        runners.measure(onnx_artifact, closed, None, "float")
    with pytest.raises(DeviceUnreachable):  # no [estimate] section: nothing to fall back on
        runners.measure(onnx_artifact, closed, None, "float", allow_estimate=True)


def test_calibrate_over_ssh_times_the_reference_set_on_the_remote_host(sshd, tmp_path):
    from typer.testing import CliRunner

    from edgekiln.interfaces.cli import app
    from edgekiln.targets.runners import estimate

    profile, _ = sshd
    out = tmp_path / "board.toml"
    models = [a for m in ("edgekiln_probe_conv1@32", "mobilenetv3_small_050@32", "resnet10t@32") for a in ("--model", m)]
    result = CliRunner().invoke(app, ["profile", "calibrate", str(profile.path), "--runner", "ssh", "--out", str(out),
                                      "--encoding", "fp32", "--encoding", "int8", *models])
    assert result.exit_code == 0, result.output
    calibrated = load_profile(out)
    assert calibrated.runner.kind == "ssh" and calibrated.runner.port == profile.runner.port
    table = estimate.load_references(calibrated.references_path())
    assert len(table) == 6 and {r.precision for r in table} == {"float", "int8"}
    assert all("ssh runner" in r.source for r in table)
    assert "via ssh (127.0.0.1" in calibrated.device
    assert {row["precision"] for row in estimate.error_table(calibrated)} == {"float", "int8"}
