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
	"strings"
	"syscall"

	"github.com/nsn-run/nsn-run/logs"
	"github.com/nsn-run/nsn-run/task"
)

// noFollow makes an open fail on a symlink instead of following it.
const noFollow = syscall.O_NOFOLLOW

// CollectOutput fills res with the task's stdout and stderr and the regular
// files it wrote to /output, each with size and sha256; with dest set it
// also copies them there. Run it after Wait: the task has stopped, so
// nothing in the output directory changes underneath.
//
// The output directory is walked through an os.Root: no path can resolve
// outside it. Only regular files and directories are taken; symlinks,
// fifos, sockets and devices are never followed or copied.
func (m *Manager) CollectOutput(ctx context.Context, id, dest string, res *task.Result) error {
	if err := task.ValidateID(id); err != nil {
		return err
	}
	stdoutPath, stderrPath := m.LogPaths(id)
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

	files, err := collectFiles(ctx, filepath.Join(m.TaskDir(id), outputDir), dest)
	if err != nil {
		return fmt.Errorf("collect output of task %s: %w", id, err)
	}
	res.OutputFiles = files
	return nil
}

func collectFiles(ctx context.Context, srcDir, dest string) ([]task.OutputFile, error) {
	src, err := os.OpenRoot(srcDir)
	if errors.Is(err, fs.ErrNotExist) {
		return []task.OutputFile{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer src.Close()
	var dst *os.Root
	if dest != "" {
		if err := os.MkdirAll(dest, 0o755); err != nil {
			return nil, err
		}
		if dst, err = os.OpenRoot(dest); err != nil {
			return nil, err
		}
		defer dst.Close()
	}

	files := []task.OutputFile{}
	err = fs.WalkDir(src.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case p == ".":
			return nil
		case d.IsDir():
			if dst != nil {
				if err := dst.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
					return err
				}
			}
			return nil
		case !d.Type().IsRegular():
			return nil // links, fifos, sockets, devices: never followed
		}
		f, err := copyFile(src, dst, p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(files, func(a, b task.OutputFile) int { return strings.Compare(a.Path, b.Path) })
	return files, nil
}

// copyFile hashes (and, with dst, copies) one regular file. It opens the
// file without following a final symlink, and checks that what it opened
// is still a regular file.
func copyFile(src, dst *os.Root, p string) (task.OutputFile, error) {
	in, err := src.OpenFile(p, os.O_RDONLY|noFollow, 0)
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
	h := sha256.New()
	w := io.Writer(h)
	var out *os.File
	if dst != nil {
		if out, err = dst.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|noFollow, 0o644); err != nil {
			return task.OutputFile{}, err
		}
		defer out.Close()
		w = io.MultiWriter(h, out)
	}
	n, err := io.Copy(w, in)
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
