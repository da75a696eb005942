#!/bin/sh
# PID 1 of the cgroup v2 test VM (integration/cgroupv2/run.sh boots it):
# mounts the unified cgroup hierarchy with the memory, pids and cpu
# controllers enabled, then, against Debian's containerd and against
# containerd 2.x in turn, runs nsn-run doctor and the integration tests of
# the limits, output and crash-safety issues. Everything goes to the
# results disk (/dev/vdb); then the VM powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# AppArmor's interface: the kernel has it enabled, apparmor_parser loads
# nsn-run's profile through it.
mount -t securityfs securityfs /sys/kernel/security
echo "+cpu +cpuset +memory +pids +io" > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p /results && mount /dev/vdb /results
ip link set lo up
hostname nsn-v2
out=/results/out.txt
: > "$out"
log() { echo "$*" | tee -a "$out" > /dev/console; }

log "kernel $(uname -r); cgroup controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
# A swap file: TestEscapeSwap shows a task whose swap is not held to its
# memory limit running past that limit in swap (the build machine has none).
if fallocate -l 256M /swapfile && chmod 600 /swapfile && mkswap /swapfile > /dev/null && swapon /swapfile; then
  log "swap: $(tail -n +2 /proc/swaps | awk '{print $1, $3 " KiB"}')"
else
  log "swap: could not turn on /swapfile"
fi

suite() { # suite LABEL CONTAINERD_BINARY [PATH_PREFIX]
  label=$1 bin=$2 prefix=$3
  dir=/tmp/ctrd-$label
  mkdir -p "$dir"
  cat > "$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
TOML
  PATH=$prefix$PATH "$bin" --config "$dir/config.toml" > "$dir/containerd.log" 2>&1 &
  pid=$!
  i=0
  while ! ctr --address "$dir/containerd.sock" version > /dev/null 2>&1; do
    i=$((i+1)); [ $i -gt 600 ] && { log "SUITE $label: containerd did not answer"; return; }
    sleep 0.2
  done
  log "SUITE $label: $("$bin" --version)"
  /nsn/nsn-run --address "$dir/containerd.sock" doctor >> "$out" 2>&1
  echo "DOCTOR-EXIT $?" >> "$out"
  PATH=$prefix$PATH NSN_TEST_ADDRESS="$dir/containerd.sock" NSN_TEST_CONTAINERD_BIN="$bin" \
    NSN_TEST_BIN_DIR=/nsn NSN_REQUIRE_INTEGRATION=1 NSN_REQUIRE_APPARMOR=1 NSN_REQUIRE_I386=1 \
    /nsn/integration.test -test.v -test.count=1 -test.timeout 40m \
    -test.run "$(cat /nsn/tests.txt)" >> "$out" 2>&1
  echo "TESTS-EXIT $?" >> "$out"
  kill "$pid"; wait "$pid"
}

log "SUITE cgroups: the cgroups package's tests"
(cd /nsn/cgroups && ./cgroups.test -test.v -test.count=1) >> "$out" 2>&1
echo "TESTS-EXIT $?" >> "$out"
log "SUITE docker-hostpids: the Docker backend's host pid reader"
(cd /nsn/docker && ./docker.test -test.v -test.count=1 -test.run '^TestPidsInCgroupOf') >> "$out" 2>&1
echo "TESTS-EXIT $?" >> "$out"
suite debian /usr/bin/containerd ""
suite v2 /nsn/containerd2/containerd /nsn/containerd2:
log "DONE"
sync
umount /results
echo o > /proc/sysrq-trigger
sleep 10
