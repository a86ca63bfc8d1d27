package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/go-json-experiment/json"
	"gopkg.in/yaml.v3"

	"github.com/zfs2s3/zfs2s3/statefile"
)

// ErrDamaged means the ledger file cannot be trusted; it is never overwritten.
var ErrDamaged = errors.New("ledger file is damaged")

// Store is the state directory of one bucket and prefix: the ledger file,
// its lock, and the upload state files next to it.
type Store struct{ Dir string }

// OpenStore returns the store for bucket and prefix under stateDir.
func OpenStore(stateDir, bucket, prefix string) Store {
	name := url.PathEscape(bucket)
	if prefix != "" {
		name += "~" + url.PathEscape(prefix)
	}
	return Store{Dir: filepath.Join(stateDir, name)}
}

// Path is the ledger file.
func (s Store) Path() string { return filepath.Join(s.Dir, "ledger.yaml") }

// UploadsDir holds one state file per pending upload.
func (s Store) UploadsDir() string { return filepath.Join(s.Dir, "uploads") }

// MaxFileBytes bounds what Load reads: a ledger of 100,000 edges is about
// 32 MB, so anything past 256 MiB is not a ledger zfs2s3 wrote (a link to
// /dev/zero, a misplaced disk image) and is refused before it fills memory.
const MaxFileBytes = 256 << 20

// CheckDirs refuses a state dir, or this store's dir in it, that another
// user owns or can write (see statefile.CheckDir).
func (s Store) CheckDirs() error {
	if err := statefile.CheckDir(filepath.Dir(s.Dir)); err != nil {
		return err
	}
	return statefile.CheckDir(s.Dir)
}

// Lock takes the ledger lock, waiting up to a minute for a concurrent
// zfs2s3 that is updating the ledger. The store's dir is created for the
// lock and removed with it if nothing was written into it.
func (s Store) Lock(ctx context.Context) (*statefile.Lock, error) {
	if err := s.CheckDirs(); err != nil {
		return nil, err
	}
	return statefile.WaitLock(ctx, filepath.Join(s.Dir, "ledger.lock"), time.Minute)
}

// Load reads the ledger; a missing file is an empty ledger.
func (s Store) Load(bucket, prefix string) (*Ledger, error) {
	if err := s.CheckDirs(); err != nil {
		return nil, err
	}
	b, err := statefile.ReadFile(s.Path(), MaxFileBytes)
	if errors.Is(err, os.ErrNotExist) {
		return New(bucket, prefix), nil
	}
	if err != nil {
		return nil, err
	}
	l, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Path(), err)
	}
	if l.Bucket != bucket || l.Prefix != prefix {
		return nil, fmt.Errorf("%s: %w: it is for bucket %q prefix %q, not %q %q", s.Path(), ErrDamaged, l.Bucket, l.Prefix, bucket, prefix)
	}
	return l, nil
}

// Parse decodes and validates a ledger file. Files are YAML; the ones
// zfs2s3 writes are in YAML's JSON-compatible flow style, which a JSON
// decoder reads about seven times faster than a YAML parser (100,000 edges:
// 0.25 s instead of 1.7 s). Anything the JSON decoder does not take, such as
// a hand-edited block-style file, is read by the YAML parser, which decides.
func Parse(b []byte) (*Ledger, error) {
	l, err := decodeJSON(b)
	if err != nil {
		if l, err = decodeYAML(b); err != nil {
			return nil, fmt.Errorf("%w (%v); fix or move it away, it will not be overwritten", ErrDamaged, err)
		}
	}
	if err := l.validate(); err != nil {
		return nil, err
	}
	return l, nil
}

func decodeJSON(b []byte) (*Ledger, error) {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, errors.New("not in JSON form")
	}
	var l Ledger
	if err := json.Unmarshal(b, &l, json.RejectUnknownMembers(true)); err != nil {
		return nil, err
	}
	return &l, nil
}

func decodeYAML(b []byte) (*Ledger, error) {
	var l Ledger
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&l); err != nil {
		return nil, err
	}
	var more yaml.Node
	if err := dec.Decode(&more); err != io.EOF {
		return nil, fmt.Errorf("more than one document (%v)", err)
	}
	return &l, nil
}

// validate checks what the decoders cannot: version, required fields and
// that no edge appears twice.
func (l *Ledger) validate() error {
	if l.Version < 1 || l.Version > FormatVersion {
		return fmt.Errorf("%w: format version %d, this zfs2s3 reads versions 1 to %d; use a zfs2s3 that matches", ErrDamaged, l.Version, FormatVersion)
	}
	l.Version = FormatVersion // in memory; Marshal picks what it is written as
	seen := make(map[ID]bool, len(l.Edges))
	for i, e := range l.Edges {
		switch {
		case e.Target.GUID == 0 || e.Target.Name == "" || e.Key == "":
			return fmt.Errorf("%w: edge %d lacks a target GUID, name or key", ErrDamaged, i+1)
		case e.Base != nil && (e.Base.GUID == 0 || e.Base.Name == ""):
			return fmt.Errorf("%w: edge %d (%s) has a base without GUID or name", ErrDamaged, i+1, e)
		case seen[e.ID()]:
			return fmt.Errorf("%w: edge %s appears twice", ErrDamaged, e)
		case !SegmentsValid(e):
			return fmt.Errorf("%w: edge %s lists further objects not named KEY.2, KEY.3, …, or without bytes", ErrDamaged, e)
		}
		seen[e.ID()] = true
	}
	if l.Edges == nil {
		l.Edges = []Edge{}
	}
	return nil
}

// SegmentsValid reports whether an edge's further objects, if any, are
// named by SegmentKey and each hold some of the stream.
func SegmentsValid(e Edge) bool {
	for i, o := range e.Objects() {
		if o.Key != SegmentKey(e.Key, i) || o.Bytes <= 0 && len(e.Segments) > 0 {
			return false
		}
	}
	return true
}

// Save writes the ledger atomically. Hold the lock.
func (s Store) Save(l *Ledger) error {
	b, err := Marshal(l)
	if err != nil {
		return err
	}
	return statefile.WriteFile(s.Path(), b)
}

// Exists reports whether the ledger file exists, without following a
// link there (which Load refuses).
func (s Store) Exists() bool {
	_, err := os.Lstat(s.Path())
	return err == nil
}

// format is the oldest format version that holds the ledger.
func (l *Ledger) format() int {
	v := 1
	for _, e := range l.Edges {
		v = max(v, e.Format())
	}
	return v
}

// Marshal encodes a ledger as its file does: YAML in the JSON-compatible
// flow style, one edge per line, so that Parse takes the fast path, any
// YAML or JSON tool reads it, and a diff shows whole edges.
func Marshal(l *Ledger) ([]byte, error) {
	bucket, err := json.Marshal(l.Bucket)
	if err != nil {
		return nil, fmt.Errorf("bucket name: %w", err)
	}
	prefix, err := json.Marshal(l.Prefix)
	if err != nil {
		return nil, fmt.Errorf("prefix: %w", err)
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "{\"version\": %d,\n \"bucket\": %s,\n \"prefix\": %s,\n \"generation\": %d,\n \"edges\": [",
		l.format(), bucket, prefix, l.Generation)
	for i := range l.Edges {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString("\n  ")
		if err := json.MarshalWrite(&buf, &l.Edges[i]); err != nil {
			return nil, fmt.Errorf("edge %s: %w", l.Edges[i], err)
		}
	}
	if len(l.Edges) > 0 {
		buf.WriteString("\n ")
	}
	buf.WriteString("]}\n")
	return buf.Bytes(), nil
}
