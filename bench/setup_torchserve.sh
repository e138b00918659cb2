#!/usr/bin/env bash
# The TorchServe side of bench/side_by_side.py, in its own virtual environment (not a project
# dependency): torch pinned as the Makefile pins it, TorchServe 0.12, its archiver, and pyyaml
# (TorchServe 0.12's worker imports yaml without declaring it). Java 17 must be on PATH
# (Debian: apt-get install openjdk-17-jre-headless).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${TORCHSERVE_VENV:-$ROOT/.bench/torchserve-venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
STAMP="$VENV/.installed-torchserve-0.12"

if [[ -f "$STAMP" ]]; then
    exit 0
fi
command -v java >/dev/null || {
    echo "TorchServe needs Java 17: apt-get install -y openjdk-17-jre-headless" >&2
    exit 1
}
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
# The handler imports the project's inference functions, so the project's runtime libraries too
# (the project itself is put on PYTHONPATH by the benchmark, not installed here).
"$VENV/bin/python" -m pip install --quiet "torchserve==0.12.*" "torch-model-archiver==0.12.*" \
    pyyaml "safetensors>=0.4" "numpy>=1.26" "tokenizers>=0.19"
touch "$STAMP"
echo "TorchServe ready in $VENV"
