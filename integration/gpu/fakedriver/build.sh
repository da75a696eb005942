#!/usr/bin/env bash
# build.sh OUT: builds the stand-in NVIDIA driver (nvidia-smi and
# libnvidia-ml.so.999.99 with soname libnvidia-ml.so.1) into OUT and writes
# the CDI spec NVIDIA's generator would write for it with hooks off: GPU 0
# (and its UUID) is /dev/nvidia0 backed by the host's /dev/zero, GPU 1 is
# /dev/nvidia1 backed by /dev/full, and nvidia-smi and the library are
# mounted at their usual paths. gpucheck runs on it where there is no GPU.
# With NSN_FAKE_DRIVER_LEAK=1 GPU 1's edits also add GPU 0's node, a broken
# spec the check must catch (CI runs it to prove the check can fail).
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
out=$1
mkdir -p "$out/cdi"
cc=${CC:-gcc}
leak=
[ "${NSN_FAKE_DRIVER_LEAK:-}" = 1 ] && leak=", {path: /dev/nvidia0, hostPath: /dev/zero}"
"$cc" -O2 -shared -fPIC -Wl,-soname,libnvidia-ml.so.1 -o "$out/libnvidia-ml.so.999.99" "$src/libnvidia-ml.c"
"$cc" -O2 -o "$out/nvidia-smi" "$src/nvidia-smi.c" -ldl
cat >"$out/cdi/nvidia.yaml" <<YAML
cdiVersion: "0.6.0"
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/zero}]
- name: GPU-11111111-1111-1111-1111-111111111111
  containerEdits:
    deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/zero}]
- name: "1"
  containerEdits:
    deviceNodes: [{path: /dev/nvidia1, hostPath: /dev/full}$leak]
- name: GPU-22222222-2222-2222-2222-222222222222
  containerEdits:
    deviceNodes: [{path: /dev/nvidia1, hostPath: /dev/full}$leak]
- name: all
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia0, hostPath: /dev/zero}
    - {path: /dev/nvidia1, hostPath: /dev/full}
containerEdits:
  env: [NVIDIA_VISIBLE_DEVICES=void]
  mounts:
  - {hostPath: $out/nvidia-smi, containerPath: /usr/bin/nvidia-smi, options: [ro, nosuid, nodev, rbind, rprivate]}
  - {hostPath: $out/libnvidia-ml.so.999.99, containerPath: /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.999.99, options: [ro, nosuid, nodev, rbind, rprivate]}
YAML
echo "$out/cdi"
