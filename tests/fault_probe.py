"""The fault probe behind tests/test_faults.py: each case tried as a user would, on real
processes, real signals and real full disks (tmpfs mounts, so run it as root on Linux):

    sudo .venv/bin/python tests/fault_probe.py [WORKDIR]

It prints one line per case, [OK] when the exit code and the state left behind are the
ones docs/guarantees.md states, and the count at the end. Not part of the
suite: it mounts file systems and takes a few minutes."""
import copy
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

EDGEKILN = [sys.executable, "-m", "edgekiln.interfaces.cli"]
W = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/edgekiln-fault-probe"); shutil.rmtree(W, ignore_errors=True); W.mkdir(parents=True)
results = []

def cli(*args, timeout=900):
    p = subprocess.run([*EDGEKILN, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "COLUMNS": "300"})
    return p.returncode, " ".join((p.stdout + p.stderr).split())

def record(case, expected, code, text, ok_extra=True, note=""):
    ok = code == expected and ok_extra
    results.append((case, expected, code, ok, note or text[-220:]))
    print(f"[{'OK' if ok else 'FAIL'}] {case}: exit {code} (want {expected}) {note or text[-300:]}", flush=True)

def digits_folder(root, n=20):
    from sklearn.datasets import load_digits
    d = load_digits()
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
        for i, img in enumerate(d.images[d.target == c][:n]):
            Image.fromarray((img * 16).astype(np.uint8)).resize((24, 24)).save(root / f"c{c}" / f"{i}.png")
    return root

def png_header(path, w, h):
    def chunk(k, d): return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""))

CONFIG = """
[data]
source = "imagefolder"
path = "{data}"
image_size = 16
[teacher]
candidates = ["resnet10t"]
epochs = {teacher_epochs}
[student]
epochs = {student_epochs}
[budget]
max_drop_total = 100.0
[[targets]]
name = "server"
format = "onnx"
"""
def config(name, data, teacher_epochs=1, student_epochs=1):
    p = W / f"{name}.toml"
    p.write_text(CONFIG.format(data=data, teacher_epochs=teacher_epochs, student_epochs=student_epochs))
    return p

data = digits_folder(W / "data")
listing = sorted(map(str, data.rglob("*")))
cfg = config("folder", data)
cache = W / "cache"

# 1. --out inside the data
for out in (data / "c0", data / "out"):
    code, text = cli("run", cfg, "--out", out, "--cache-dir", cache)
    record(f"1. --out {out.relative_to(W)}", 2, code, text, sorted(map(str, data.rglob("*"))) == listing)
# 2. existing --out of the user's; --out == cache
mine = W / "mine"; mine.mkdir(); (mine / "manifest.json").write_text('{"mine": 1}'); (mine / "report.html").write_text("mine")
code, text = cli("run", cfg, "--out", mine, "--cache-dir", cache)
record("2a. --out holding the user's manifest.json and report.html", 2, code, text,
       (mine / "manifest.json").read_text() == '{"mine": 1}')
code, text = cli("run", cfg, "--out", W / "same", "--cache-dir", W / "same")
record("2b. --out equal to --cache-dir", 2, code, text)
# a good run, for later cases
code, text = cli("run", cfg, "--out", W / "good", "--cache-dir", cache)
record("0. a plain run", 0, code, text, note="baseline")

# 3. full disk: a real 3 MB tmpfs as the cache (checkpoints fail), then a small one as --out
def tmpfs(path, size):
    path.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
small = W / "smallcache"; tmpfs(small, "3m")
code, text = cli("run", cfg, "--out", W / "out-full-cache", "--cache-dir", small)
leftovers = [str(p) for p in small.rglob("*") if p.is_file() and ".tmp" in p.name]
used = shutil.disk_usage(small).used
record("3a. ENOSPC under --cache-dir (real tmpfs 3 MB)", 2, code, text, not leftovers,
       note=f"{text[-260:]} | temp files left: {leftovers} | used after: {used}")
smallout = W / "smallout"; tmpfs(smallout, "700k")
code, text = cli("run", cfg, "--out", smallout / "out", "--cache-dir", cache)
m = smallout / "out" / "manifest.json"
claim = json.loads(m.read_text())["passed"] if m.is_file() else None
record("3b. ENOSPC under --out (real tmpfs 700 KB)", 2, code, text, claim is not True,
       note=f"{text[-260:]} | manifest passed: {claim} | out: {sorted(os.listdir(smallout))}")
subprocess.run(["umount", str(small)]); subprocess.run(["umount", str(smallout)])

# 3c. a real disk that fills mid-stage: a 200 MB tmpfs as the cache, filled to the brim by
# another thread as soon as the teacher's first epoch checkpoint appears.
import threading

