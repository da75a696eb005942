package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	"golang.org/x/text/unicode/norm"

	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/task"
)

// maxOutputDepth bounds how deep collection descends into /output.
const maxOutputDepth = 32

// outputCaps bound what collection copies: the task's output limits (which
// the tmpfs already enforces; the caps hold for any backend) and a depth.
type outputCaps struct {
	files, bytes int64
	depth        int
}

// CheckOutputDest refuses a destination for a task's output files that
// exists and is not an empty directory ("" is none, and fine). The task
// chose the names: a file of its beside the operator's own is code the
// operator may run later without looking (a git hook, a Makefile, a
// conftest.py, a .bashrc), and one of the same name would replace theirs.
// An outside review had a task's file replace an executable git hook.
func CheckOutputDest(dest string) error {
	if dest == "" {
		return nil
	}
	if _, err := resolveTrusted(dest); err != nil {
		return err
	}
	entries, err := os.ReadDir(dest)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// The copy creates it, and its missing parents: what is there
		// must let it (a dangling symlink, or a file where a directory
		// goes, would fail only after the task ran, and its output went
		// with its cleanup: an outside review's find).
		return checkCreatable(dest)
	case err != nil:
		return fmt.Errorf("%w: output dir %s: %w", errdefs.ErrInvalidArgument, dest, err)
	case len(entries) > 0:
		return fmt.Errorf("%w: output dir %s is not empty: give a new or empty directory (a task's files are never mixed with others)", errdefs.ErrInvalidArgument, dest)
	}
	return nil
}

// checkCreatable checks what it can of MkdirAll(dest) before anything
// runs: no entry along the path is a dangling symlink or anything but a
// directory. (A filesystem that refuses the mkdir, /proc say, shows when
// Run makes the directory right after the spawn.)
func checkCreatable(dest string) error {
	for p := filepath.Clean(dest); ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%w: output dir %s: %w", errdefs.ErrInvalidArgument, dest, err)
			}
			if p == filepath.Dir(p) {
				return nil
			}
			continue
		}
		info, err := os.Stat(p) // through a symlink, as MkdirAll goes
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("%w: output dir %s: %s is a symlink to nothing", errdefs.ErrInvalidArgument, dest, p)
		case err != nil:
			return fmt.Errorf("%w: output dir %s: %w", errdefs.ErrInvalidArgument, dest, err)
		case !info.IsDir():
			return fmt.Errorf("%w: output dir %s: %s is not a directory", errdefs.ErrInvalidArgument, dest, p)
		}
		return nil
	}
}

// outputDest is a destination for a task's output files, made, checked
// and held (takeOutputDest).
type outputDest struct {
	path string
	dir  *os.File
}

// takeOutputDest makes dest and takes it for one Run until release: an
// exclusive flock on the directory itself, which a second Run given the
// same directory finds held (an outside review had two runs collect into
// one directory, the second's files under the first's names), then the
// check that it is still empty, is the directory its path names with no
// other user's symlink on the way (resolveTrusted, checked again once it
// is open: a link swapped in meanwhile is found), and can be written: a
// read-only filesystem found only after the task ran cost a sixteenth
// review the task's only copy of its results. The copy goes into the
// directory held here (outputDest.root), never to what the path names
// later.
func takeOutputDest(dest string) (*outputDest, error) {
	dir, err := makeOutputDest(dest)
	if err != nil {
		return nil, err
	}
	d := &outputDest{path: dest, dir: dir}
	if err := d.check(); err != nil {
		dir.Close()
		return nil, err
	}
	return d, nil
}

