package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
)

// stopContext is the context every command runs under: it ends on SIGINT,
// SIGTERM, SIGHUP (a closed terminal) and SIGQUIT (Ctrl-\), each of which
// stops a foreground run's task and removes it, as an interrupt always
// did; dying of SIGHUP or SIGQUIT at once left the task running with
// nobody enforcing its limits. A signal nsn-run was started with ignored stays ignored:
// `nohup nsn-run run ...` is how an operator says the run must outlive
// the terminal, and a handler would undo it (Go's Notify does, for an
// ignored signal).
//
// SIGPIPE is caught, so a write to a pipe whose reader has gone fails
// with EPIPE rather than kill nsn-run (Go's default for stdout and
// stderr): the command sees the error and ends in order (exitCode's 141).
// A channel, not signal.Ignore: an ignored SIGPIPE would be inherited by
// the processes nsn-run starts.
func stopContext() (context.Context, context.CancelFunc) {
	var stopOn []os.Signal
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT} {
		if !signal.Ignored(sig) {
			stopOn = append(stopOn, sig)
		}
	}
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	if len(stopOn) == 0 {
		return context.WithCancel(context.Background())
	}
	return signal.NotifyContext(context.Background(), stopOn...)
}

// readerGoneError is a write to nsn-run's stdout or stderr that failed
// because the reader of the pipe has gone (`| head -1`): told apart from
// an EPIPE of a daemon's socket, which is nsn-run's own failure.
type readerGoneError struct{ err error }

func (e *readerGoneError) Error() string { return e.err.Error() }
func (e *readerGoneError) Unwrap() error { return e.err }

// isReaderGone reports whether err is, or wraps, a readerGoneError.
func isReaderGone(err error) bool {
	var gone *readerGoneError
	return errors.As(err, &gone)
}

// stdStream is os.Stdout or os.Stderr as the commands write to them: an
// EPIPE comes back as a readerGoneError. It has the file's Fd, so a
// terminal is still recognised as one (isTerminal), and only Write: an
// embedded *os.File would bring its ReadFrom, which io.Copy calls instead
// of Write (a `logs -f` whose reader went exited 125 so).
type stdStream struct{ f *os.File }

func (s stdStream) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	if errors.Is(err, syscall.EPIPE) {
		err = &readerGoneError{err}
	}
	return n, err
}

// Fd is the file's descriptor.
func (s stdStream) Fd() uintptr { return s.f.Fd() }

// holdDeadlines keeps job control from suspending a command that enforces
// a task's deadline and limits (a foreground run, a wait): Ctrl-Z
// (SIGTSTP) stopped nsn-run, the only process enforcing the task's
// --timeout, and the task ran on past it until nsn-run was resumed. A
// background nsn-run that writes to the terminal under `stty tostop`
// (SIGTTOU) or reads it (SIGTTIN) would stop the same way. Ignored, they
// do nothing: detach with -d to get the shell back. (SIGSTOP cannot be
// ignored: see docs/security-model.md.)
func holdDeadlines() {
	signal.Ignore(syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
}
