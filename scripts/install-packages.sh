#!/usr/bin/env bash
# Installs the Debian packages the tests need, only those missing, with one `apt-get update`:
#   browser  chromium and chromium-driver (tests/tests/browser*.rs)
#   redis    redis-server (tests/tests/scale_out.rs; the tests start their own on an ephemeral port)
# Usage: bash scripts/install-packages.sh browser redis
set -euo pipefail

missing=()
for group in "$@"; do
    case "$group" in
        browser)
            [[ -x /usr/bin/chromium ]] || missing+=(chromium)
            [[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
            ;;
        redis)
            command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
            ;;
        *)
            echo "install-packages: unknown group '$group' (browser, redis)" >&2
            exit 2
            ;;
    esac
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-packages: nothing missing for: $*"
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
fi
echo "install-packages: installing ${missing[*]}"
"${sudo[@]}" apt-get update
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y "${missing[@]}"
