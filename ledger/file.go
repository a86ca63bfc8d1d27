package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

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

// Lock takes the ledger lock, waiting up to a minute for a concurrent
// zfs2s3 that is updating the ledger.
func (s Store) Lock(ctx context.Context) (*statefile.Lock, error) {
	return statefile.WaitLock(ctx, filepath.Join(s.Dir, "ledger.lock"), time.Minute)
}

// Load reads the ledger; a missing file is an empty ledger.
func (s Store) Load(bucket, prefix string) (*Ledger, error) {
	b, err := os.ReadFile(s.Path())
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

// Parse decodes and validates a ledger file.
func Parse(b []byte) (*Ledger, error) {
	var l Ledger
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("%w (%v); fix or move it away, it will not be overwritten", ErrDamaged, err)
	}
	if l.Version != FormatVersion {
		return nil, fmt.Errorf("%w: format version %d, this zfs2s3 reads version %d; use a zfs2s3 that matches", ErrDamaged, l.Version, FormatVersion)
	}
	seen := map[ID]bool{}
	for i, e := range l.Edges {
		switch {
		case e.Target.GUID == 0 || e.Target.Name == "" || e.Key == "":
			return nil, fmt.Errorf("%w: edge %d lacks a target GUID, name or key", ErrDamaged, i+1)
		case e.Base != nil && (e.Base.GUID == 0 || e.Base.Name == ""):
			return nil, fmt.Errorf("%w: edge %d (%s) has a base without GUID or name", ErrDamaged, i+1, e)
		case seen[e.ID()]:
			return nil, fmt.Errorf("%w: edge %s appears twice", ErrDamaged, e)
		}
		seen[e.ID()] = true
	}
	if l.Edges == nil {
		l.Edges = []Edge{}
	}
	return &l, nil
}

// Save writes the ledger atomically. Hold the lock.
func (s Store) Save(l *Ledger) error {
	b, err := Marshal(l)
	if err != nil {
		return err
	}
	return statefile.WriteFile(s.Path(), b)
}

// Exists reports whether the ledger file exists.
func (s Store) Exists() bool {
	_, err := os.Stat(s.Path())
	return err == nil
}

// Marshal encodes a ledger as its file does.
func Marshal(l *Ledger) ([]byte, error) { return yaml.Marshal(l) }
