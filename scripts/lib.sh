# Shared shell helpers for nsn-run's scripts (sourced, not run).
# They install what nsn-run needs from Debian and start a private containerd
# under a temp dir, never touching the host's /run/containerd.

# go-nvml's cgo binding declares NVML functions NVIDIA has deprecated; keep
# the compiler's notes about them out of the logs.
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}"

# Go's own install puts it in /usr/local/go: found there whatever PATH the
# caller has (a fresh root shell has no /usr/local/go/bin).
case ":$PATH:" in
*:/usr/local/go/bin:*) ;;
*) export PATH=$PATH:/usr/local/go/bin ;;
esac

# SHIMD_TAGS are nsn-shimd's build tags (the Makefile's, which says why).
SHIMD_TAGS=no_grpc

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ensure_packages installs the Debian packages whose commands are missing.
ensure_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || missing+=(busybox-static)
  command -v make >/dev/null || missing+=(make)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v dockerd >/dev/null || missing+=(docker.io)
  # cgo (NVML, the GPU check's stand-in driver) and the static runc the GPU
  # check carries (libseccomp's static library, found through pkg-config).
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  [ -e /usr/lib/x86_64-linux-gnu/libseccomp.a ] || missing+=(libseccomp-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "need root to install ${missing[*]}"
    log "installing ${missing[*]} from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v go >/dev/null || die "Go is not installed (need Go 1.26 at /usr/local/go or on PATH)"
}

# containerd_answers ADDRESS: true when a containerd answers there.
containerd_answers() {
  [ -S "$1" ] && timeout 5 ctr --address "$1" version >/dev/null 2>&1
}

# start_containerd DIR [BINARY]: starts a private containerd with root, state
# and sockets under DIR, waits until it answers, and sets CONTAINERD_PID and
# CONTAINERD_ADDRESS. The caller stops it with stop_containerd.
start_containerd() {
  local dir=$1 bin=${2:-containerd}
  mkdir -p "$dir"
  # runc sets up each task's root from inside the task's own user
  # namespace, so the path to containerd's state must be searchable by
  # others, as /run is (our callers' mktemp dirs are 0700). Only the
  # search bit is added: a parent such as /tmp keeps its mode and sticky bit.
  chmod go+x "$dir" "$(dirname "$dir")"
  cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = "$dir/debug.sock"
TOML
  log "starting $("$bin" --version | head -1) in $dir"
  "$bin" --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
  CONTAINERD_PID=$!
  CONTAINERD_ADDRESS="$dir/containerd.sock"
  # Poll until it answers (or dies): a readiness check, not a fixed sleep.
  local i
  for i in $(seq 1 300); do
    containerd_answers "$CONTAINERD_ADDRESS" && return 0
    kill -0 "$CONTAINERD_PID" 2>/dev/null || { cat "$dir/containerd.log" >&2; die "containerd exited during start-up"; }
    sleep 0.1
  done
  cat "$dir/containerd.log" >&2
  die "containerd did not answer at $CONTAINERD_ADDRESS within 30s"
}

stop_containerd() {
  [ -n "${CONTAINERD_PID:-}" ] || return 0
  kill "$CONTAINERD_PID" 2>/dev/null || true
  wait "$CONTAINERD_PID" 2>/dev/null || true
  CONTAINERD_PID=
}

# CONTAINERD2_VERSION is the containerd 2.x release the integration suite
# also runs against; it is built with `go install` (Debian ships 1.6).
CONTAINERD2_VERSION=${CONTAINERD2_VERSION:-v2.4.2}

