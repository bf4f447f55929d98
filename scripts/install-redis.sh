#!/usr/bin/env bash
# Installs redis-server (the Debian package) for the scale-out tests (tests/tests/scale_out.rs),
# only when it is missing. The tests start their own redis-server on an ephemeral port.
exec bash "$(dirname "$0")/install-packages.sh" redis
