#!/usr/bin/env bash
# build.sh: prepares what the GPU check carries to a GPU machine, in
# integration/gpu/bin (ignored by git): gpucheck (cgo for NVML, stripped;
# needs glibc 2.34 or newer there) and a static runc, since a bare machine
# with only the NVIDIA driver has none. Fails if they would not fit the 64 MiB
# a device run carries with the repository.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
export PATH=$PATH:/usr/local/go/bin
export CGO_CFLAGS=${CGO_CFLAGS:--Wno-deprecated-declarations}

out=integration/gpu/bin
mkdir -p "$out"
log "building gpucheck"
go build -trimpath -ldflags "-s -w" -o "$out/gpucheck" ./integration/gpu/gpucheck
ensure_static_runc
cp "$STATIC_RUNC" "$out/runc"

size=$(du -cb "$out"/* | awk 'END{print $1}')
repo=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | awk 'END{print $1}')
log "$out: $((size / 1048576)) MiB ($(ls "$out" | tr '\n' ' ')); tracked files $((repo / 1048576)) MiB"
[ $((size + repo)) -lt $((64 * 1048576)) ] || die "the GPU check would carry $(((size + repo) / 1048576)) MiB, over the 64 MiB limit"
