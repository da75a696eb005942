#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, starts a
# private containerd, and runs lint, unit and integration tests. Integration
# tests fail rather than skip here when a daemon is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
export PATH=$PATH:/usr/local/go/bin

work=$(mktemp -d /tmp/nsn-ci.XXXXXX)
cleanup() { stop_containerd; rm -rf "$work"; }
trap cleanup EXIT

log "lint"
make --no-print-directory lint

start_containerd "$work/containerd"
export NSN_TEST_ADDRESS=$CONTAINERD_ADDRESS
export NSN_REQUIRE_INTEGRATION=1

log "tests (unit and integration, containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'))"
go test -count=1 ./...
