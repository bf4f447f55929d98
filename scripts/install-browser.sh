#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (Debian packages chromium and chromium-driver)
# for the browser tests (tests/tests/browser.rs), only when they are missing.
exec bash "$(dirname "$0")/install-packages.sh" browser
