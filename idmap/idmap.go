// Package idmap allots each task its own host id range for its user
// namespace: ranges of task.IDRangeSize ids from the operator's configured
// span, one per live task, decided under a node-wide lock and recorded as
// files in one node-wide directory, so every nsn-run process on the node,
// whatever its state dir, and gc after a crash, sees the same allocation.
package idmap

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/task"
)

// Defaults: ranges start at host id 2^20, far above every system and login
// id, and 16384 of them fit below 2^30.
const (
	DefaultBase  uint32 = 1 << 20
	DefaultCount uint32 = 16384
)

// DefaultDir is the node-wide allocation directory. It is on /run: the
// tasks that hold ranges do not outlive a reboot, and neither do their
// allocations.
const DefaultDir = "/run/nsn-run/ids"

// Config configures an Allocator.
type Config struct {
	// Dir holds the node's allocation files; DefaultDir if empty. Every
	// Manager on the node must use the same one, or two could hand out
	// the same range.
	Dir string
	// Owner names the Manager allocating (its state dir): Release and
	// ReleaseExcept touch only its own tasks' ranges, so one Manager's gc
	// never frees another's.
	Owner string
	// Namespace is the containerd namespace its tasks run in, and
	// Containerd that containerd's UUID, recorded with each range: the
	// auditor refuses a spec for another namespace, or for another
	// containerd, on a range held here (HolderOf).
	Namespace, Containerd string
	// Base is the first host id of the first range; DefaultBase if zero.
	Base uint32
	// Count is how many ranges there are; DefaultCount if zero.
	Count uint32
	// Files to check the span against; the system's if empty (tests
	// point them elsewhere).
	SubUIDFile, SubGIDFile, PasswdFile, GroupFile string
}

// Span is the host ids ranges are allotted from.
type Span struct {
	Base, Count uint32
}

// RangeAt is the index'th range of the span.
func (s Span) RangeAt(index uint32) task.IDRange {
	return task.IDRange{HostID: s.Base + index*task.IDRangeSize, Size: task.IDRangeSize}
}

// IndexOf returns the index of r in the span, or false if r is not one of
// its ranges (the auditor's check of a spec's mappings).
func (s Span) IndexOf(r task.IDRange) (uint32, bool) {
	if r.Size != task.IDRangeSize || r.HostID < s.Base || (r.HostID-s.Base)%task.IDRangeSize != 0 {
		return 0, false
	}
	i := (r.HostID - s.Base) / task.IDRangeSize
	return i, i < s.Count
}

// DefaultSpan is the span an Allocator with a zero Config uses.
var DefaultSpan = Span{Base: DefaultBase, Count: DefaultCount}

// Validate checks a span: above host 0 and every system id, inside 32 bits.
func (s Span) Validate() error {
	end := uint64(s.Base) + uint64(s.Count)*task.IDRangeSize
	switch {
	case s.Count == 0:
		return fmt.Errorf("%w: id span has no ranges", errdefs.ErrInvalidArgument)
	case s.Base < task.IDRangeSize:
		return fmt.Errorf("%w: id span base %d: must be at least %d, above host root and every system id", errdefs.ErrInvalidArgument, s.Base, task.IDRangeSize)
	case s.Base%task.IDRangeSize != 0:
		return fmt.Errorf("%w: id span base %d: must be a multiple of %d", errdefs.ErrInvalidArgument, s.Base, task.IDRangeSize)
	case end > 1<<32-1:
		return fmt.Errorf("%w: id span %d + %d ranges ends past the 32-bit id space", errdefs.ErrInvalidArgument, s.Base, s.Count)
	}
	return nil
}

func (s Span) end() uint64 { return uint64(s.Base) + uint64(s.Count)*task.IDRangeSize }

// Contains reports whether host id id lies in one of the span's ranges.
func (s Span) Contains(id uint32) bool { return id >= s.Base && uint64(id) < s.end() }

// Allocator grants ranges. Safe for concurrent use, within a process and
// across processes (flock).
type Allocator struct {
	dir        string
	owner      string
	namespace  string
	containerd string
	span       Span
	mu         sync.Mutex
}

// holder is what an allocation file records.
type holder struct {
	Owner      string `json:"owner"`
	Task       string `json:"task"`
	Namespace  string `json:"namespace,omitempty"`
	Containerd string `json:"containerd,omitempty"`
}

