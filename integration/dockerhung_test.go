package integration

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/nsn-run/nsn-run/runtime"
	"github.com/nsn-run/nsn-run/runtime/docker"
	"github.com/nsn-run/nsn-run/task"
)

// TestDockerStartUnanswered: dockerd does not answer a call of a task's
// start: a proxy in front of the test's dockerd holds its answer to the
// lookup of the task's container ("inspect"), to its create ("create"), or
// to its start ("start": the container runs meanwhile, as the proxy sees on
// dockerd); in "start-unremovable" it also holds the removals until it
// lets everything through. Until 2026-12-01 Run waited for the answer with
// no bound: the guard below found it still waiting a minute on (an outside
// review's lookup held 160 s). Now the start gives up (StartTimeout 3 s; the
// start at the task's 4 s deadline) and fails unavailable, with the
// container removed; one dockerd would not let go of is removed by the
// Backend once dockerd answers (the review's ran on, unwatched, until a
// gc by hand).
func TestDockerStartUnanswered(t *testing.T) {
	direct := dockerClient(t)
	loadDockerImages(t, direct)
	target, ok := strings.CutPrefix(os.Getenv(envDockerHost), "unix://")
	need(t, ok, "%s is not a unix socket: the proxy needs one", envDockerHost)
	for _, step := range []string{"inspect", "create", "start", "start-unremovable"} {
		t.Run(step, func(t *testing.T) {
			id := uniqueID("unanswered")
			var once, releaseOnce sync.Once
			held := make(chan bool, 1) // whether the container ran when its answer was held
			release := make(chan struct{})
			letGo := func() { releaseOnce.Do(func() { close(release) }) }
			defer letGo()
			wait := func(ctx context.Context) {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			proxy := &httputil.ReverseProxy{
				Rewrite: func(r *httputil.ProxyRequest) {
					r.Out.URL.Scheme, r.Out.URL.Host = "http", "docker"
				},
				Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", target)
				}},
				FlushInterval: -1,
				ModifyResponse: func(resp *http.Response) error {
					req := resp.Request
					var hold bool
					switch step {
					case "inspect":
						hold = req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/containers/"+id+"/json")
					case "create":
						hold = req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/containers/create") && req.URL.Query().Get("name") == id
					default:
						hold = req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/containers/"+id+"/start")
					}
					if hold {
						once.Do(func() {
							info, err := direct.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
							held <- err == nil && info.Container.State != nil && info.Container.State.Running
						})
						wait(req.Context())
					}
					return nil
				},
			}
			handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if step == "start-unremovable" && r.Method == http.MethodDelete {
					// dockerd takes no removal until let go; one the
					// client gave up on never reaches it.
					wait(r.Context())
					if r.Context().Err() != nil {
						return
					}
				}
				proxy.ServeHTTP(w, r)
			})
			sock := filepath.Join(t.TempDir(), "d.sock")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: handler}
			go func() { _ = srv.Serve(l) }()
			defer srv.Close()

			// The start's bound is the task's deadline (4 s), which
			// comes before StartTimeout there.
			startTimeout := 3 * time.Second
			if strings.HasPrefix(step, "start") {
				startTimeout = time.Minute
			}
			b, err := docker.New(context.Background(), docker.Config{Host: "unix://" + sock, StartTimeout: startTimeout})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			m, err := runtime.New(runtime.Config{Backend: b, StateDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			tk := seedTask(id, "sh", "-c", "sleep 3600")
			tk.Limits.Timeout, tk.Limits.Grace = 4*time.Second, time.Second
			r := awaitRun(t, runInBackground(context.Background(), m, tk), time.Minute, id, "run still waiting on dockerd's answer to the "+step+" a minute on")
			select {
			case running := <-held:
				if running != strings.HasPrefix(step, "start") {
					t.Errorf("the container ran while dockerd's answer to the %s was held: %v", step, running)
				}
			default:
				t.Fatalf("the proxy held no answer to the %s", step)
			}
			if !errdefs.IsUnavailable(r.err) || r.res.Reason != task.ReasonFailed || !strings.Contains(r.err.Error(), "did not answer its start") {
				t.Errorf("run with dockerd's answer to the %s held: %+v, %v; want failed, unavailable", step, r.res, r.err)
			}
			t.Logf("run: %v", r.err)
			gone := func() bool {
				_, err := direct.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
				return errdefs.IsNotFound(err)
			}
			if step == "start-unremovable" {
				info, err := direct.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
				if err != nil || info.Container.State == nil || !info.Container.State.Running {
					t.Fatalf("the container dockerd would not let go of: %v; want it running (the attack)", err)
				}
				letGo()
				for deadline := time.Now().Add(30 * time.Second); !gone() && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				}
			}
			if !gone() {
				t.Errorf("the task's container after run gave up: still there; want it removed")
				_, _ = direct.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true})
			}
		})
	}
}
