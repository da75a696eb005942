#!/usr/bin/env bash
# make bench: the benchmark harness (cmd/nsn-bench) against raw runc, ctr and
# docker in one run, on private daemons it starts, with the busybox image
# built by our own code loaded into both. Prints markdown tables; the figures
# in docs/performance.md come from it. Also runs the Go micro-benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
export PATH=$PATH:/usr/local/go/bin

work=$(mktemp -d /tmp/nsn-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

go build -o bin/nsn-run ./cmd/nsn-run
go build -o bin/nsn-logger ./cmd/nsn-logger
CGO_ENABLED=0 go build -o bin/nsn-shim ./cmd/nsn-shim
CGO_ENABLED=0 go build -tags "$SHIMD_TAGS" -o bin/nsn-shimd ./cmd/nsn-shimd
CGO_ENABLED=0 go build -o bin/nsn-init ./cmd/nsn-init
go build -o bin/nsn-imagebuild ./cmd/nsn-imagebuild
go build -o bin/nsn-bench ./cmd/nsn-bench

# dockerd first, on the PATH it has: Debian's dockerd runs its own
# containerd 1.6 and runc 1.1.5 from there.
start_dockerd "$work/dockerd"
pids+=("$DOCKERD_PID")
# nsn-run, ctr and raw runc share one containerd and one runc: by default
# the containerd 2.x and runc the project's second suite runs (shim groups
# need containerd 2), NSN_BENCH_CONTAINERD=debian for Debian's 1.6.20 and
# runc 1.1.5.
if [ "${NSN_BENCH_CONTAINERD:-2}" = debian ]; then
  start_containerd "$work/containerd"
else
  ensure_containerd2
  ensure_runc2
  export PATH=$CONTAINERD2_BIN:$RUNC2_BIN:$PATH
  start_containerd "$work/containerd" "$CONTAINERD2_BIN/containerd"
fi
pids+=("$CONTAINERD_PID")

bin/nsn-imagebuild -o "$work/busybox.tar" >/dev/null
bin/nsn-run --address "$CONTAINERD_ADDRESS" --namespace nsn-bench image import "$work/busybox.tar" >/dev/null
docker -H "$DOCKERD_HOST" load -i "$work/busybox.tar" >/dev/null

log "go test -bench (micro-benchmarks)"
go test -run '^$' -bench . -benchmem ./spec/... ./logs/... | grep -E '^(Benchmark|ok)'

log "nsn-bench (whole tasks against runc, ctr, docker)"
bin/nsn-bench -address "$CONTAINERD_ADDRESS" -docker-host "$DOCKERD_HOST" -nsn-run bin/nsn-run "$@"
