package idmap

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/nsn-run/nsn-run/task"
)

// newAllocator returns an Allocator over a fresh dir with empty host id
// files (the test's, not the system's).
func newAllocator(t *testing.T, dir string, count uint32) *Allocator {
	return newOwnedAllocator(t, dir, count, "/var/lib/nsn-run")
}

func newOwnedAllocator(t *testing.T, dir string, count uint32, owner string) *Allocator {
	t.Helper()
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Dir: dir, Owner: owner, Count: count, SubUIDFile: empty, SubGIDFile: empty, PasswdFile: empty, GroupFile: empty})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAllocateDistinctAndReleased(t *testing.T) {
	a := newAllocator(t, t.TempDir(), 3)
	r1, err := a.Allocate("a")
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := a.Allocate("b")
	if r1 == r2 || r1.Contains(0) || r1.Contains(task.NobodyID) || r1.HostID != DefaultBase || r2.HostID != DefaultBase+task.IDRangeSize {
		t.Fatalf("ranges %v %v", r1, r2)
	}
	if again, _ := a.Allocate("a"); again != r1 {
		t.Errorf("a second Allocate for the same task gave %v, want its %v", again, r1)
	}
	if _, err := a.Allocate("c"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate("d"); !errdefs.IsResourceExhausted(err) {
		t.Errorf("fourth task of three ranges: %v", err)
	}
	if err := a.Release("b"); err != nil {
		t.Fatal(err)
	}
	if r, err := a.Allocate("d"); err != nil || r != r2 {
		t.Errorf("after b's release d got %v %v, want b's %v", r, err, r2)
	}
	if err := a.ReleaseExcept(map[string]bool{"c": true}); err != nil {
		t.Fatal(err)
	}
	if held, _ := a.Held(); len(held) != 1 || held["c"].HostID == 0 {
		t.Errorf("after gc keeping c: %v", held)
	}
}

// TestThousandTasksLeaveNothing: 1,000 tasks through two allocators over
// one dir (two nsn-run processes), 16 at a time, never share a range and
// leave none held.
func TestThousandTasksLeaveNothing(t *testing.T) {
	dir := t.TempDir()
	allocs := []*Allocator{newAllocator(t, dir, 64), newAllocator(t, dir, 64)}
	var mu sync.Mutex
	live := map[uint32]string{}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	sem := make(chan struct{}, 16)
	for i := range 1000 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id := fmt.Sprintf("t%d", i)
			a := allocs[i%2]
			r, err := a.Allocate(id)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			if other, ok := live[r.HostID]; ok {
				errs <- fmt.Errorf("range %v given to %s while %s holds it", r, id, other)
			}
			live[r.HostID] = id
			mu.Unlock()
			mu.Lock()
			delete(live, r.HostID)
			mu.Unlock()
			if err := a.Release(id); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if held, err := allocs[0].Held(); err != nil || len(held) != 0 {
		t.Errorf("held after 1000 tasks: %v %v", held, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != ".lock" {
			t.Errorf("left in the allocation dir: %s", e.Name())
		}
	}
}

func TestSpanChecks(t *testing.T) {
	for _, s := range []Span{{Base: 0, Count: 1}, {Base: 1000, Count: 1}, {Base: DefaultBase + 1, Count: 1}, {Base: DefaultBase, Count: 0}, {Base: 1 << 31, Count: 1 << 15}} {
		if err := s.Validate(); !errdefs.IsInvalidArgument(err) {
			t.Errorf("span %+v: %v", s, err)
		}
	}
	if err := DefaultSpan.Validate(); err != nil {
		t.Error(err)
	}
	if i, ok := DefaultSpan.IndexOf(DefaultSpan.RangeAt(7)); !ok || i != 7 {
		t.Errorf("IndexOf(RangeAt(7)) = %d %v", i, ok)
	}
	for _, r := range []task.IDRange{{HostID: 0, Size: task.IDRangeSize}, {HostID: DefaultBase + 1, Size: task.IDRangeSize}, {HostID: DefaultBase, Size: 1}, DefaultSpan.RangeAt(DefaultCount)} {
		if _, ok := DefaultSpan.IndexOf(r); ok {
			t.Errorf("IndexOf(%v) accepted a range the span does not allot", r)
		}
	}
}

// TestHostIDsRespected: a span over another tool's subordinate ids or an
// account's id is refused.
func TestHostIDsRespected(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	empty := write("empty", "")
	sub := write("subuid", "alice:1048576:65536\n")
	passwd := write("passwd", "root:x:0:0::/root:/bin/sh\nodd:x:1050000:1050000::/:/bin/sh\n")
	if _, err := New(Config{Dir: t.TempDir(), SubUIDFile: sub, SubGIDFile: empty, PasswdFile: empty, GroupFile: empty}); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "alice") {
		t.Errorf("span over subuid: %v", err)
	}
	if _, err := New(Config{Dir: t.TempDir(), SubUIDFile: empty, SubGIDFile: empty, PasswdFile: passwd, GroupFile: empty}); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "odd") {
		t.Errorf("span over an account: %v", err)
	}
	// Another base avoids both.
	if _, err := New(Config{Dir: t.TempDir(), Base: 1 << 24, SubUIDFile: sub, SubGIDFile: empty, PasswdFile: passwd, GroupFile: empty}); err != nil {
		t.Errorf("span elsewhere: %v", err)
	}
}

