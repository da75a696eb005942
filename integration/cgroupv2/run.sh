#!/usr/bin/env bash
# make test-cgroupv2: proves the cgroup v2 path on a real unified-hierarchy
# kernel. Builds (once, cached; again when the recipe below changes) a
# Debian bookworm root with debootstrap from this machine's own apt mirror,
# packs it with our compiled test binaries, nsn-run and containerd 2.x into
# an ext4 image, boots it under QEMU (software emulation: nested KVM is not
# dependable here), and runs inside, against containerd 1.6 and 2.x:
# `nsn-run doctor` (which must report the unified layout) and the
# integration tests of the limits, output and crash-safety issues. The last
# line is `cgroupv2: N passed, M failed`; the exit status is non-zero when
# M > 0 or when the VM does not come back in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

ensure_packages
for cmd in debootstrap qemu-system-x86_64 mkfs.ext4 debugfs; do
  command -v "$cmd" >/dev/null && continue
  log "installing debootstrap, qemu-system-x86, e2fsprogs"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-system-x86 e2fsprogs >/dev/null
  break
done
export PATH=$PATH:/usr/local/go/bin
ensure_containerd2

# The recipe: changing any of it rebuilds the cached root.
suite=bookworm
packages=linux-image-cloud-amd64,containerd,runc,busybox-static,iproute2,procps,apparmor
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)
recipe=$(printf '%s\n' "$suite" "$packages" "$mirror" | sha256sum | cut -c1-12)
cache=${NSN_CACHE_DIR:-/var/cache/nsn-run}/vm
root=$cache/root-$recipe
if [ ! -e "$root/.complete" ]; then
  log "building the VM root ($suite, $packages) from $mirror (once)"
  rm -rf "$root.tmp" && mkdir -p "$cache"
  debootstrap --variant=minbase --include="$packages" "$suite" "$root.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; die "debootstrap failed"; }
  touch "$root.tmp/.complete" && mv "$root.tmp" "$root"
  # Roots of older recipes are dead weight (about 400 MB each).
  find "$cache" -maxdepth 1 -name 'root-*' ! -name "root-$recipe" -exec rm -rf {} +
fi