func (d *outputDest) check() error {
	if err := syscall.Flock(int(d.dir.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("%w: output dir %s is another run's", errdefs.ErrInvalidArgument, d.path)
		}
		return fmt.Errorf("%w: output dir %s: %w", errdefs.ErrInvalidArgument, d.path, err)
	}
	if err := CheckOutputDest(d.path); err != nil {
		return err
	}
	want, err := resolveTrusted(d.path)
	if err != nil {
		return err
	}
	if held, err := os.Readlink(d.procPath()); err != nil || held != want {
		return fmt.Errorf("%w: output dir %s changed while it was opened (now %s, opened %s)", errdefs.ErrInvalidArgument, d.path, want, held)
	}
	root, err := d.root()
	if err != nil {
		return fmt.Errorf("%w: output dir %s: %w", errdefs.ErrInvalidArgument, d.path, err)
	}
	defer root.Close()
	probe := fmt.Sprintf(".nsn-run-probe-%d", os.Getpid())
	f, err := root.OpenFile(probe, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%w: output dir %s cannot be written: %w", errdefs.ErrInvalidArgument, d.path, err)
	}
	f.Close()
	if err := root.Remove(probe); err != nil {
		return fmt.Errorf("%w: output dir %s: %w", errdefs.ErrInvalidArgument, d.path, err)
	}
	return nil
}

// makeOutputDest opens dest, making what of it is missing, without
// resolving its path twice: the part that exists is opened and must be the
// directory resolveTrusted found (a component swapped for a link since is
// found), and each missing directory is made and opened relative to its
// parent's descriptor, never through a link (a seventeenth review swapped
// a directory and its own symlink in a loop, and MkdirAll, walking the
// path again, made a root-owned directory where the link pointed).
func makeOutputDest(dest string) (*os.File, error) {
	existing, missing, err := resolveTrustedParts("output dir", dest)
	if err != nil {
		return nil, err
	}
	raceHook("resolved")
	fd, err := unix.Open(existing, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: output dir %s: %w", errdefs.ErrInvalidArgument, dest, err)
	}
	if held, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err != nil || held != existing {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: output dir %s changed while it was opened (opened %s, want %s)", errdefs.ErrInvalidArgument, dest, held, existing)
	}
	for _, name := range missing {
		if name == ".." {
			unix.Close(fd)
			return nil, fmt.Errorf("%w: output dir %s: \"..\" below a directory that does not exist", errdefs.ErrInvalidArgument, dest)
		}
		if err := unix.Mkdirat(fd, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(fd)
			return nil, fmt.Errorf("%w: output dir %s: make %s: %w", errdefs.ErrInvalidArgument, dest, name, err)
		}
		raceHook("made " + name)
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("%w: output dir %s: open %s: %w", errdefs.ErrInvalidArgument, dest, name, err)
		}
		fd = next
	}
	return os.NewFile(uintptr(fd), dest), nil
}

// raceHook is called at makeOutputDest's steps; tests swap a directory
// for a link there, as a racing user would.
var raceHook = func(step string) {}

// procPath names the held directory itself, whatever its path names now.
func (d *outputDest) procPath() string { return fmt.Sprintf("/proc/self/fd/%d", d.dir.Fd()) }

// root opens the held directory as an os.Root.
func (d *outputDest) root() (*os.Root, error) { return os.OpenRoot(d.procPath()) }

func (d *outputDest) release() { d.dir.Close() }

// resolveTrusted resolves path as the kernel would and returns it (the
// longest part that exists resolved, the rest as given), refusing a
// symlink on the way that someone other than root or this process's user
// owns: whoever can place one can aim the copy, made as root, at any
// directory root can write. A sixteenth review's job submitter linked the
// directory the operator collected into to an empty root-owned one (the
// stand-in for /etc/tmpfiles.d, whose files systemd applies as root at
// boot), and the task's file landed there. fs.protected_symlinks does not
// help: it covers only sticky world-writable directories, and was 0 there.
func resolveTrusted(path string) (string, error) {
	existing, missing, err := resolveTrustedParts("output dir", path)
	if err != nil {
		return "", err
	}
	return filepath.Join(append([]string{existing}, missing...)...), nil
}

