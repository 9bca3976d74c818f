"""`edgekiln profile calibrate` on this host: reference artifacts timed by the host runner,
the table and the profile written, an interruption resumed without measuring twice, and the
calibrated profile estimating. (Over ssh: tests/test_ssh_runner.py.)"""

import csv

from typer.testing import CliRunner

from edgekiln.interfaces.cli import app
from edgekiln.targets import device_calibration
from edgekiln.targets.errors import DeviceUnreachable
from edgekiln.targets.profiles import load_profile
from edgekiln.targets.runners import estimate

# Six small models at 32-48 px, fp32 only: six rows, enough to fit the full cost model.
MODELS = ("edgekiln_probe_conv1@32", "mobilenetv3_small_050@32", "mobilenetv3_small_050@48", "resnet10t@32",
          "resnet10t@48", "mobilenetv3_small_100@32")


def calibrate(out, *extra):
    args = ["profile", "calibrate", "x86-server-avx2", "--runner", "host", "--out", str(out), "--encoding", "fp32",
            "--runs", "10", *(a for m in MODELS for a in ("--model", m)), *extra]
    return CliRunner().invoke(app, args)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_calibrate_on_the_host_writes_a_table_and_a_profile_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "mine.toml"
    table = tmp_path / "mine.references.csv"
    measure = device_calibration.measure_job
    calls = []

    def unplugged_after_two(job, profile, workdir):
        if len(calls) == 2:
            raise DeviceUnreachable("the device went away")
        calls.append(job.key)
        return measure(job, profile, workdir)

    monkeypatch.setattr(device_calibration, "measure_job", unplugged_after_two)
    result = calibrate(out)
    assert result.exit_code == 2 and "the device went away" in result.stderr
    assert len(rows(table)) == 2 and not out.exists()  # what was measured is kept; no profile yet
    first = rows(table)

    monkeypatch.setattr(device_calibration, "measure_job", measure)
    result = calibrate(out)
    assert result.exit_code == 0, result.output
    assert "2 already in" in result.output and "4 to measure" in result.output
    measured = rows(table)
    assert measured[:2] == first and len(measured) == 6  # resumed: the first two were not measured again
    assert {r["device"] for r in measured} == {measured[0]["device"]} and measured[0]["device"].startswith("this host")
    assert all(r["date"] and r["runtime"] == "onnxruntime" and float(r["latency_ms"]) > 0 for r in measured)

    profile = load_profile(out)
    assert profile.runner.kind == "host" and profile.estimate.references == "mine.references.csv"
    assert profile.format == "onnx" and profile.budget.p50_ms == 10.0  # the source profile's budgets
    [row] = estimate.error_table(profile)
    assert row["precision"] == "float" and row["rows"] == 6 and row["loo_median_pct"] is not None
    assert "LOO median %" in result.output and "float" in result.output

    # The calibrated profile estimates: its fixed cost keeps a tiny model above the probe's own cost.
    probe = next(float(r["latency_ms"]) for r in measured if r["model"] == device_calibration.PROBE)
    fit = estimate.calibrate(profile, "float")
    assert fit.model.fixed_ms is not None and fit.model.fixed_ms < 2 * probe

    # A row deleted from the table is measured again, and only that one.
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(measured[0]))
        writer.writeheader()
        writer.writerows(measured[1:])
    result = calibrate(out)
    assert result.exit_code == 0 and "5 already in" in result.output and "1 to measure" in result.output
    assert rows(table)[:5] == measured[1:]


def test_calibrate_refuses_bad_input_before_measuring(tmp_path):
    runner = CliRunner()
    base = ["profile", "calibrate", "x86-server-avx2", "--out", str(tmp_path / "p.toml")]
    result = runner.invoke(app, [*base, "--runner", "estimate"])
    assert result.exit_code == 2 and "a profile is calibrated by measuring" in result.stderr
    result = runner.invoke(app, [*base, "--runner", "host", "--encoding", "int4"])
    assert result.exit_code == 2 and "onnx has no encoding int4" in result.stderr
    result = runner.invoke(app, [*base, "--runner", "host", "--model", "resnet18"])
    assert result.exit_code == 2 and "ARCH@SIZE" in result.stderr
    (tmp_path / "file").write_text("")
    result = runner.invoke(app, ["profile", "calibrate", "x86-server-avx2", "--runner", "host", "--out",
                                 str(tmp_path / "file" / "p.toml"), "--model", "edgekiln_probe_conv1@32",
                                 "--encoding", "fp32", "--runs", "10"])
    assert result.exit_code == 2 and "cannot write" in result.stderr and "file" in result.stderr
    result = runner.invoke(app, ["profile", "calibrate", "raspberry-pi-5-cpu", "--runner", "ssh", "--out",
                                 str(tmp_path / "pi.toml"), "--model", "resnet10t@32", "--encoding", "fp32"],
                           env={"EDGEKILN_SSH_HOST": "127.0.0.1", "EDGEKILN_SSH_PORT": "1"})
    assert result.exit_code == 2 and "ssh" in result.stderr and "127.0.0.1" in result.stderr
    assert not (tmp_path / "pi.toml").exists()
    result = runner.invoke(app, ["profile", "calibrate", "iphone-15-pro-ane", "--runner", "host", "--out",
                                 str(tmp_path / "i.toml"), "--model", "resnet10t@32", "--encoding", "fp32"])
    assert result.exit_code == 2 and "cannot time coreml here" in result.stderr


def test_profile_show_states_how_far_each_estimate_is_trusted():
    result = CliRunner().invoke(app, ["profile", "show", "iphone-15-pro-ane"])
    assert result.exit_code == 0 and "order of magnitude only" in result.output
    assert "w8a16 yes (1 agree)" in " ".join(result.output.split())  # its rows may bound an estimate
    result = CliRunner().invoke(app, ["profile", "show", "x86-server-avx2"])
    assert "int8 no (faster in" in " ".join(result.output.split())  # this host's INT8 table refutes it
    result = CliRunner().invoke(app, ["profile", "show", "raspberry-pi-5-cpu"])
    assert result.exit_code == 0 and "measured only" in result.output
    assert CliRunner().invoke(app, ["profile", "show", "no-such-phone"]).exit_code == 2
