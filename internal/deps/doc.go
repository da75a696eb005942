// Package deps holds no code: its test keeps true what links where (issue
// 16). The library a node agent links (runtime, both backends, spec, task)
// builds without cgo, and no package but the GPU ones that need the driver
// (gpu/cdigen, gpu/nvmlusage) and the programs that wire them in links
// NVIDIA's code. `make lint` runs it, as `go test ./...` does.
package deps
