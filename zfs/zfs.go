// Package zfs runs the zfs command and turns its output into typed values.
//
// It never runs a shell: every invocation is an argument vector, so dataset
// names with spaces or shell metacharacters are passed through untouched. It
// sticks to the options that both OpenZFS 2.x and zfs-fuse (pool version 23)
// understand and detects the rest (see Estimate).
package zfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Errors that callers branch on. Use errors.Is.
var (
	ErrNotExist   = errors.New("does not exist")
	ErrPermission = errors.New("permission denied")
)

// Error is a failed zfs invocation with what it printed on stderr.
type Error struct {
	Args   []string
	Stderr string
	Err    error // ErrNotExist, ErrPermission or the exec error
}

func (e *Error) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = e.Err.Error()
	}
	msg = strings.ReplaceAll(msg, "\n", "; ")
	return fmt.Sprintf("zfs %s: %s", strings.Join(e.Args, " "), msg)
}

func (e *Error) Unwrap() error { return e.Err }

// classify maps zfs's stderr to a typed error.
func classify(stderr string, err error) error {
	s := strings.ToLower(stderr)
	switch {
	case strings.Contains(s, "does not exist"), strings.Contains(s, "no such"):
		return ErrNotExist
	case strings.Contains(s, "permission denied"), strings.Contains(s, "insufficient privileges"):
		return ErrPermission
	}
	return err
}

// Runner runs one zfs binary.
type Runner struct {
	// Cmd is the zfs command; empty means "zfs" on PATH.
	Cmd string
}

func (r Runner) cmd() string {
	if r.Cmd == "" {
		return "zfs"
	}
	return r.Cmd
}

// output runs zfs with args and returns its stdout.
func (r Runner) output(ctx context.Context, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, r.cmd(), args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return nil, &Error{Args: args, Stderr: stderr.String(), Err: classify(stderr.String(), err)}
	}
	return stdout.Bytes(), nil
}

// Snapshot is a snapshot as zfs reports it.
type Snapshot struct {
	Name      string // dataset@snap
	GUID      uint64
	CreateTXG uint64
	Creation  time.Time
}

// Dataset is the part of the name before the '@'.
func (s Snapshot) Dataset() string { d, _, _ := strings.Cut(s.Name, "@"); return d }

// Snapshot returns the live properties of one snapshot. It reads them with
// "zfs get -H -p", which both OpenZFS and zfs-fuse print exactly; zfs-fuse's
// "zfs list -o guid" rounds GUIDs.
func (r Runner) Snapshot(ctx context.Context, name string) (Snapshot, error) {
	if err := CheckSnapshotName(name); err != nil {
		return Snapshot{}, err
	}
	props, err := r.get(ctx, name, "type", "guid", "createtxg", "creation")
	if err != nil {
		return Snapshot{}, err
	}
	if props["type"] != "snapshot" {
		return Snapshot{}, fmt.Errorf("%s is a %s, not a snapshot", name, props["type"])
	}
	s := Snapshot{Name: name}
	if s.GUID, err = strconv.ParseUint(props["guid"], 10, 64); err != nil {
		return Snapshot{}, fmt.Errorf("zfs get guid %s: %w", name, err)
	}
	if s.CreateTXG, err = strconv.ParseUint(props["createtxg"], 10, 64); err != nil {
		return Snapshot{}, fmt.Errorf("zfs get createtxg %s: %w", name, err)
	}
	secs, err := strconv.ParseInt(props["creation"], 10, 64)
	if err != nil {
		return Snapshot{}, fmt.Errorf("zfs get creation %s: %w", name, err)
	}
	s.Creation = time.Unix(secs, 0).UTC()
	return s, nil
}

// LogicalSize returns the uncompressed bytes a snapshot refers to, which
// bounds a plain (not -c) send stream: "logicalreferenced" on OpenZFS,
// "referenced" times "compressratio" where that property is missing
// (zfs-fuse).
func (r Runner) LogicalSize(ctx context.Context, name string) (int64, error) {
	if props, err := r.get(ctx, name, "logicalreferenced"); err == nil {
		if n, err := strconv.ParseInt(props["logicalreferenced"], 10, 64); err == nil {
			return n, nil
		}
	} // zfs-fuse refuses the whole get for an unknown property
	props, err := r.get(ctx, name, "referenced", "compressratio")
	if err != nil {
		return 0, err
	}
	ref, err := strconv.ParseInt(props["referenced"], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("zfs get referenced %s: %w", name, err)
	}
	ratio, err := strconv.ParseFloat(strings.TrimSuffix(props["compressratio"], "x"), 64)
	if err != nil || ratio < 1 {
		ratio = 1
	}
	return int64(float64(ref) * ratio), nil
}

// get reads properties of one dataset as exact (-p) values.
func (r Runner) get(ctx context.Context, name string, props ...string) (map[string]string, error) {
	out, err := r.output(ctx, "get", "-H", "-p", "-o", "name,property,value", strings.Join(props, ","), name)
	if err != nil {
		return nil, err
	}
	return parseGet(out)
}

// parseGet parses "zfs get -H -o name,property,value" output. Names may hold
// spaces, never tabs, so splitting on tabs is exact.
func parseGet(out []byte) (map[string]string, error) {
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			return nil, fmt.Errorf("zfs get: unexpected line %q", line)
		}
		m[f[1]] = f[2]
	}
	return m, nil
}

// CheckSnapshotName rejects what cannot be a snapshot name before zfs sees it.
func CheckSnapshotName(name string) error {
	ds, snap, ok := strings.Cut(name, "@")
	switch {
	case !ok || ds == "" || snap == "":
		return fmt.Errorf("%q is not a snapshot name: want DATASET@SNAPSHOT, e.g. tank/data@2026-01-01", name)
	case strings.Contains(snap, "@") || strings.Contains(snap, "/"):
		return fmt.Errorf("%q is not a snapshot name: the part after '@' may not contain '@' or '/'", name)
	case strings.HasPrefix(ds, "/") || strings.HasSuffix(ds, "/") || strings.Contains(ds, "//"):
		return fmt.Errorf("%q is not a snapshot name: the dataset part is malformed", name)
	case strings.ContainsAny(name, "\t\n\x00"):
		return fmt.Errorf("%q is not a snapshot name: it contains a control character", name)
	}
	return nil
}