// New checks the span against the host's id files and returns an Allocator
// over cfg.Dir. A span that overlaps a subordinate id range (/etc/subuid,
// /etc/subgid: another tool's user namespaces) or an account's id is
// refused: a task could then act as that account on the host.
func New(cfg Config) (*Allocator, error) {
	span := Span{Base: cfg.Base, Count: cfg.Count}
	if span.Base == 0 {
		span.Base = DefaultBase
	}
	if span.Count == 0 {
		span.Count = DefaultCount
	}
	if err := span.Validate(); err != nil {
		return nil, err
	}
	if err := checkHostFiles(span, cfg.SubUIDFile, cfg.SubGIDFile, cfg.PasswdFile, cfg.GroupFile); err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		cfg.Dir = DefaultDir
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("id allocation dir: %w", err)
	}
	return &Allocator{dir: cfg.Dir, owner: cfg.Owner, namespace: cfg.Namespace, containerd: cfg.Containerd, span: span}, nil
}

// CheckHostIDs refuses ids of span that the host gives others: a
// subordinate id range (/etc/subuid, /etc/subgid) or an account's id
// (/etc/passwd, /etc/group). New checks its whole span; the auditor
// checks a spec's range (a review passed a spec mapped onto a range the
// reviewer had added to /etc/subuid).
func CheckHostIDs(span Span) error {
	return checkHostFiles(span, "", "", "", "")
}

