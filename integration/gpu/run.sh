#!/usr/bin/env bash
# run.sh: the GPU isolation check on a machine with NVIDIA GPUs: for each
# GPU, a task given that GPU (by index, then by UUID) runs `nvidia-smi -L`
# and must list exactly that GPU's UUID; "all" must list every GPU, a count
# of 1 one GPU, and a task given none no GPU at all. Each task's spec is
# generated and audited by nsn-run's own packages and run with runc, with the
# CDI spec generated on the spot with nvcdi over NVML: no containerd, image
# registry or network is needed, only the NVIDIA driver and root.
#
#   bash integration/gpu/build.sh      # where Go is: makes integration/gpu/bin
#   bash integration/gpu/run.sh        # on the GPU machine, from the repo root
#   bash integration/gpu/run.sh --fake-driver   # the same flow on a stand-in
#                                               # driver, where there is no GPU
#
# Extra arguments go to gpucheck (-hooks off, -library-search-path DIR, ...).
# Exit status: 0 all checks passed, 1 a check failed, 2 the check could not run.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${NSN_GPU_BIN:-integration/gpu/bin}
die() { printf 'gpu check: %s\n' "$*" >&2; exit 2; }

fake=
if [ "${1:-}" = --fake-driver ]; then fake=1; shift; fi

[ -x "$bin/gpucheck" ] && [ -x "$bin/runc" ] || die "no $bin/gpucheck and $bin/runc: run integration/gpu/build.sh where Go is, and carry $bin"
[ "$(id -u)" = 0 ] || die "needs root (runc creates the containers)"

echo "== host: $(uname -srm); $(ldd --version 2>/dev/null | head -1 || echo 'glibc: ldd not found'); cgroup fs: $(stat -fc %T /sys/fs/cgroup 2>/dev/null || echo none)"

if [ -n "$fake" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  bash integration/gpu/fakedriver/build.sh "$work/driver" >/dev/null
  exec "$bin/gpucheck" -runc "$bin/runc" -cdi-spec "$work/driver/cdi" \
    -gpu 0=GPU-11111111-1111-1111-1111-111111111111 -gpu 1=GPU-22222222-2222-2222-2222-222222222222 "$@"
fi

ls /dev/nvidiactl >/dev/null 2>&1 || die "no /dev/nvidiactl: is the NVIDIA driver loaded?"
if command -v nvidia-smi >/dev/null; then
  echo "== nvidia-smi -L on the host"
  nvidia-smi -L || true
fi
# Drivers installed outside the ld.so cache (/usr/local/nvidia on some
# clouds) are found through their directory, as NVML itself is.
extra=()
if ! ldconfig -p 2>/dev/null | grep -q 'libnvidia-ml.so.1 '; then
  IFS=: read -ra dirs <<<"${LD_LIBRARY_PATH:-}"
  for d in "${dirs[@]}" /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib64/nvidia /usr/lib/nvidia; do
    [ -n "$d" ] && compgen -G "$d/libnvidia-ml.so.*" >/dev/null && extra+=(-library-search-path "$d")
  done
  echo "== libnvidia-ml.so.1 is not in the ld.so cache; searching ${extra[*]:-nothing}"
fi
echo "== gpucheck"
exec "$bin/gpucheck" -runc "$bin/runc" "${extra[@]}" "$@"