fillcache = W / "fillcache"; tmpfs(fillcache, "200m")
fillcfg = W / "fill.toml"; fillcfg.write_text(cfg.read_text().replace("epochs = 1\n[student]", "epochs = 3\n[student]"))
def filler():
    while not list(fillcache.glob(".partial/teacher-*/*.pt")):
        time.sleep(0.05)
    with open(fillcache / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
        except OSError:
            pass
threading.Thread(target=filler, daemon=True).start()
code, text = cli("run", fillcfg, "--out", W / "out-fill", "--cache-dir", fillcache)
temps = [str(x) for x in fillcache.rglob("*") if x.is_file() and ".tmp" in x.name]
record("3c. a disk that fills during training (real tmpfs)", 2, code, text,
       "cannot write" in text and "teacher_resnet10t.pt" in text and not temps, note=f"{text[-260:]} | temp files: {temps}")
subprocess.run(["umount", str(fillcache)])

# 4. images
for side in (30000, 13000):
    d = digits_folder(W / f"bomb{side}"); png_header(d / "c1" / "huge.png", side, side)
    code, text = cli("run", config(f"bomb{side}", d), "--out", W / f"out-bomb{side}", "--cache-dir", cache)
    record(f"4a. a {side}x{side} PNG", 2, code, text)
d = digits_folder(W / "dots"); shutil.copytree(d / "c0", d / "..."); shutil.copytree(d / "c1", d / "..a")
code, text = cli("run", config("dots", d), "--out", W / "out-dots", "--cache-dir", cache)
skipped = json.loads((W / "out-dots" / "manifest.json").read_text())["splits"].get("skipped")
record("4b. class folders named ... and ..a", 0, code, text, bool(skipped) and "skipped 2 hidden" in text,
       note=f"manifest splits.skipped = {skipped}")
d = digits_folder(W / "linked"); outside = digits_folder(W / "outside"); (d / "c9").symlink_to(outside / "c2")
code, text = cli("run", config("linked", d), "--out", W / "out-linked", "--cache-dir", cache)
record("4c. a symlinked class folder outside the data", 2, code, text)

# 5. signals
for sig, want in (("SIGTERM", 143), ("SIGINT", 130)):
    c = config(f"sig{sig}", data, student_epochs=30)
    out = W / f"out-{sig}"
    p = subprocess.Popen([*EDGEKILN, "run", str(c), "--out", str(out), "--cache-dir", str(W / f"cache-{sig}")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "300"})
    lines = []
    for line in p.stdout:
        lines.append(line)
        if "distill" in line and "─" in line:
            time.sleep(1.5); p.send_signal(getattr(signal, sig)); break
    rest, _ = p.communicate(timeout=600)
    text = " ".join(("".join(lines) + rest).split())
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    temps = [x.name for x in W.iterdir() if x.name.startswith(f".out-{sig}")] + \
        [str(x) for x in (W / f"cache-{sig}" / ".tmp").iterdir()]
    record(f"5. {sig} while distilling", want, p.returncode, text, manifest.get("error") == "interrupted" and not temps,
           note=f"{text[-200:]} | manifest error={manifest.get('error')} interrupted={manifest.get('interrupted')} | temps={temps}")
    code, text = cli("run", c, "--out", out, "--cache-dir", W / f"cache-{sig}")
    record(f"5. {sig}: the re-run resumes", 0, code, text, "resuming at epoch" in text,
           note=next((s for s in text.split("  ") if "resuming" in s), text[-120:])[:200])

# 6. diff
good = json.loads((W / "good" / "manifest.json").read_text())
def release(name, manifest):
    f = W / name; shutil.copytree(W / "good", f); (f / "manifest.json").write_text(json.dumps(manifest)); return f
bad = copy.deepcopy(good); bad["artifacts"][0]["size_bytes"] = "big"
code, text = cli("diff", W / "good", release("typed", bad))
record("6a. diff: a wrong-typed field", 2, code, text)
short = release("short", good); pred = json.loads((short / "predictions.json").read_text())
pred["top1"]["server"] = pred["top1"]["server"][:-3]; (short / "predictions.json").write_text(json.dumps(pred))
m2 = copy.deepcopy(good); from hashlib import sha256
m2["predictions"]["sha256"] = sha256((short / "predictions.json").read_bytes()).hexdigest()
(short / "manifest.json").write_text(json.dumps(m2))
code, text = cli("diff", W / "good", short)
record("6b. diff: predictions of the wrong length", 2, code, text)
cut = copy.deepcopy(good); cut["artifacts"][0] = {"target": "server", "format": "onnx"}
code, text = cli("diff", W / "good", release("cut", cut))
record("6c. diff: an artifact record cut down to its name", 2, code, text, "NO REGRESSION" not in text)
for command in ("check", "report"):
    code, text = cli(command, W / "typed")
    record(f"6d. {command}: a wrong-typed field", 2, code, text)

# 7. config
for section in ("student", "teacher"):
    kw = {f"{section}_epochs": 0}
    code, text = cli("run", config(f"zero-{section}", data, **kw), "--out", W / "out-zero", "--cache-dir", cache)
    record(f"7a. {section}.epochs = 0", 2, code, text)
deep = W / "deep.toml"; deep.write_text("[" + ".".join(f"k{i}" for i in range(1000)) + "]\nx = 1\n")
code, text = cli("validate", deep); record("7b. a 1000-level TOML table", 2, code, text)
deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
code, text = cli("validate", deep); record("7b. a 5000-deep array", 2, code, text)

print()
print(f"{sum(r[3] for r in results)}/{len(results)} as stated")
sys.exit(0 if all(r[3] for r in results) else 1)
