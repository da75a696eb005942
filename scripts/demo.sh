#!/usr/bin/env bash
# The main job (README, `make demo`): builds nsn-run, starts a private
# containerd if none answers at NSN_ADDRESS, builds a busybox image with our
# own code (no registry needed), prints the task's audited OCI spec limits,
# and runs the task isolated under runc: its output, its limits, and attacks
# that are blocked.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
export PATH=$PATH:/usr/local/go/bin

log "building nsn-run"
go build -o bin/nsn-run ./cmd/nsn-run
go build -o bin/nsn-imagebuild ./cmd/nsn-imagebuild

work=$(mktemp -d /tmp/nsn-demo.XXXXXX)
trap 'stop_containerd; rm -rf "$work"' EXIT
addr=${NSN_ADDRESS:-/run/containerd/containerd.sock}
if containerd_answers "$addr"; then
  log "using the containerd answering at $addr"
else
  start_containerd "$work/containerd"
  addr=$CONTAINERD_ADDRESS
fi
export NSN_ADDRESS=$addr NSN_NAMESPACE=${NSN_NAMESPACE:-nsn} NSN_STATE_DIR=$work/state

log "building and importing the busybox demo image"
bin/nsn-imagebuild -o "$work/busybox.tar" -rootfs "$work/bundle/rootfs"
bin/nsn-run image import "$work/busybox.tar"

script='echo "hello from $(hostname): uid=$(id -u) gid=$(id -g)"
grep -E "^(CapEff|NoNewPrivs|Seccomp)" /proc/self/status
echo "network interfaces: $(ls /sys/class/net)"
echo "open files limit: $(ulimit -n)"
echo "attack: write /etc/passwd -> $(sh -c "echo x >> /etc/passwd" 2>&1)"
echo "attack: new network namespace -> $(unshare -n true 2>&1)"
echo "attack: fork 100 sleepers under a pids limit of 32 -> $(for i in $(seq 100); do sleep 5 & done 2>&1 | head -1)"
echo result > /output/result.txt && echo "wrote /output/result.txt"'

log "the task's OCI spec (nsn-run spec), audited (nsn-run audit)"
bin/nsn-run spec --id demo --memory 64m --cpus 0.5 --pids 32 busybox:latest -- sh -c "$script" >"$work/bundle/config.json"
bin/nsn-run audit "$work/bundle/config.json"
grep -E '"(limit|swap|quota|period)"' "$work/bundle/config.json" | sed 's/^ */    /'

log "running the task isolated under runc"
out="$NSN_STATE_DIR/tasks/demo/output"
mkdir -p "$out" && chown 65534:65534 "$out"
runc --root "$work/runc" run --bundle "$work/bundle" demo
log "task exited with status $?; output files on the host:"
ls -l "$out"
