package docker

import (
	"strings"
	"testing"

	"github.com/moby/moby/api/types/jsonstream"

	"github.com/nsn-run/nsn-run/runtime"
)

func TestLoadedNames(t *testing.T) {
	stream := `{"stream":"Loaded image: busybox:latest\n"}
{"stream":"Loaded image ID: sha256:abc\n"}
{"stream":"Loaded image: registry.local/team/x:v1\n"}
`
	names, err := loadedNames(strings.NewReader(stream))
	if err != nil || len(names) != 2 || names[0] != "docker.io/library/busybox:latest" || names[1] != "registry.local/team/x:v1" {
		t.Errorf("names %q, %v", names, err)
	}
	if _, err := loadedNames(strings.NewReader(`{"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"}`)); err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Errorf("a failed load: %v", err)
	}
	if _, err := loadedNames(strings.NewReader(`{"stream":"Loaded image ID: sha256:abc\n"}`)); err == nil {
		t.Error("a load of nothing named passed")
	}
}

func TestApplyPullMessage(t *testing.T) {
	var p runtime.PullProgress
	for _, m := range []jsonstream.Message{
		{Status: "Pulling from library/busybox", ID: "latest"},
		{Status: "Pulling fs layer", ID: "a"},
		{Status: "Already exists", ID: "b"},
		{Status: "Downloading", ID: "a", Progress: &jsonstream.Progress{Current: 100, Total: 400}},
	} {
		applyPullMessage(&p, m)
	}
	fetched, total, complete := p.Totals()
	if len(p.Blobs) != 2 || fetched != 100 || total != 400 || complete != 1 {
		t.Errorf("after a download started: %+v", p)
	}
	applyPullMessage(&p, jsonstream.Message{Status: "Pull complete", ID: "a"})
	if fetched, total, complete = p.Totals(); fetched != 400 || total != 400 || complete != 2 {
		t.Errorf("after both layers: %+v", p)
	}
	if applyPullMessage(&p, jsonstream.Message{Status: "Digest: sha256:abc"}) {
		t.Error("a message without a layer id changed the report")
	}
}
