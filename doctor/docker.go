package doctor

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/moby/moby/client"

	"github.com/nsn-run/nsn-run/runtime/docker"
)

// dockerChecks are the daemon checks for --backend docker: dockerd
// reachable, its socket, runc among its runtimes (the backend pins it),
// whether it takes CDI device requests (GPU tasks), and what it says of
// its security options.
func dockerChecks(ctx context.Context, host string) []Check {
	c, err := docker.Dial(ctx, host)
	if err != nil {
		return []Check{{Name: "dockerd", Status: Fatal, Detail: err.Error(),
			Fix: "start dockerd (apt-get install docker.io) or point DOCKER_HOST at its socket"}}
	}
	defer c.Close()
	v, err := c.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return []Check{{Name: "dockerd", Status: Fatal, Detail: err.Error(), Fix: "check dockerd's log"}}
	}
	checks := []Check{{Name: "dockerd", Status: OK, Detail: fmt.Sprintf("%s (API %s) at %s", v.Version, v.APIVersion, host)}}
	if path, ok := strings.CutPrefix(host, "unix://"); ok {
		c := checkSocket(path)
		c.Name = "docker socket"
		checks = append(checks, c)
	}
	info, err := c.Info(ctx, client.InfoOptions{})
	if err != nil {
		return append(checks, Check{Name: "dockerd runtimes", Status: Fatal, Detail: err.Error(), Fix: "check dockerd's log"})
	}
	checks = append(checks, checkDockerRuntimes(info.Info.DefaultRuntime, runtimeNames(info.Info.Runtimes)))
	checks = append(checks, checkDockerCDI(v.APIVersion))
	if slices.ContainsFunc(info.Info.SecurityOptions, func(o string) bool { return strings.Contains(o, "name=userns") }) {
		checks = append(checks, Check{Name: "dockerd userns-remap", Status: Info,
			Detail: "dockerd remaps every container to one shared host id range: docker tasks still share host ids with each other (the containerd backend gives each task its own)"})
	}
	return checks
}

func runtimeNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// checkDockerRuntimes: the backend names runc in every request, so runc
// must be there; a default runtime other than runc (nvidia's, with the
// legacy hook) is worth knowing, though no task of nsn-run's runs under it.
func checkDockerRuntimes(defaultRuntime string, names []string) Check {
	const name = "dockerd runtimes"
	if !slices.Contains(names, "runc") {
		return Check{Name: name, Status: Fatal, Detail: fmt.Sprintf("runc is not among dockerd's runtimes (%s): nsn-run runs every task under runc", strings.Join(names, ", ")),
			Fix: "add runc to dockerd's runtimes (daemon.json \"runtimes\")"}
	}
	if defaultRuntime != "runc" {
		return Check{Name: name, Status: Info, Detail: fmt.Sprintf("default runtime %s; nsn-run pins runc in every request, so tasks never run under it", defaultRuntime)}
	}
	return Check{Name: name, Status: OK, Detail: "runc (pinned in every request); available: " + strings.Join(names, ", ")}
}

// checkDockerCDI: GPU tasks need CDI device requests; nsn-run never falls
// back to NVIDIA's legacy hook.
func checkDockerCDI(apiVersion string) Check {
	if docker.SupportsCDI(apiVersion) {
		return Check{Name: "dockerd CDI", Status: OK, Detail: fmt.Sprintf("API %s takes CDI device requests: GPU tasks run (with CDI enabled in dockerd, and the same CDI specs as nsn-run's --cdi-spec-dir)", apiVersion)}
	}
	return Check{Name: "dockerd CDI", Status: Warn,
		Detail: fmt.Sprintf("API %s has no CDI device requests (they need %s, Docker 25): GPU tasks are refused (exit 125); CPU tasks run", apiVersion, docker.MinCDIAPIVersion),
		Fix:    "upgrade to Docker 25 or later with CDI enabled, or use the containerd backend for GPU tasks"}
}
