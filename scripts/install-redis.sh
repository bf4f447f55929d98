#!/usr/bin/env bash
# Installs redis-server (the Debian package) for the scale-out tests (tests/tests/scale_out.rs),
# only when it is missing. The tests start their own redis-server on an ephemeral port.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "install-redis: $(redis-server --version)"
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
fi
echo "install-redis: installing redis-server"
"${sudo[@]}" apt-get update
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y redis-server
