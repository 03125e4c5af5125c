#!/usr/bin/env bash
# test/deps.sh: install what building, testing and the demo need on Debian 12 (idempotent).
set -euo pipefail
PKGS="build-essential postgresql-15 postgresql-server-dev-15 libopenblas-dev libdnnl-dev python3 python3-numpy python3-torch python3-psycopg2 python3-matplotlib python3-venv python3-setuptools clang libclang-rt-14-dev valgrind libipc-run-perl postgresql-15-plproxy"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
	echo "installing:$missing"
	$SUDO apt-get update -q
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi
