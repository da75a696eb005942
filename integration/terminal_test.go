package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPty returns a pseudo-terminal's two ends, the terminal in raw mode
// (no \n to \r\n, no echo), so what reaches the master is what was
// written to the terminal.
func openPty(t *testing.T) (master, terminal *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	terminal, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { terminal.Close() })
	tio, err := unix.IoctlGetTermios(int(terminal.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	// cfmakeraw
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8
	if err := unix.IoctlSetTermios(int(terminal.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	return master, terminal
}

// onTerminal runs nsn-run with its stdout and stderr on a terminal of its
// own and returns what the terminal received.
func onTerminal(t *testing.T, args ...string) (shown []byte, code int) {
	t.Helper()
	master, terminal := openPty(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nsnRun(t), args...)
	cmd.Stdout, cmd.Stderr = terminal, terminal
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	terminal.Close() // ours: the master reads EIO once nsn-run's copies close
	read := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(master) // ends with EIO
		read <- b
	}()
	err := cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("nsn-run %s: %v", strings.Join(args, " "), err)
	}
	return <-read, cmd.ProcessState.ExitCode()
}

// TestCLITerminalEscapes: what a task prints cannot drive the operator's
// terminal (docs/security-model.md, "does not let logs drive the
// operator's terminal"). The task prints an OSC 52 clipboard write, a
// title change, a screen clear and a C1 CSI. The attack first: with --raw
// (what a plain copy to the terminal does) the terminal receives the
// sequences whole. Then `logs` and a foreground `run` on a terminal: no
// ESC, BEL or C1 byte reaches it, and the text is there, escaped.
func TestCLITerminalEscapes(t *testing.T) {
	g := cliEnv(t)
	const payload = `\033]52;c;cHduZWQ=\a\033]0;pwned\a\033[2J\302\233Kvisible\n`
	sequences := [][]byte{[]byte("\x1b]52;c;cHduZWQ=\a"), []byte("\x1b]0;pwned\a"), []byte("\x1b[2J"), []byte("\u009bK")}
	id := uniqueID("term")
	if r := cli(t, g, "run", "-d", "--id", id, "busybox", "--", "printf", payload); r.code != 0 {
		t.Fatalf("run -d: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := cli(t, g, "wait", id); r.code != 0 {
		t.Fatalf("wait: exit %d, stderr %q", r.code, r.stderr)
	}
	t.Cleanup(func() { cli(t, g, "rm", "-f", id) })

	raw, code := onTerminal(t, slices.Concat([]string{"logs"}, g, []string{"--raw", id})...)
	if code != 0 {
		t.Fatalf("logs --raw: exit %d: %q", code, raw)
	}
	for _, seq := range sequences {
		if !bytes.Contains(raw, seq) {
			t.Errorf("the attack: logs --raw on a terminal lacks %q: %q", seq, raw)
		}
	}

	check := func(what string, shown []byte, code int) {
		t.Helper()
		if code != 0 {
			t.Fatalf("%s: exit %d: %q", what, code, shown)
		}
		if i := bytes.IndexFunc(shown, func(r rune) bool { return r == 0x1b || r == 0x07 || r >= 0x80 && r <= 0x9f }); i >= 0 {
			t.Errorf("%s on a terminal passed a control character at byte %d: %q", what, i, shown)
		}
		for _, want := range []string{`\x1b]52;c;cHduZWQ=\x07`, `\x1b]0;pwned\x07`, `\x1b[2J`, `\u009bKvisible`} {
			if !bytes.Contains(shown, []byte(want)) {
				t.Errorf("%s on a terminal: %q lacks the escaped %q", what, shown, want)
			}
		}
	}
	shown, code := onTerminal(t, slices.Concat([]string{"logs"}, g, []string{id})...)
	check("logs", shown, code)
	shown, code = onTerminal(t, slices.Concat([]string{"run"}, g, []string{"busybox", "--", "printf", payload})...)
	check("run", shown, code)
}
