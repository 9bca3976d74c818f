#!/usr/bin/env bash
# What `pip install edgekiln` costs on disk: a fresh venv with the core only, then each format's
# extra added in turn, with the CUDA libraries torch's default PyPI wheel pulls in listed apart.
#   bash benchmarks/install_size.sh [WORKDIR]   (default /tmp/edgekiln-install-size; minutes; ~8 GB)
# A CPU-only torch (https://download.pytorch.org/whl/cpu) drops nvidia-* and triton and ships a
# smaller torch: give its wheel as CPU_TORCH_WHEEL=path to have its unpacked size counted.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/edgekiln-install-size}
rm -rf "$work" && mkdir -p "$work"
python3 -m venv "$work/venv"
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mib() { du -sm "$1" | cut -f1; }
"$work/venv/bin/pip" install --quiet --upgrade pip 2>>"$work/pip.log"
git clone --quiet "$repo" "$work/src"
"$work/venv/bin/pip" install --quiet "$work/src" 2>>"$work/pip.log"
echo "core (no format): $(mib "$work/venv") MiB; of it nvidia-* $(mib "$site/nvidia") MiB, triton $(mib "$site/triton") MiB, torch $(mib "$site/torch") MiB"
before=$(mib "$work/venv")
for extra in onnx tflite coreml executorch; do
  "$work/venv/bin/pip" install --quiet "$work/src[$extra]" 2>>"$work/pip.log"
  now=$(mib "$work/venv"); echo "+ [$extra]: +$((now - before)) MiB"; before=$now
done
echo "all formats: $before MiB"
cuda=$(( $(mib "$site/nvidia") + $(mib "$site/triton") ))
if [ -n "${CPU_TORCH_WHEEL:-}" ]; then
  cpu_torch=$(python3 -c "import sys, zipfile; print(sum(i.file_size for i in zipfile.ZipFile(sys.argv[1]).infolist()) >> 20)" "$CPU_TORCH_WHEEL")
  echo "CPU-only estimate: $(( before - cuda - $(mib "$site/torch") + cpu_torch )) MiB (torch's CPU wheel unpacked: $cpu_torch MiB)"
fi