// resolveTrustedParts is resolveTrusted's answer in two parts: the part
// of path that exists, resolved, and the names below it that do not;
// what names the path in errors.
func resolveTrustedParts(what, path string) (existing string, missing []string, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s %s: %w", errdefs.ErrInvalidArgument, what, path, err)
	}
	rest := strings.Split(abs, "/")
	cur, links := "/", 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		info, err := os.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) {
			return cur, slices.DeleteFunc(append([]string{c}, rest...), func(n string) bool { return n == "" || n == "." }), nil
		}
		if err != nil {
			return "", nil, fmt.Errorf("%w: %s %s: %w", errdefs.ErrInvalidArgument, what, path, err)
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if uid := info.Sys().(*syscall.Stat_t).Uid; uid != 0 && uid != uint32(os.Geteuid()) {
			return "", nil, fmt.Errorf("%w: %s %s: %s is a symlink that uid %d owns: give a path through root's own links only", errdefs.ErrInvalidArgument, what, path, next, uid)
		}
		if links++; links > 40 {
			return "", nil, fmt.Errorf("%w: %s %s: %w", errdefs.ErrInvalidArgument, what, path, syscall.ELOOP)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", nil, fmt.Errorf("%w: %s %s: %w", errdefs.ErrInvalidArgument, what, path, err)
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return cur, nil, nil
}

// CollectOutput fills res with the task's stdout and stderr and the regular
// files it wrote to /output, each with size and sha256; with dest set it
// also copies them there: dest must not exist or be empty
// (CheckOutputDest), and a file that appears there meanwhile is never
// replaced (listed in res.OutputSkipped instead). Run it after Wait: the
// task has stopped, so nothing in the output directory changes underneath.
// An output that could not be sealed when the task ended (outputRefused)
// is never handed over: with dest, an ErrFailedPrecondition; without, no
// file listed and one res.OutputSkipped entry, ".", saying why.
//
// The output directory is walked through an os.Root, which cannot resolve a
// path outside it. Only regular files and directories are taken: symlinks,
// fifos, sockets and devices are never followed or opened, and are listed in
// res.OutputSkipped with what lay beyond the file, byte and depth caps.
// So are names an operator's tools cannot take safely (see badName); a
// directory with such a name is skipped with everything under it.
func (m *Manager) CollectOutput(ctx context.Context, id, dest string, res *task.Result) error {
	if err := m.checkOutputDest(dest); err != nil {
		return err
	}
	var d *outputDest
	if dest != "" {
		var err error
		if d, err = takeOutputDest(dest); err != nil {
			return err
		}
		defer d.release()
	}
	return m.collectOutput(ctx, id, d, res)
}

// checkOutputDest is CheckOutputDest, and refuses a destination in the
// state dir: an empty directory there is another task's /output (a
// sixteenth review copied one tenant's files into another's running
// task), or becomes a "task" directory that gc removes with the files.
func (m *Manager) checkOutputDest(dest string) error {
	if dest == "" {
		return nil
	}
	abs, err := filepath.Abs(dest)
	if err != nil {
		return fmt.Errorf("%w: output dir %s: %w", errdefs.ErrInvalidArgument, dest, err)
	}
	if rel, err := filepath.Rel(m.stateDir, resolveExisting(abs)); err == nil && (rel == "." || filepath.IsLocal(rel)) {
		return fmt.Errorf("%w: output dir %s is in the state dir %s: give a directory outside it", errdefs.ErrInvalidArgument, dest, m.stateDir)
	}
	return CheckOutputDest(dest)
}

// collectOutput is CollectOutput into dest as taken (nil: no copy, only
// the Result's lists); whatever appeared there since is never replaced.
func (m *Manager) collectOutput(ctx context.Context, id string, dest *outputDest, res *task.Result) error {
	// gc leaves the task alone while its output is read.
	release, err := m.hold(ctx, id)
	if err != nil {
		return err
	}
	defer release()
	rec, err := m.readRecord(id)
	if err != nil {
		return err
	}
	stdoutPath, stderrPath := m.logPaths(id)
	stdout, err := logs.Read(stdoutPath)
	if err != nil {
		return err
	}
	stderr, err := logs.Read(stderrPath)
	if err != nil {
		return err
	}
	res.Stdout, res.StdoutTruncated = stdout.Data, stdout.Truncated
	res.Stderr, res.StderrTruncated = stderr.Data, stderr.Truncated

	if refused := m.outputRefused(id, rec); refused != nil {
		if dest != nil {
			return refused
		}
		// Only the Result's lists: none of the output's files is listed
		// as the task's, and one entry says why (a twenty-eighth review
		// found the whole Result hidden by the refusal).
		res.OutputFiles, res.OutputSkipped = []task.OutputFile{}, []task.SkippedFile{{Path: ".", Reason: refused.Error()}}
		return nil
	}

	l := rec.Task.WithDefaults().Limits
	c := &collector{ctx: ctx, caps: outputCaps{files: l.OutputFiles, bytes: l.OutputBytes, depth: maxOutputDepth}, files: []task.OutputFile{}}
	if err := c.collect(m.outputOf(id, rec), dest); err != nil {
		return fmt.Errorf("collect output of task %s: %w", id, err)
	}
	res.OutputFiles, res.OutputSkipped = c.files, c.skipped
	return nil
}

// outputRefused says why task id's output is not handed over as the
// task's, nil if it is. An ended task's output is sealed when its Result
// is recorded. A seal that failed then (EBUSY: a file of it open for
// writing, which none of the task's own processes can hold any more)
// means a process outside the task could write into it after the end:
// nothing of it is handed over as the task's, ever (an outside review held
// a file open across the task's end, as a host process sharing the task's
// host uid, wrote into it, closed it, and the next collection sealed and
// handed over the forged file). A task whose end was never sealed (its
// supervisor killed before) is sealed here, and refused while that fails.
func (m *Manager) outputRefused(id string, rec record) error {
	if rec.OutputSealError != "" {
		return fmt.Errorf("%w: output of task %s is not collected: a process outside the task held it open for writing when the task ended (%s), and could have changed it since", errdefs.ErrFailedPrecondition, id, rec.OutputSealError)
	}
	if s, ok := m.output.(OutputSealer); ok && rec.Result != nil {
		if err := s.Seal(filepath.Join(m.taskDir(id), outputDir)); err != nil {
			return fmt.Errorf("%w: output of task %s is not collected while another process may write it: %w", errdefs.ErrFailedPrecondition, id, err)
		}
	}
	return nil
}

type collector struct {
	ctx     context.Context
	caps    outputCaps
	bytes   int64
	files   []task.OutputFile
	skipped []task.SkippedFile
	// made lists what the copy created in dest, in order: a collection
	// that fails midway removes it, so that no cut-off copy is taken for
	// the task's file.
	made []string
}

func (c *collector) skip(p, reason string) {
	c.skipped = append(c.skipped, task.SkippedFile{Path: p, Reason: reason})
}

func (c *collector) collect(srcDir string, dest *outputDest) error {
	src, err := os.OpenRoot(srcDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer src.Close()
	var dst *os.Root
	if dest != nil {
		if dst, err = dest.root(); err != nil {
			return err
		}
		defer dst.Close()
	}

	err = fs.WalkDir(src.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		return c.visit(src, dst, p, d, err)
	})
	if err != nil {
		if dst != nil {
			// An outside review filled the output dir's filesystem: a
			// third of a file and another were left with no Result to
			// say so.
			for i := len(c.made) - 1; i >= 0; i-- {
				_ = dst.Remove(c.made[i])
			}
			return fmt.Errorf("%w (the partial copy in %s was removed)", err, dest.path)
		}
		return err
	}
	slices.SortFunc(c.files, func(a, b task.OutputFile) int { return strings.Compare(a.Path, b.Path) })
	return nil
}

// visit is collect's step for one entry of the task's output dir.
func (c *collector) visit(src, dst *os.Root, p string, d fs.DirEntry, err error) error {
	if err != nil {
		return err
	}
	if err := c.ctx.Err(); err != nil {
		return err
	}
	if p == "." {
		return nil
	}
	// Before any other skip: every path reported or copied below has
	// only names that passed here (WalkDir never enters a skipped dir).
	if why := badName(d.Name()); why != "" {
		c.skip(reportedPath(p), why)
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	}
	if depth := strings.Count(p, "/") + 1; depth > c.caps.depth {
		c.skip(p, "deeper than "+strconv.Itoa(c.caps.depth))
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	}
	switch t := d.Type(); {
	case t.IsDir():
		if dst != nil {
			err := dst.Mkdir(p, 0o755)
			if err == nil {
				c.made = append(c.made, p)
			} else if !errors.Is(err, fs.ErrExist) {
				return err
			}
		}
		return nil
	case t&fs.ModeSymlink != 0:
		c.skip(p, "symlink")
		return nil
	case t&fs.ModeNamedPipe != 0:
		c.skip(p, "fifo")
		return nil
	case t&fs.ModeSocket != 0:
		c.skip(p, "socket")
		return nil
	case t&fs.ModeDevice != 0:
		c.skip(p, "device")
		return nil
	case !t.IsRegular():
		c.skip(p, "not a regular file")
		return nil
	}
	if int64(len(c.files)) >= c.caps.files {
		c.skip(p, "over the file cap of "+strconv.FormatInt(c.caps.files, 10))
		return nil
	}
	f, err := copyFile(src, dst, p, c.caps.bytes-c.bytes, func() { c.made = append(c.made, p) })
	if errors.Is(err, errOverCap) {
		c.skip(p, "over the byte cap of "+strconv.FormatInt(c.caps.bytes, 10))
		return nil
	}
	if errors.Is(err, fs.ErrExist) {
		c.skip(p, "a file of that name appeared in the output dir meanwhile: not replaced")
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	c.bytes += f.Size
	c.files = append(c.files, f)
	return nil
}

var errOverCap = errors.New("over the byte cap")

// badName says why a name in /output is not collected, or "" when it may
// be. The task chose the name and the operator will meet it in a terminal,
// a shell glob or a JSON consumer:
//   - control characters could drive a terminal that lists the copies
//     (ESC sequences, OSC 52 to the clipboard);
//   - bytes that are not UTF-8 cannot be a JSON string: the Result's path
//     would silently become U+FFFD and name a file that does not exist;
//   - a leading '-' turns `cp out/* ...` or `rm *` into options;
//   - a leading or trailing space shows as another name;
//   - a version-control directory (.git) is config a tool obeys;
//   - a character that does not show as itself makes the name look like
//     another: with U+202E "report\u202Efdp.sh" lists as "reporths.pdf";
//     blanks other than the space (U+3164, U+2800, NBSP) and line
//     separators hide or split it (isHidden).
func badName(name string) string {
	switch {
	case !utf8.ValidString(name):
		return "name is not valid UTF-8 (path shown Go-quoted)"
	case strings.ContainsFunc(name, isControl):
		return "name has a control character (path shown Go-quoted)"
	case strings.ContainsFunc(name, isHidden):
		return "name has an invisible, blank or bidirectional formatting character (path shown Go-quoted)"
	case strings.TrimSpace(name) != name:
		return "name starts or ends with a space (shows as another name)"
	case !norm.NFC.IsNormalString(name):
		// "cafe\u0301.sh" beside "caf\u00e9.sh": two files that show the
		// same (an outside review's), and one on macOS.
		return "name is not in Unicode normal form C (shows as another name; path shown Go-quoted)"
	case unicode.Is(unicode.M, []rune(name)[0]):
		return "name starts with a combining mark (shows as nothing, or on what precedes it; path shown Go-quoted)"
	case slices.ContainsFunc(repositoryNames, func(r string) bool { return strings.EqualFold(r, name) }):
		return "a version-control directory name: its config runs commands in tools that find it (git's core.fsmonitor in a shell prompt)"
	case strings.HasPrefix(name, "-"):
		return "name starts with '-'"
	}
	return ""
}

// repositoryNames are the directories version-control tools look for in
// the current directory and above, and whose config they obey: an outside
// review collected a .git whose core.fsmonitor ran a command at the
// operator's next `git status` (a git-aware shell prompt runs one on cd).
var repositoryNames = []string{".git", ".hg", ".svn", ".bzr", ".jj", "_darcs"}

// isControl: C0 controls, DEL, and the C1 controls U+0080-U+009F (which
// some terminals also act on, e.g. U+009B as CSI).
func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) }

