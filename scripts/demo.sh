#!/usr/bin/env bash
# The main job (README, `make demo`): builds nsn-run, starts a private
# containerd if none answers at NSN_ADDRESS, builds an image with our own code
# (Debian's static busybox plus our static probe; no registry needed), shows
# the task's audited spec limits, and runs the task isolated through
# containerd and runc: its output, its limits, and attacks that are blocked.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
export PATH=$PATH:/usr/local/go/bin

work=$(mktemp -d /tmp/nsn-demo.XXXXXX)
trap 'stop_containerd; rm -rf "$work"' EXIT

log "building nsn-run, nsn-imagebuild and the static probe"
go build -o bin/nsn-run ./cmd/nsn-run
go build -o bin/nsn-logger ./cmd/nsn-logger
CGO_ENABLED=0 go build -o bin/nsn-init ./cmd/nsn-init
go build -o bin/nsn-imagebuild ./cmd/nsn-imagebuild
CGO_ENABLED=0 go build -o "$work/nsn-probe" ./integration/probe

addr=${NSN_ADDRESS:-/run/containerd/containerd.sock}
if containerd_answers "$addr"; then
  log "using the containerd answering at $addr"
else
  start_containerd "$work/containerd"
  addr=$CONTAINERD_ADDRESS
fi
export NSN_ADDRESS=$addr NSN_NAMESPACE=${NSN_NAMESPACE:-nsn} NSN_STATE_DIR=$work/state

log "building and importing the demo image"
bin/nsn-imagebuild -o "$work/demo.tar" -name docker.io/library/nsn-demo:latest -add "$work/nsn-probe:/bin/nsn-probe"
bin/nsn-run image import "$work/demo.tar"

limits=(--memory 64m --cpus 0.5 --pids 32 --timeout 60s)
script='echo "hello from $(hostname), uid=$(id -u) gid=$(id -g)"
echo "open files limit: $(ulimit -n); network interfaces: $(ls /sys/class/net)"
echo "attacks (blocked=true means the attack got nothing):"
nsn-probe all
echo 42 > /output/answer.txt
echo "fork 100 sleepers under a pids limit of 32: $( (for i in $(seq 100); do sleep 60 & done) 2>&1 | head -1)"'

log "the task's OCI spec (nsn-run spec), checked by the auditor (nsn-run audit)"
bin/nsn-run spec --id demo "${limits[@]}" nsn-demo:latest -- sh -c "$script" >"$work/spec.json"
bin/nsn-run audit "$work/spec.json"
grep -E '"(limit|swap|quota|period)"' "$work/spec.json" | sed 's/^ */    /'

log "running the task: nsn-run run ${limits[*]} --output-dir $work/out nsn-demo:latest"
status=0
bin/nsn-run run --id demo "${limits[@]}" --output-dir "$work/out" nsn-demo:latest -- sh -c "$script" || status=$?
log "task exited with status $status; files it wrote to /output, copied out:"
ls -l "$work/out"
log "left behind in containerd namespace $NSN_NAMESPACE: $(bin/nsn-run ps | tail -n +2 | wc -l) tasks"
exit "$status"
