#!/usr/bin/env bash
# bench/ort/deps.sh: what the ONNX Runtime anchor needs beyond the extension's build (Debian 12, as
# root): python3-onnx to build the graphs, libpq-dev for ort_pipeline.c, npm for onnxruntime-node
# (its libonnxruntime.so.1, installed into bench/ort/node_modules without running its install
# scripts, which only fetch a GPU backend).  The anchor stays out of the extension's build.
set -euo pipefail
cd "$(dirname "$0")"
PKGS="python3-onnx python3-torch python3-numpy python3-psycopg2 libpq-dev build-essential"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# npm: Debian's npm package, unless a nodejs that brings its own npm is installed
command -v npm >/dev/null || missing="$missing npm"
if [ -n "$missing" ]; then
	[ "$(id -u)" = 0 ] || { echo "missing packages:$missing (run as root to install them)" >&2; exit 1; }
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
fi
LIB=node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1
if [ ! -f "$LIB" ]; then
	[ -f package.json ] || echo '{"name": "pepnet-bench-ort", "private": true}' > package.json
	npm install --ignore-scripts --no-audit --no-fund onnxruntime-node@1.30.0
fi
test -f "$LIB"