// blankSymbols show as blank space although Unicode calls them symbols
// and not default-ignorable: the braille pattern blank. (The Hangul
// fillers are in Other_Default_Ignorable_Code_Point.)
var blankSymbols = []rune{0x2800}

// isHidden: a character that does not show as itself. Anything but a
// graphic character (format characters such as bidirectional overrides and
// zero-width spaces, line and paragraph separators, unassigned and private
// use code points), a space other than the ASCII one, the code points
// Unicode says to show as nothing (Hangul fillers, variation selectors),
// and blank symbols. An outside review named files with each kind.
func isHidden(r rune) bool {
	switch {
	case r == ' ':
		return false
	case !unicode.IsGraphic(r), unicode.Is(unicode.Zs, r):
		return true
	case unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r), unicode.Is(unicode.Variation_Selector, r):
		return true
	}
	return slices.Contains(blankSymbols, r)
}

// reportedPath is p as the Result lists a skipped entry. A path with bytes
// that are not UTF-8 or a control character is quoted the way
// strconv.QuoteToASCII quotes (the quotes included; \xff, \x1b, \u0085), so
// the Result carries printable ASCII that is valid in JSON, harmless on a
// terminal, and still names the file exactly. Other paths are kept as is.
func reportedPath(p string) string {
	if !utf8.ValidString(p) || strings.ContainsFunc(p, isControl) || strings.ContainsFunc(p, isHidden) || !norm.NFC.IsNormalString(p) || strings.ContainsFunc(p, func(r rune) bool { return unicode.Is(unicode.M, r) }) {
		return strconv.QuoteToASCII(p)
	}
	return p
}

// copyFile hashes (and, with dst, copies) one regular file of at most room
// bytes. It opens the file without following a final symlink (and without
// blocking, should it be a fifo after all), and checks that what it opened
// is a regular file.
func copyFile(src, dst *os.Root, p string, room int64, created func()) (task.OutputFile, error) {
	in, err := src.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return task.OutputFile{}, err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return task.OutputFile{}, err
	}
	if !info.Mode().IsRegular() {
		return task.OutputFile{}, fmt.Errorf("not a regular file")
	}
	if info.Size() > room {
		return task.OutputFile{}, errOverCap
	}
	h := sha256.New()
	w := io.Writer(h)
	var out *os.File
	if dst != nil {
		// O_EXCL: never replace a file someone else put there.
		if out, err = dst.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644); err != nil {
			return task.OutputFile{}, err
		}
		created()
		defer out.Close()
		w = io.MultiWriter(h, out)
	}
	// LimitReader: the size was checked, but copy no more than allowed.
	n, err := io.Copy(w, io.LimitReader(in, room))
	if err != nil {
		return task.OutputFile{}, err
	}
	if out != nil {
		if err := out.Close(); err != nil {
			return task.OutputFile{}, err
		}
	}
	return task.OutputFile{Path: p, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}
