#!/usr/bin/env bash
# Installs what the tests need (packages, kernel, guest agent, images), builds, and runs the whole
# test suite: unit tests and tests that boot real microVMs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --debug
swift build --build-tests
status=0
swift test --skip-build "$@" || status=$?
# QEMU processes outlive their parent by design; never let a failed test leave one behind.
pkill -KILL -f 'qemu-system-x86_64 -name stasis-' 2>/dev/null || true
rm -rf /tmp/stasis-test-* 2>/dev/null || true
exit $status