// checkHostFiles is CheckHostIDs over the files named (the system's where
// empty).
func checkHostFiles(span Span, subuid, subgid, passwd, group string) error {
	files := []struct{ path, def string }{
		{subuid, "/etc/subuid"}, {subgid, "/etc/subgid"},
		{passwd, "/etc/passwd"}, {group, "/etc/group"},
	}
	for i, f := range files {
		p := f.path
		if p == "" {
			p = f.def
		}
		var err error
		if i < 2 {
			err = checkSubIDs(p, span)
		} else {
			err = checkAccounts(p, span)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Span is the allocator's span.
func (a *Allocator) Span() Span { return a.span }

// checkSubIDs refuses a span overlapping any "name:start:count" line.
func checkSubIDs(path string, span Span) error {
	return eachLine(path, func(line string) error {
		f := strings.Split(line, ":")
		if len(f) != 3 {
			return nil
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil {
			return nil
		}
		if start < span.end() && start+count > uint64(span.Base) {
			return fmt.Errorf("%w: id span %d-%d overlaps %s's subordinate ids %d-%d in %s: choose another base",
				errdefs.ErrFailedPrecondition, span.Base, span.end()-1, f[0], start, start+count-1, path)
		}
		return nil
	})
}

// checkAccounts refuses a span holding an account's uid or gid (field 3 of
// /etc/passwd and /etc/group).
func checkAccounts(path string, span Span) error {
	return eachLine(path, func(line string) error {
		f := strings.Split(line, ":")
		if len(f) < 3 {
			return nil
		}
		id, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return nil
		}
		if id >= uint64(span.Base) && id < span.end() {
			return fmt.Errorf("%w: id span %d-%d holds id %d of %s in %s: choose another base",
				errdefs.ErrFailedPrecondition, span.Base, span.end()-1, id, f[0], path)
		}
		return nil
	})
}

func eachLine(path string, f func(string) error) error {
	file, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := f(line); err != nil {
			return err
		}
	}
	return sc.Err()
}

// lock serialises decisions across nsn-run processes: finding a free range
// and taking it must be one step.
func (a *Allocator) lock() (unlock func(), err error) {
	a.mu.Lock()
	f, err := os.OpenFile(filepath.Join(a.dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil {
		if err = unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
		}
	}
	if err != nil {
		a.mu.Unlock()
		return nil, fmt.Errorf("lock id allocations: %w", err)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
		a.mu.Unlock()
	}, nil
}

// lockedHolders takes the node-wide lock and reads the allocations under
// it; the caller unlocks.
func (a *Allocator) lockedHolders() (held map[uint32]holder, unlock func(), err error) {
	if unlock, err = a.lock(); err != nil {
		return nil, nil, err
	}
	if held, err = a.holders(); err != nil {
		unlock()
		return nil, nil, err
	}
	return held, unlock, nil
}

// holders reads the allocation files: range index -> holder.
func (a *Allocator) holders() (map[uint32]holder, error) {
	entries, err := os.ReadDir(a.dir)
	if err != nil {
		return nil, fmt.Errorf("read id allocations: %w", err)
	}
	held := map[uint32]holder{}
	for _, e := range entries {
		i, ok := strings.CutPrefix(e.Name(), "r")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(i, 10, 32)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(a.dir, e.Name()))
		if err != nil {
			continue
		}
		var h holder
		if json.Unmarshal(b, &h) != nil {
			h = holder{Task: "?"} // unreadable: held by someone; never reused
		}
		held[uint32(n)] = h
	}
	return held, nil
}

func (a *Allocator) path(index uint32) string {
	return filepath.Join(a.dir, "r"+strconv.FormatUint(uint64(index), 10))
}

// Allocate grants task id a range no other task holds: the one it holds
// already, or the lowest free one. All ranges held is
// errdefs.ErrResourceExhausted.
func (a *Allocator) Allocate(id string) (task.IDRange, error) {
	return a.grant(id, true)
}

// Preview returns the range Allocate(id) would grant now, and takes
// nothing: what `nsn-run spec` shows.
func (a *Allocator) Preview(id string) (task.IDRange, error) {
	return a.grant(id, false)
}

// grant finds task id's range (the one it holds, else the first free one)
// under the lock, and with take records it as id's.
func (a *Allocator) grant(id string, take bool) (task.IDRange, error) {
	held, unlock, err := a.lockedHolders()
	if err != nil {
		return task.IDRange{}, err
	}
	defer unlock()
	me := holder{Owner: a.owner, Task: id, Namespace: a.namespace, Containerd: a.containerd}
	for i, h := range held {
		if h.Owner == me.Owner && h.Task == me.Task {
			return a.span.RangeAt(i), nil
		}
	}
	record, err := json.Marshal(me)
	if err != nil {
		return task.IDRange{}, err
	}
	for i := range a.span.Count {
		if _, taken := held[i]; taken {
			continue
		}
		if !take {
			return a.span.RangeAt(i), nil
		}
		if err := os.WriteFile(a.path(i)+".tmp", record, 0o600); err != nil {
			return task.IDRange{}, fmt.Errorf("allocate id range: %w", err)
		}
		if err := os.Rename(a.path(i)+".tmp", a.path(i)); err != nil {
			return task.IDRange{}, fmt.Errorf("allocate id range: %w", err)
		}
		return a.span.RangeAt(i), nil
	}
	return task.IDRange{}, fmt.Errorf("%w: all %d host id ranges are held by live tasks", errdefs.ErrResourceExhausted, a.span.Count)
}

// Release frees task id's range (of this owner's); releasing nothing is no
// error.
func (a *Allocator) Release(id string) error {
	return a.releaseIf(func(task string) bool { return task == id })
}

// ReleaseExcept frees the range of every task of this owner's not in keep
// (gc). Other owners' ranges are theirs to release.
func (a *Allocator) ReleaseExcept(keep map[string]bool) error {
	return a.releaseIf(func(task string) bool { return !keep[task] })
}

func (a *Allocator) releaseIf(match func(task string) bool) error {
	held, unlock, err := a.lockedHolders()
	if err != nil {
		return err
	}
	defer unlock()
	for i, h := range held {
		if h.Owner != a.owner || !match(h.Task) {
			continue
		}
		if err := os.Remove(a.path(i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("release id range %d: %w", i, err)
		}
	}
	return nil
}

// Held returns each range this owner holds, by task.
func (a *Allocator) Held() (map[string]task.IDRange, error) {
	held, unlock, err := a.lockedHolders()
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := map[string]task.IDRange{}
	for i, h := range held {
		if h.Owner == a.owner {
			out[h.Task] = a.span.RangeAt(i)
		}
	}
	return out, nil
}

// Holder is who holds a range: the Manager that allocated it (its state
// dir), the task, and the containerd namespace and containerd (its UUID)
// it runs in (empty in records made before 2026-11-30's fields).
type Holder struct {
	StateDir, Task, Namespace, Containerd string
}

// HolderOf reports who holds range r of span in the node's allocation dir
// (DefaultDir if empty), reading the one file without taking the lock or
// creating anything: a snapshot, for the auditor's check that a spec's
// range is its own task's. A range that is not one of span's is no one's.
func HolderOf(dir string, span Span, r task.IDRange) (Holder, bool, error) {
	if dir == "" {
		dir = DefaultDir
	}
	i, ok := span.IndexOf(r)
	if !ok {
		return Holder{}, false, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, "r"+strconv.FormatUint(uint64(i), 10)))
	if errors.Is(err, fs.ErrNotExist) {
		return Holder{}, false, nil
	}
	if err != nil {
		return Holder{}, false, fmt.Errorf("read the holder of host ids %d..%d: %w", r.HostID, r.HostID+r.Size-1, err)
	}
	var h holder
	if json.Unmarshal(b, &h) != nil {
		return Holder{Task: "?"}, true, nil // as the allocator: held by someone
	}
	return Holder{StateDir: h.Owner, Task: h.Task, Namespace: h.Namespace, Containerd: h.Containerd}, true, nil
}

// AbandonedAge is how long an allocation must have stood before
// ReclaimAbandoned may free it: far longer than a spawn takes between
// allocating a range and its task's first process running in it.
const AbandonedAge = 10 * time.Minute

// ReclaimAbandoned frees the ranges, of any owner, that nobody will
// release: the owner's state dir does not exist (removed while its tasks
// were in flight or not yet collected: their ranges stayed held until
// reboot), the allocation is at least minAge old, and no process on the
// host (proc, the host's /proc) holds a uid or gid in the range. A state
// dir that exists only in another mount namespace looks removed from
// here; its ranges go only when no process runs in them and no spawn can
// be between allocating and starting, so no two live tasks share one. It
// returns what it freed, one line each.
func (a *Allocator) ReclaimAbandoned(proc string, minAge time.Duration) ([]string, error) {
	held, unlock, err := a.lockedHolders()
	if err != nil {
		return nil, err
	}
	defer unlock()
	var inUse map[uint32]bool // read once, and only if a range may go
	var freed []string
	for i, h := range held {
		if h.Owner == "" {
			continue // unreadable: held by someone, never reused
		}
		if _, err := os.Stat(h.Owner); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		info, err := os.Stat(a.path(i))
		if err != nil || time.Since(info.ModTime()) < minAge {
			continue
		}
		if inUse == nil {
			if inUse, err = idsInUse(proc, a.span); err != nil {
				return freed, err
			}
		}
		r := a.span.RangeAt(i)
		if anyIn(inUse, r) {
			continue
		}
		if err := os.Remove(a.path(i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return freed, fmt.Errorf("free id range %d: %w", i, err)
		}
		freed = append(freed, fmt.Sprintf("host id range %d..%d of task %s of removed state dir %s", r.HostID, uint64(r.HostID)+uint64(r.Size)-1, h.Task, h.Owner))
	}
	return freed, nil
}

// idsInUse reads every process's real, effective, saved and filesystem
// uids and gids from proc, keeping those inside span; a dead process (a
// zombie with no thread left) uses none.
func idsInUse(proc string, span Span) (map[uint32]bool, error) {
	entries, err := os.ReadDir(proc)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	ids := map[uint32]bool{}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(proc, e.Name(), "status"))
		if err != nil {
			continue // exited meanwhile
		}
		if dead(string(b)) {
			continue
		}
		for line := range strings.Lines(string(b)) {
			rest, ok := strings.CutPrefix(line, "Uid:")
			if !ok {
				rest, ok = strings.CutPrefix(line, "Gid:")
			}
			if !ok {
				continue
			}
			for _, f := range strings.Fields(rest) {
				if n, err := strconv.ParseUint(f, 10, 32); err == nil && span.Contains(uint32(n)) {
					ids[uint32(n)] = true
				}
			}
		}
	}
	return ids, nil
}

// dead reports whether a process, its status read as status, is a zombie
// with no thread left: it runs nothing, holds no files, and its ids act on
// nothing; only its parent has yet to reap it. A shim that exits before it
// reaps its task's last process leaves it to pid 1, which may take minutes
// (a sandbox's did: a test's range stayed held by a zombie `sleep`). One
// read decides: `Threads:` is the thread group's count, taken under its
// lock, and stays above 1 while any thread lives (a leader that exited
// while its other threads run shows Z too). A first version walked
// /proc/PID/task and skipped threads gone by the time it read them: an
// outside review's task that kept a successor thread hopping, its leader
// a zombie, read as dead in 598 of 1,180 looks, and its range would have
// gone to the next task while it ran.
func dead(status string) bool {
	return statusField(status, "State:") == "Z" && statusField(status, "Threads:") == "1"
}

// statusField is the first word of a /proc status line (key "State:",
// "Threads:"), "" where there is none.
func statusField(status, key string) string {
	for line := range strings.Lines(status) {
		if rest, ok := strings.CutPrefix(line, key); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				return f[0]
			}
		}
	}
	return ""
}

// anyIn reports whether one of ids lies in r.
func anyIn(ids map[uint32]bool, r task.IDRange) bool {
	for id := range ids {
		if id >= r.HostID && id-r.HostID < r.Size {
			return true
		}
	}
	return false
}