# ensure_containerd2 builds containerd, its runc shim and ctr at
# CONTAINERD2_VERSION into a cache dir once, and sets CONTAINERD2_BIN to it.
ensure_containerd2() {
  CONTAINERD2_BIN=${NSN_CACHE_DIR:-/var/cache/nsn-run}/containerd-$CONTAINERD2_VERSION/bin
  if [ -x "$CONTAINERD2_BIN/containerd" ] && [ -x "$CONTAINERD2_BIN/containerd-shim-runc-v2" ] && [ -x "$CONTAINERD2_BIN/ctr" ]; then
    return 0
  fi
  log "building containerd $CONTAINERD2_VERSION with go install (once; cached in $CONTAINERD2_BIN)"
  mkdir -p "$CONTAINERD2_BIN"
  (cd / && GOBIN=$CONTAINERD2_BIN GOFLAGS=-mod=mod go install \
    "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD2_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD2_VERSION" \
    "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD2_VERSION")
}

# RUNC2_VERSION is the runc the containerd 2.x suite runs tasks with: a
# current one (idmapped mounts, the 2025 fixes), where the Debian suite
# keeps Debian's 1.1.5.
RUNC2_VERSION=${RUNC2_VERSION:-v1.5.3}

# ensure_runc2 builds runc at RUNC2_VERSION once, with seccomp, into a cache
# dir, and sets RUNC2_BIN to that dir (put it first on PATH: containerd's
# runc shim runs "runc" from PATH).
ensure_runc2() {
  RUNC2_BIN=${NSN_CACHE_DIR:-/var/cache/nsn-run}/runc-$RUNC2_VERSION
  [ -x "$RUNC2_BIN/runc" ] && return 0
  log "building runc $RUNC2_VERSION with go install (once; cached in $RUNC2_BIN)"
  mkdir -p "$RUNC2_BIN"
  (cd / && GOBIN=$RUNC2_BIN CGO_ENABLED=1 GOFLAGS=-mod=mod go install -trimpath -tags "seccomp urfave_cli_no_docs" \
    "github.com/opencontainers/runc@$RUNC2_VERSION")
}

# STATIC_RUNC_VERSION is the runc the GPU check carries to GPU machines,
# built static (they may have no runc, or another C library).
STATIC_RUNC_VERSION=${STATIC_RUNC_VERSION:-v1.4.0}

# ensure_static_runc builds a static runc at STATIC_RUNC_VERSION once, with
# seccomp, into a cache dir, and sets STATIC_RUNC to it.
ensure_static_runc() {
  local dir=${NSN_CACHE_DIR:-/var/cache/nsn-run}/runc-$STATIC_RUNC_VERSION
  STATIC_RUNC=$dir/runc
  [ -x "$STATIC_RUNC" ] && return 0
  log "building a static runc $STATIC_RUNC_VERSION with go install (once; cached in $dir)"
  mkdir -p "$dir"
  (cd / && GOBIN=$dir CGO_ENABLED=1 go install -trimpath -tags "seccomp netgo osusergo urfave_cli_no_docs" \
    -ldflags "-s -w -extldflags -static" "github.com/opencontainers/runc@$STATIC_RUNC_VERSION")
}

# start_dockerd DIR: starts a private dockerd with its data root, exec root,
# pidfile and socket under DIR (no iptables, no bridge: tasks have no
# network), waits until it answers, and sets DOCKERD_PID and DOCKERD_HOST.
start_dockerd() {
  local dir=$1
  mkdir -p "$dir"
  log "starting $(dockerd --version) in $dir"
  dockerd --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
    -H "unix://$dir/docker.sock" --iptables=false --ip-masq=false --bridge=none \
    >"$dir/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  DOCKERD_HOST="unix://$dir/docker.sock"
  local i
  for i in $(seq 1 600); do
    timeout 5 docker -H "$DOCKERD_HOST" version >/dev/null 2>&1 && return 0
    kill -0 "$DOCKERD_PID" 2>/dev/null || { cat "$dir/dockerd.log" >&2; die "dockerd exited during start-up"; }
    sleep 0.1
  done
  cat "$dir/dockerd.log" >&2
  die "dockerd did not answer at $DOCKERD_HOST within 60s"
}
