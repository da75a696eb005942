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

// TestDockerStartUnanswered: dockerd creates ("create") or starts
// ("start") a task's container and its answer does not come: a proxy in
// front of the test's dockerd holds the response. Until 2026-12-01 Run
// waited for it with no bound, and after a start the task ran meanwhile
// (the proxy sees it running on dockerd while it holds the answer): the
// guard below found Run still waiting a minute on. Now the start gives up
// (the create at StartTimeout, 3 s; the start at the task's 4 s deadline),
// removes the container and fails unavailable.
func TestDockerStartUnanswered(t *testing.T) {
	direct := dockerClient(t)
	loadDockerImages(t, direct)
	target, ok := strings.CutPrefix(os.Getenv(envDockerHost), "unix://")
	need(t, ok, "%s is not a unix socket: the proxy needs one", envDockerHost)
	for _, step := range []string{"create", "start"} {
		t.Run(step, func(t *testing.T) {
			id := uniqueID("unanswered")
			var once sync.Once
			held := make(chan bool, 1) // whether the container ran when its answer was held
			release := make(chan struct{})
			defer close(release)
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
					hold := req.Method == http.MethodPost && (step == "create" && strings.HasSuffix(req.URL.Path, "/containers/create") && req.URL.Query().Get("name") == id ||
						step == "start" && strings.HasSuffix(req.URL.Path, "/containers/"+id+"/start"))
					if !hold {
						return nil
					}
					once.Do(func() {
						info, err := direct.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
						held <- err == nil && info.Container.State != nil && info.Container.State.Running
					})
					select {
					case <-release:
					case <-req.Context().Done():
					}
					return nil
				},
			}
			sock := filepath.Join(t.TempDir(), "d.sock")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: proxy}
			go func() { _ = srv.Serve(l) }()
			defer srv.Close()

			// The create's bound is StartTimeout; the start's the task's
			// deadline, which comes first.
			startTimeout := 3 * time.Second
			if step == "start" {
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
				if running != (step == "start") {
					t.Errorf("the container ran while dockerd's answer to the %s was held: %v", step, running)
				}
			default:
				t.Fatalf("the proxy held no answer to the %s", step)
			}
			if !errdefs.IsUnavailable(r.err) || r.res.Reason != task.ReasonFailed || !strings.Contains(r.err.Error(), "did not answer its start") {
				t.Errorf("run with dockerd's answer to the %s held: %+v, %v; want failed, unavailable", step, r.res, r.err)
			}
			t.Logf("run: %v", r.err)
			if _, err := direct.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{}); !errdefs.IsNotFound(err) {
				t.Errorf("the task's container after run gave up: %v; want it removed", err)
				_, _ = direct.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true})
			}
		})
	}
}
