// Package shimfront is what nsn-shim's short-lived actions need: `start`,
// which containerd runs once per task to learn (or start) the shim that
// will serve it, and `delete`, which it runs after each shim disconnect.
// Both sit on a task's critical path, and each is a process start.
//
// containerd's runc shim is one 21 MB Go program: every `start` and
// `delete` pays its package initialisation (protobuf and gRPC
// registrations, ~29 ms against ~12 ms for a small program, on a 2-CPU
// host) to do a few file reads, a socket and an exec. nsn-shim (the
// front, cmd/nsn-shim) does those two actions' usual cases itself with
// this package, which links nothing of containerd, protobuf's reflection
// or gRPC (internal/deps holds that true), and hands everything else to
// nsn-shimd (cmd/nsn-shimd: containerd's shim, with nsn-shim's changes),
// which also serves every task.
//
// Each function here copies a piece of containerd 2.4.2's shim (named in
// its comment), and its tests hold it to containerd's own code, which
// they link (a test's imports do not reach the program).
package shimfront