work=$(mktemp -d /tmp/nsn-v2.XXXXXX)
trap 'rm -rf "$work"' EXIT
log "building the test payload"
mkdir -p "$work/payload/containerd2"
go test -c -o "$work/payload/integration.test" ./integration
# The cgroups package's own tests (run from a copy of the package dir, for
# its testdata): the v2 paths of its host-side readers. And the Docker
# backend's reader of a container's host pids, which reads the host's cgroup
# files itself (runtime/docker/hostpids.go).
mkdir -p "$work/payload/cgroups" "$work/payload/docker"
go test -c -o "$work/payload/cgroups/cgroups.test" ./cgroups
cp -r cgroups/testdata "$work/payload/cgroups/"
go test -c -o "$work/payload/docker/docker.test" ./runtime/docker
go build -o "$work/payload/nsn-run" ./cmd/nsn-run
go build -o "$work/payload/nsn-logger" ./cmd/nsn-logger
CGO_ENABLED=0 go build -o "$work/payload/nsn-probe" ./integration/probe
# The escape tests' static C helpers: the VM has no compiler.
mkdir -p "$work/payload/helpers"
for c in integration/testdata/*.c; do
  gcc -static -O2 -o "$work/payload/helpers/$(basename "$c" .c)" "$c"
done
CGO_ENABLED=0 go build -o "$work/payload/nsn-init" ./cmd/nsn-init
CGO_ENABLED=0 go build -o "$work/payload/nsn-shim" ./cmd/nsn-shim
CGO_ENABLED=0 go build -tags "$SHIMD_TAGS" -o "$work/payload/nsn-shimd" ./cmd/nsn-shimd
cp "$CONTAINERD2_BIN/containerd" "$CONTAINERD2_BIN/containerd-shim-runc-v2" "$work/payload/containerd2/"
cp integration/cgroupv2/guest-init.sh "$work/payload/init.sh"
chmod +x "$work/payload/init.sh"
# The tests of the limits/monitoring, output and crash-safety issues, and
# AppArmor's and the i386 socketcall attack (this VM's Debian kernel has
# AppArmor and an i386 entry point; the build machine's has neither).
# NSN_VM_TESTS replaces the list (a -test.run pattern) for a quicker check.
echo "${NSN_VM_TESTS:-^(TestOOMKill|TestKilledBy137IsNotOOM|TestTimeoutKillsWholeTree|TestForkBomb|TestCPUQuota|TestPeakMemory|TestCPUTimeLimit|TestCLIStats|TestOutputLinksNotFollowed|TestOutputCapENOSPC|TestLogFlood|TestKill9ThenGCForce|TestManagerRestartRecovers|TestContainerdRestart|TestDeadlineHoldsWhileContainerdIsDown|TestAppArmorTaskConfined|TestAppArmorStopsWhatOtherLayersMiss|TestAppArmorProfileReplaced|TestCompatABISocketcall|TestAdversarial|TestEscapeCgroupsPathHost|TestEscapeNPROC|TestEscapeMemoryLimit|TestEscapeSwap|TestEscapeCPUQuota|TestEscapeTmpSize|TestLoggerCPUConfined)\$}" \
  > "$work/payload/tests.txt"

log "packing the VM disk"
mkdir "$work/root"
cp -a "$root/." "$work/root/"
cp -a "$work/payload" "$work/root/nsn"
mkfs.ext4 -q -F -d "$work/root" "$work/rootfs.img" 4G
mkfs.ext4 -q -F "$work/results.img" 64M
kernel=$(ls "$root"/boot/vmlinuz-* | tail -1)
initrd=$(ls "$root"/boot/initrd.img-* | tail -1)

log "booting $(basename "$kernel") under QEMU (TCG) with a unified cgroup hierarchy"
accel=tcg,thread=multi
[ "${NSN_VM_KVM:-}" = 1 ] && [ -w /dev/kvm ] && accel=kvm
status=0
timeout "${NSN_VM_TIMEOUT:-2400}" qemu-system-x86_64 -accel "$accel" -cpu max -smp 2 -m 4096 \
  -nographic -no-reboot -serial mon:stdio -display none \
  -kernel "$kernel" -initrd "$initrd" \
  -append "console=ttyS0 root=/dev/vda rw init=/nsn/init.sh panic=-1 systemd.unified_cgroup_hierarchy=1" \
  -drive "file=$work/rootfs.img,format=raw,if=virtio" \
  -drive "file=$work/results.img,format=raw,if=virtio" \
  > "$work/console.log" 2>&1 || status=$?

debugfs -R "cat /out.txt" "$work/results.img" > "$work/out.txt" 2>/dev/null || true
mkdir -p "${NSN_VM_RESULTS:-/tmp}"
cp "$work/out.txt" "${NSN_VM_RESULTS:-/tmp}/nsn-cgroupv2-results.txt"
cp "$work/console.log" "${NSN_VM_RESULTS:-/tmp}/nsn-cgroupv2-console.log"
grep -E '^(SUITE|DOCTOR-EXIT|TESTS-EXIT|DONE|--- (PASS|FAIL))|unified|cgroups ' "$work/out.txt" || true

passed=$(grep -c '^--- PASS' "$work/out.txt" || true)
failed=$(grep -c '^--- FAIL' "$work/out.txt" || true)
if ! grep -q '^DONE' "$work/out.txt"; then
  log "the VM did not finish (qemu exit $status): see ${NSN_VM_RESULTS:-/tmp}/nsn-cgroupv2-console.log"
  failed=$((failed + 1))
fi
if ! grep -Eq '^ok +cgroups +unified' "$work/out.txt"; then
  log "nsn-run doctor did not report the unified layout"
  failed=$((failed + 1))
fi
if ! grep -Eq '^ok +AppArmor' "$work/out.txt"; then
  log "nsn-run doctor did not report AppArmor enabled"
  failed=$((failed + 1))
fi
echo "cgroupv2: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
