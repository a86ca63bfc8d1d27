package zfs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Stream is a running "zfs send". Read it to the end, then call Wait: only a
// nil Wait proves the stream was complete. A stream cut short by a killed or
// failed zfs send reads like a short stream, so callers must never treat
// io.EOF alone as success.
type Stream struct {
	io.Reader
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stderr bytes.Buffer
	args   []string
	once   sync.Once
	err    error
}

// Send starts "zfs send [-i base] target". base may be empty for a full stream.
func (r Runner) Send(ctx context.Context, target, base string) (*Stream, error) {
	return r.SendWith(ctx, SendFlags{}, target, base)
}

// SendWith is Send with the options of f ("zfs send -L -e -i base target").
func (r Runner) SendWith(ctx context.Context, f SendFlags, target, base string) (*Stream, error) {
	args := SendArgs(f, target, base)
	c := exec.CommandContext(ctx, r.cmd(), args...)
	s := &Stream{cmd: c, args: args}
	c.Stderr = &s.stderr
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	growPipe(pw)
	c.Stdout = pw
	if err := c.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, &Error{Args: args, Err: err}
	}
	pw.Close() // the child holds its copy
	s.stdout, s.Reader = pr, pr
	return s, nil
}

// growPipe asks Linux for a 1 MiB pipe buffer (the default is 64 KiB), so
// zfs send and the reader trade fewer, larger chunks. It is only a hint.
func growPipe(f *os.File) {
	const fSetPipeSz = 1031 // F_SETPIPE_SZ
	syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), fSetPipeSz, 1<<20)
}

func sendArgs(target, base string) []string {
	if base == "" {
		return []string{"send", target}
	}
	return []string{"send", "-i", base, target}
}

// Wait waits for zfs send to exit and reports whether it succeeded.
func (s *Stream) Wait() error {
	s.once.Do(func() {
		if err := s.cmd.Wait(); err != nil {
			s.err = &Error{Args: s.args, Stderr: s.stderr.String(), Err: classify(s.stderr.String(), err)}
			return
		}
		// zfs-fuse prints some refusals as warnings and exits 0 with an empty stream.
		if w := strings.TrimSpace(s.stderr.String()); strings.HasPrefix(w, "warning: cannot send") {
			s.err = &Error{Args: s.args, Stderr: w, Err: fmt.Errorf("zfs send refused")}
		}
	})
	return s.err
}

// Close stops zfs send if it is still running, reaps it and closes the
// pipe. It is safe after Wait and safe to call twice.
func (s *Stream) Close() error {
	if s.cmd.ProcessState == nil {
		s.cmd.Process.Kill()
	}
	s.Wait()
	s.stdout.Close()
	return nil
}

// Estimate returns the expected stream size from "zfs send -nvP" (OpenZFS);
// ok is false where zfs cannot estimate (zfs-fuse has no -n), and callers
// fall back to the snapshot's referenced bytes.
func (r Runner) Estimate(ctx context.Context, target, base string) (size int64, ok bool) {
	args := append([]string{"send", "-n", "-v", "-P"}, sendArgs(target, base)[1:]...)
	// Older OpenZFS prints the estimate on stderr, newer on stdout.
	out, err := exec.CommandContext(ctx, r.cmd(), args...).CombinedOutput()
	if err != nil {
		return 0, false
	}
	return parseEstimate(out)
}

// parseEstimate finds the "size\tN" line that "zfs send -nvP" prints.
func parseEstimate(out []byte) (int64, bool) {
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(strings.TrimSpace(line), "\t")
		if len(f) == 2 && f[0] == "size" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
