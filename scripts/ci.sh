#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, starts
# private daemons, and runs lint, unit tests, and the integration suite
# against Debian's containerd and against containerd 2.x, with the backend
# conformance suite also against Debian's dockerd; then the limits, output
# and crash-safety tests again inside a VM with a unified cgroup v2
# hierarchy. Integration tests fail rather than skip here when a daemon is
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
export PATH=$PATH:/usr/local/go/bin
ensure_containerd2
ensure_runc2

work=$(mktemp -d /tmp/nsn-ci.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

log "lint"
make --no-print-directory lint

start_containerd "$work/containerd-debian"
pids+=("$CONTAINERD_PID"); debian_address=$CONTAINERD_ADDRESS
# containerd 2.x finds its own runc shim, and the current runc, first on PATH.
PATH=$CONTAINERD2_BIN:$RUNC2_BIN:$PATH start_containerd "$work/containerd-2" "$CONTAINERD2_BIN/containerd"
pids+=("$CONTAINERD_PID"); v2_address=$CONTAINERD_ADDRESS

start_dockerd "$work/dockerd"
pids+=("$DOCKERD_PID")
export NSN_TEST_DOCKER_HOST=$DOCKERD_HOST

export NSN_REQUIRE_INTEGRATION=1
log "unit tests, and integration tests against Debian's containerd $(containerd --version | awk '{print $3}') with runc $(runc --version | awk 'NR==1{print $3}')"
NSN_TEST_ADDRESS=$debian_address NSN_TEST_CONTAINERD_BIN=$(command -v containerd) go test -count=1 ./...

log "integration tests against containerd $CONTAINERD2_VERSION with runc $("$RUNC2_BIN/runc" --version | awk 'NR==1{print $3}')"
PATH=$CONTAINERD2_BIN:$RUNC2_BIN:$PATH NSN_TEST_ADDRESS=$v2_address NSN_TEST_CONTAINERD_BIN=$CONTAINERD2_BIN/containerd \
  go test -count=1 ./integration/...

log "GPU check (integration/gpu) on a stand-in driver: the flow a GPU machine runs, without the GPU"
bash integration/gpu/build.sh
bash integration/gpu/run.sh --fake-driver
# ... and it fails when a GPU's CDI edits leak another GPU into its tasks.
if NSN_FAKE_DRIVER_LEAK=1 bash integration/gpu/run.sh --fake-driver >"$work/gpu-leak.log" 2>&1; then
  cat "$work/gpu-leak.log"; die "the GPU check passed a CDI spec that gives GPU 1's tasks GPU 0 too"
fi
grep -q '^FAIL index 1 ' "$work/gpu-leak.log" || { cat "$work/gpu-leak.log"; die "the GPU check failed the leaking spec for another reason"; }
log "the GPU check caught the leaking spec: $(grep -c '^FAIL' "$work/gpu-leak.log") checks failed"

log "cgroup v2: the limits, output and crash-safety tests in a VM (make test-cgroupv2)"
bash integration/cgroupv2/run.sh