// TestOwnersShareTheNode: two Managers with different state dirs over the
// node's one dir never get the same range, even for the same task id, and
// one's gc frees none of the other's.
func TestOwnersShareTheNode(t *testing.T) {
	dir := t.TempDir()
	a := newOwnedAllocator(t, dir, 8, "/srv/team-a")
	b := newOwnedAllocator(t, dir, 8, "/srv/team-b")
	ra, err := a.Allocate("job")
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.Allocate("job")
	if err != nil {
		t.Fatal(err)
	}
	if ra == rb {
		t.Fatalf("two owners got the same range %v", ra)
	}
	if err := a.ReleaseExcept(map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	if held, _ := b.Held(); held["job"] != rb {
		t.Errorf("a's gc freed b's range: b holds %v", held)
	}
	if held, _ := a.Held(); len(held) != 0 {
		t.Errorf("a still holds %v", held)
	}
	if err := b.Release("job"); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != ".lock" {
			t.Errorf("left: %s", e.Name())
		}
	}
}

// TestPreviewTakesNothing: Preview names the range Allocate would grant
// next (or the one the task holds), records nothing, and reports
// exhaustion as Allocate does.
func TestPreviewTakesNothing(t *testing.T) {
	a := newAllocator(t, t.TempDir(), 2)
	p, err := a.Preview("a")
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := a.Preview("b"); again != p {
		t.Errorf("a second preview for another task gave %v, want the same free %v: the first took it", again, p)
	}
	r, err := a.Allocate("a")
	if err != nil || r != p {
		t.Fatalf("Allocate gave %v (%v), the preview said %v", r, err, p)
	}
	if held, _ := a.Preview("a"); held != r {
		t.Errorf("preview for a task holding %v gave %v", r, held)
	}
	if _, err := a.Allocate("b"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Preview("c"); !errdefs.IsResourceExhausted(err) {
		t.Errorf("preview with every range held: %v", err)
	}
}

// TestHolderOf: the auditor's snapshot of who holds a range: the task and
// state dir that allocated it, no one for a free range or one outside the
// span, and someone ("?") for an allocation file it cannot parse, as the
// allocator itself never reuses one.
func TestHolderOf(t *testing.T) {
	dir := t.TempDir()
	a := newOwnedAllocator(t, dir, 3, "/srv/agent")
	r, err := a.Allocate("job-1")
	if err != nil {
		t.Fatal(err)
	}
	if h, held, err := HolderOf(dir, a.Span(), r); err != nil || !held || h != (Holder{StateDir: "/srv/agent", Task: "job-1"}) {
		t.Errorf("holder of an allocated range: %+v %v %v", h, held, err)
	}
	free := a.Span().RangeAt(2)
	if h, held, err := HolderOf(dir, a.Span(), free); err != nil || held {
		t.Errorf("holder of a free range: %+v %v %v", h, held, err)
	}
	if _, held, err := HolderOf(dir, a.Span(), task.IDRange{HostID: 100000, Size: task.IDRangeSize}); err != nil || held {
		t.Errorf("holder of a range outside the span: %v %v", held, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "r2"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if h, held, err := HolderOf(dir, a.Span(), free); err != nil || !held || h.Task != "?" {
		t.Errorf("holder of an unreadable allocation: %+v %v %v", h, held, err)
	}
}

// TestReclaimAbandoned: gc frees a range whose state dir is gone, that was
// allocated long enough ago, and in which no process runs; it keeps one
// whose state dir exists, one allocated a moment ago (a spawn may be
// between allocating and starting), and one a process still runs in.
func TestReclaimAbandoned(t *testing.T) {
	dir := t.TempDir()
	gone := filepath.Join(t.TempDir(), "removed-state-dir")
	kept := t.TempDir()
	old := time.Now().Add(-time.Hour)
	alloc := func(owner, id string, at time.Time) task.IDRange {
		t.Helper()
		a := newOwnedAllocator(t, dir, 8, owner)
		r, err := a.Allocate(id)
		if err != nil {
			t.Fatal(err)
		}
		i, _ := a.Span().IndexOf(r)
		if err := os.Chtimes(a.path(i), at, at); err != nil {
			t.Fatal(err)
		}
		return r
	}
	alloc(gone, "abandoned", old)
	alloc(kept, "live-dir", old)
	alloc(gone, "just-allocated", time.Now())
	running := alloc(gone, "still-running", old)
	leaderGone := alloc(gone, "threads-running", old)
	zombie := alloc(gone, "zombie-only", old)

	proc := t.TempDir()
	// process writes pid's status, its ids at r's nobody; threads is
	// its thread group's count.
	process := func(pid int, r task.IDRange, state string, threads int) {
		t.Helper()
		id := r.HostID + 65534
		status := fmt.Sprintf("Name:\tsleep\nState:\t%s\nUid:\t%d\t%d\t%d\t%d\nGid:\t%d\t%d\t%d\t%d\nThreads:\t%d\n",
			state, id, id, id, id, id, id, id, id, threads)
		d := filepath.Join(proc, strconv.Itoa(pid))
		if err := os.MkdirAll(filepath.Join(d, "task", strconv.Itoa(pid)), 0o755); err != nil {
			t.Fatal(err)
		}
		// task/ lists the leader alone, as it reads once the other
		// threads are gone by the time it is listed (an outside review's
		// hopping threads): only Threads: says they live.
		for _, f := range []string{filepath.Join(d, "status"), filepath.Join(d, "task", strconv.Itoa(pid), "status")} {
			if err := os.WriteFile(f, []byte(status), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	process(4242, running, "S (sleeping)", 1)
	// A leader that exited while a thread of it runs: alive.
	process(4300, leaderGone, "Z (zombie)", 2)
	// A zombie not yet reaped, no thread left: dead, its range free.
	process(4400, zombie, "Z (zombie)", 1)
	a := newOwnedAllocator(t, dir, 8, kept)
	freed, err := a.ReclaimAbandoned(proc, AbandonedAge)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(freed)
	if len(freed) != 2 || !strings.Contains(freed[0], "task abandoned of removed state dir "+gone) ||
		!strings.Contains(freed[1], "task zombie-only of removed state dir "+gone) {
		t.Errorf("freed %q; want the abandoned task's range and the zombie's", freed)
	}
	held, err := a.holders()
	if err != nil {
		t.Fatal(err)
	}
	var tasks []string
	for _, h := range held {
		tasks = append(tasks, h.Task)
	}
	slices.Sort(tasks)
	if want := []string{"just-allocated", "live-dir", "still-running", "threads-running"}; !slices.Equal(tasks, want) {
		t.Errorf("still held: %v; want %v", tasks, want)
	}
}
