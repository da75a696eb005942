# nsn-run. `make demo` runs a task in an isolated container; `make check` is
# the full test command CI runs (.ci/run). Both install what they need.
GO ?= go
BIN := bin/nsn-run
# nsn-shimd, one process per task, is built as containerd builds its own
# runc shim (its Makefile's SHIM_GO_BUILDTAGS): no_grpc leaves out the gRPC
# stubs of containerd's API packages, which the shim, serving ttrpc only,
# never calls, and with them gRPC, net/http, TLS and gRPC's tracing (whose
# html/template kept every exported method of the binary's types).
# 20.9 MB -> 12.0 MB, about 5 MiB less RSS per idle task
# (docs/performance.md). scripts/lib.sh says the same for the scripts.
SHIMD_TAGS := no_grpc

.PHONY: build test check test-cgroupv2 demo bench lint clean

build:
	$(GO) build -o $(BIN) ./cmd/nsn-run
	$(GO) build -o bin/nsn-logger ./cmd/nsn-logger
	CGO_ENABLED=0 $(GO) build -o bin/nsn-shim ./cmd/nsn-shim
	CGO_ENABLED=0 $(GO) build -tags $(SHIMD_TAGS) -o bin/nsn-shimd ./cmd/nsn-shimd
	CGO_ENABLED=0 $(GO) build -o bin/nsn-init ./cmd/nsn-init

# Unit tests, plus integration tests where daemons are configured (they skip
# otherwise; `make check` makes them mandatory).
test:
	$(GO) test ./...

# Everything CI runs: installs containerd, runc and busybox if missing, starts
# a private containerd, runs lint, unit and integration tests.
check:
	bash scripts/ci.sh

demo:
	bash scripts/demo.sh

# The limits, output and crash-safety integration tests inside a VM with a
# unified cgroup v2 hierarchy, against containerd 1.6 and 2.x (QEMU, TCG).
test-cgroupv2:
	bash integration/cgroupv2/run.sh

# The benchmark harness against runc, ctr and docker (docs/performance.md).
bench:
	bash scripts/bench.sh

# staticcheck at a pinned version. `go run pkg@version` builds it with its
# own go.mod's dependencies (cached after the first run), so it neither
# enters nsn-run's go.mod nor changes what nsn-run links.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

# gofmt, vet, staticcheck, and what links where: the library a node agent
# links builds with CGO_ENABLED=0 and only the GPU packages that need the
# driver link NVIDIA's code (internal/deps). A finding is fixed, or ignored
# where it stands with a //lint:ignore comment that says why.
lint:
	@fmt=$$(gofmt -l .); \
	if [ -n "$$fmt" ]; then echo "gofmt needed:"; echo "$$fmt"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags $(SHIMD_TAGS) ./cmd/nsn-shimd
	$(STATICCHECK) ./...
	$(GO) test -count=1 ./internal/deps

clean:
	rm -rf bin
