"""The CI templates in examples/ci: each is parsed as YAML and its exact command lines run, in
order, in bash, against a tiny config; the CI system's own tools (pip, gh, curl) are stand-ins
that serve a previous release's manifest. The first release has nothing to diff against, the
next one diffs against it, and a regression fails the job."""

import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import junitparser
import yaml
from tiny_pipeline import TINY

ROOT = Path(__file__).resolve().parents[1]
TARGET = '[[targets]]\nname = "server"\nprofile = "x86-server-avx2"\n'

# Stand-ins for what the CI machine has and this one does not. Each logs its arguments.
STAND_INS = {
    "pip": 'echo "pip $*" >> "$STAND_IN_LOG"\n',  # edgekiln is installed in this venv already
    "gh": textwrap.dedent('''\
        echo "gh $*" >> "$STAND_IN_LOG"
        if [ "$1 $2" = "release list" ]; then  # the newest release tag, when there is a release
            [ -n "$RELEASE_DIR" ] && echo "model-v1"
            exit 0
        fi
        if [ "$1 $2" = "release download" ]; then
            dir=$(echo "$@" | sed -E 's/.*--dir ([^ ]+).*/\\1/')
            [ -n "$RELEASE_DIR" ] || { echo "release not found" >&2; exit 1; }
            for f in manifest.json predictions.json; do [ -f "$RELEASE_DIR/$f" ] && cp "$RELEASE_DIR/$f" "$dir/"; done
            exit 0
        fi
        if [ "$1 $2" = "release create" ]; then
            shift 3
            for f in "$@"; do case "$f" in --*) break;; *) [ -e "$f" ] || { echo "no $f" >&2; exit 1; };; esac; done
        fi
        '''),
    "curl": textwrap.dedent('''\
        # GitLab's API: the releases (model-v1 when there is a release), then a release's files;
        # the HTTP status on stdout (--write-out), STAND_IN_HTTP forces one (401: no access).
        echo "curl $*" >> "$STAND_IN_LOG"
        out=$(echo "$@" | sed -E 's/.*--output ([^ ]+).*/\\1/')
        url="${@: -1}"
        code="$STAND_IN_HTTP"
        if [ -z "$code" ]; then
            case "$url" in
                */releases*) if [ -n "$RELEASE_DIR" ]; then echo '[{"tag_name": "model-v1"}]'; else echo '[]'; fi > "$out"
                             code=200;;
                *) file="$RELEASE_DIR/$(basename "${url%%\\?*}")"
                   if [ -n "$RELEASE_DIR" ] && [ -f "$file" ]; then cp "$file" "$out"; code=200; else code=404; fi;;
            esac
        fi
        printf '%s' "$code"
        '''),
}


