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
	// ErrExist is a snapshot (or dataset) that zfs was asked to create,
	// or to receive a full stream into, but that already exists.
	ErrExist = errors.New("already exists")
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
	case strings.Contains(s, "already exists"),
		strings.Contains(s, "destination '") && strings.Contains(s, "' exists"): // zfs receive of a full stream
		return ErrExist
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

// output runs zfs with args and returns its stdout, also when it failed
// (zfs get of several datasets prints those that exist).
func (r Runner) output(ctx context.Context, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, r.cmd(), args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.Bytes(), &Error{Args: args, Stderr: stderr.String(), Err: classify(stderr.String(), err)}
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

// MaxNameLen is the longest dataset or snapshot name ZFS accepts, in bytes
// (ZFS_MAX_DATASET_NAME_LEN less its terminating NUL).
const MaxNameLen = 255

// CheckSnapshotName rejects what cannot be a snapshot name, by OpenZFS's
// own rules (see checkName), before zfs sees it: a name zfs would refuse,
// read as an option, or half-act on never reaches it.
func CheckSnapshotName(name string) error {
	if err := checkName(name, true); err != nil {
		return fmt.Errorf("%s is not a snapshot name: %w", quoteName(name), err)
	}
	return nil
}

// CheckDatasetName rejects what cannot be a dataset (filesystem or volume)
// name, by the rules of CheckSnapshotName, with no '@' part.
func CheckDatasetName(name string) error {
	if err := checkName(name, false); err != nil {
		return fmt.Errorf("%s is not a dataset name: %w", quoteName(name), err)
	}
	return nil
}

// checkName applies the rules of OpenZFS's zfs_namecheck.c (entity_namecheck,
// pool_namecheck and zfs_validate_name), which zfs-fuse shares: at most
// MaxNameLen bytes; only ASCII letters, digits, space and "_-.:" besides the
// '/' between components and the one '@' of a snapshot; no empty, "." or
// ".." component; a pool name that begins with a letter. ZFS itself allows
// '%' only in the hidden datasets of a receive in progress, and '#' only in
// bookmarks; neither is something to back up or restore into.
func checkName(name string, snapshot bool) error {
	switch {
	case name == "":
		return errors.New("it is empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("it is %d bytes long, ZFS allows at most %d", len(name), MaxNameLen)
	case name[0] == '-':
		return errors.New("it begins with '-', which zfs would read as an option")
	case name[0] == '/':
		return errors.New("it begins with '/': a ZFS name starts with its pool, e.g. tank/data, not with a mount point")
	}
	for _, r := range name {
		if !validNameRune(r) {
			return fmt.Errorf("it contains %q; ZFS names hold only the letters A-Z and a-z, digits, space and _ - . : (besides / and @)", r)
		}
	}
	ds, snap, hasAt := strings.Cut(name, "@")
	switch {
	case snapshot && !hasAt:
		return errors.New("want DATASET@SNAPSHOT, e.g. tank/data@2026-01-01")
	case !snapshot && hasAt:
		return errors.New("'@' begins a snapshot name; want a dataset such as tank/data")
	case strings.Contains(snap, "@"):
		return errors.New("it has more than one '@'")
	case strings.Contains(snap, "/"):
		return errors.New("the part after '@' may not contain '/'")
	}
	for _, c := range strings.Split(ds, "/") {
		if err := checkComponent(c); err != nil {
			return err
		}
	}
	if hasAt {
		if err := checkComponent(snap); err != nil {
			return fmt.Errorf("snapshot part: %w", err)
		}
	}
	if p := ds[0]; !(p >= 'a' && p <= 'z' || p >= 'A' && p <= 'Z') {
		return errors.New("a pool name begins with a letter")
	}
	return nil
}

func checkComponent(c string) error {
	switch c {
	case "":
		return errors.New("it has an empty component ('//', a leading or trailing '/', or nothing beside '@')")
	case ".", "..":
		return fmt.Errorf("a component may not be %q", c)
	}
	return nil
}

// validNameRune is zfs_namecheck.c's valid_char, plus the delimiters.
func validNameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.: /@", r)
}

// quoteName quotes a name for an error message, shortened when it is too
// long to read on one line.
func quoteName(name string) string {
	const max = 64
	if len(name) <= max {
		return strconv.Quote(name)
	}
	return strconv.Quote(strings.ToValidUTF8(name[:max], "")) + "…"
}