def _stand_ins(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    for name, body in STAND_INS.items():
        path = directory / name
        path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return directory


def _environment(work: Path, config: Path, variables: dict, cache: Path, release: Path | None) -> dict:
    """The job's environment: the template's variables, the tiny config in place of the
    example's, the shared stage cache, and the stand-ins first on PATH."""
    env = dict(os.environ)
    env.update({k: str(v) for k, v in variables.items()})
    env.update(EDGEKILN_CONFIG=str(config), EDGEKILN_CACHE_DIR=str(cache),
               STAND_IN_LOG=str(work / "stand-ins.log"), RELEASE_DIR=str(release or ""),
               PATH=f"{_stand_ins(work / 'bin')}:{Path(sys.executable).parent}:{env['PATH']}")
    return env


def _run_lines(lines: list[str], cwd: Path, env: dict) -> list[tuple[str, int, str]]:
    """Each command line as the CI system runs it (bash, stop on error), until one fails."""
    done = []
    for line in lines:
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", line], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=600)
        done.append((line, proc.returncode, proc.stdout + proc.stderr))
        if proc.returncode != 0:
            break
    return done


def _no_failures(path: Path) -> None:
    for suite in junitparser.JUnitXml.fromfile(str(path)):
        assert suite.tests > 0 and suite.failures == 0 and suite.errors == 0, path.read_text()


def _github_steps(workflow: dict) -> tuple[dict, list[str]]:
    """The workflow's env and its `run:` scripts in order (`uses:` steps are actions, not commands)."""
    steps = workflow["jobs"]["release"]["steps"]
    scripts = [s["run"] for s in steps if "run" in s]
    assert workflow["defaults"]["run"]["shell"] == "bash"
    return workflow["env"], scripts


def test_the_templates_release_then_diff_against_the_release_and_fail_on_a_regression(run, tmp_path):
    root, _, _ = run
    config = tmp_path / "tiny.toml"
    config.write_text(textwrap.dedent(TINY.format(targets=TARGET)))

    # A first release on GitHub Actions: nothing to diff against yet; a tag push publishes it.
    github = yaml.safe_load((ROOT / "examples/ci/github-actions.yml").read_text())
    variables, scripts = _github_steps(github)
    work = tmp_path / "github"
    work.mkdir()
    env = _environment(work, config, {**variables, "GITHUB_REF_NAME": "model-v1", "GH_TOKEN": "stand-in"},
                       root / "cache", None)
    results = _run_lines(scripts, work, env)
    for line, code, output in results:
        assert code == 0, f"{line}\n{output[-3000:]}"
    assert len(results) == len(scripts)
    assert any(line.startswith("edgekiln run") for line, _, _ in results)
    out = work / variables["EDGEKILN_OUT"]
    for report in ("run.xml", "check.xml"):
        _no_failures(work / "reports" / report)
    assert not (work / "reports" / "diff.xml").exists()  # no release to diff against
    assert "no release yet" in results[1][2]
    check_output = " ".join(next(o for line, _, o in results if line.startswith("edgekiln check")).split())
    assert "PASSED" in check_output and "gate passed: target server: p50 latency" in check_output
    log = (work / "stand-ins.log").read_text()
    assert "gh release create model-v1 manifest.json predictions.json report.html MODEL_CARD.md" in log
    # edgekiln at its pinned release, not the repository's; the last release by its tag pattern;
    # pull requests gate and diff; the stage cache is saved whatever the outcome.
    assert f"edgekiln[{variables['EDGEKILN_FORMATS']}]=={variables['EDGEKILN_VERSION']}" in log and "gh release list" in log
    assert f"--extra-index-url {variables['EDGEKILN_TORCH_INDEX']}" in log  # CPU-only torch on a CPU runner
    assert variables["EDGEKILN_CONFIG"] == ""  # required: the job names it, no example stands in
    assert "pull_request" in github[True] and "tags" in github[True]["push"]  # YAML reads `on:` as True
    saves = [s for s in github["jobs"]["release"]["steps"] if s.get("uses", "").startswith("actions/cache/save")]
    assert saves and saves[0]["if"] == "always()"

    # The next build on GitLab CI diffs against that release: the same config, no regression.
    gitlab = yaml.safe_load((ROOT / "examples/ci/gitlab-ci.yml").read_text())
    job = gitlab["model-release"]
    assert job["cache"]["when"] == "always" and "pip install -e ." not in job["before_script"]
    assert job["artifacts"]["when"] == "always" and job["artifacts"]["reports"]["junit"] == "$EDGEKILN_REPORTS/*.xml"
    # a repository that holds only a config and data: the config's path is required, not an example's
    unset = _run_lines([line for line in job["script"] if "EDGEKILN_CONFIG:?" in line],
                       tmp_path, {**os.environ, "EDGEKILN_CONFIG": ""})
    assert unset and unset[0][1] != 0 and "set EDGEKILN_CONFIG" in unset[0][2]
    lines = job["before_script"] + job["script"]
    work = tmp_path / "gitlab"
    work.mkdir()
    gitlab_env = {**gitlab["variables"], "CI_JOB_TOKEN": "stand-in", "CI_API_V4_URL": "https://gitlab.invalid/api/v4",
                  "CI_PROJECT_ID": "1", "CI_DEFAULT_BRANCH": "main"}
    env = _environment(work, config, gitlab_env, root / "cache", out)  # the release's files
    results = _run_lines(lines, work, env)
    for line, code, output in results:
        assert code == 0, f"{line}\n{output[-3000:]}"
    assert len(results) == len(lines)
    for report in ("run.xml", "check.xml", "diff.xml"):
        _no_failures(work / "reports" / report)
    compared = json.loads((work / "reports" / "diff.json").read_text())
    assert compared["passed"] is True
    [server] = compared["targets"]  # compared image by image: both releases' predictions.json were fetched
    assert next(c for c in server["changes"] if c["metric"] == "test accuracy")["paired"]["only_model_right"] == 0
    assert 'id="diff-table"' in (work / gitlab["variables"]["EDGEKILN_OUT"] / "report.html").read_text()

    # A release whose artifact was half the size: the same diff line fails the job (exit 1).
    base = json.loads((out / "manifest.json").read_text())
    base["artifacts"][0]["size_bytes"] //= 2
    smaller = tmp_path / "smaller-release"
    smaller.mkdir()
    (smaller / "manifest.json").write_text(json.dumps(base))
    env = _environment(work, config, gitlab_env, root / "cache", smaller)
    diff_line = next(line for line in job["script"] if "edgekiln diff" in line)
    results = _run_lines(job["before_script"] + [diff_line], work, env)  # fetch that release, then diff
    assert results[-1][1] == 1, results[-1][2]
    assert re.search(r"REGRESSION server: size", " ".join(results[-1][2].split()))
    assert "releases?per_page=100" in (work / "stand-ins.log").read_text()
    assert "jobs/artifacts/model-v1/raw/" in (work / "stand-ins.log").read_text()  # the release found by its tag

    # The job token without access to the releases: the job fails, saying so; it is not taken
    # for "no release yet".
    results = _run_lines(job["before_script"], work, {**env, "STAND_IN_HTTP": "401"})
    assert results[-1][1] != 0 and "cannot list the releases of project 1: HTTP 401" in results[-1][2]
    publish = gitlab["publish-release"]
    assert publish["needs"] == ["model-release"] and publish["release"]["tag_name"] == "$CI_COMMIT_TAG"
    assert publish["rules"][0]["if"] == f"$CI_COMMIT_TAG =~ /^{gitlab['variables']['EDGEKILN_RELEASE_TAGS']}/"
