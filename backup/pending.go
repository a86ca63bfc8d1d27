package backup

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/statefile"
)

// pendingVersion is the format of upload state files. Version 2 added the
// objects a long stream filled (s3up.Upload.Full); version 3 the segments
// of a transformed stream (s3up.Upload.Done), and only such uploads are
// saved as 3; version 4 the part digests of a plain upload
// (s3up.Upload.PartDigests), which every plain upload begun by this
// release has, and of a transformed upload, the segment it is completing
// (s3up.Upload.Finishing, saved only for that moment) or the checksum
// sha256 (this release's default), both of which the release before would
// misread. A plain upload begun by an earlier release stays version 2
// and finishes as it began. Older files are read too, so an upgrade does
// not strand an upload.
const pendingVersion = 4

// pending is an upload that was started and not yet recorded in the ledger:
// the edge it will become and the multipart upload's progress.
type pending struct {
	Version  int         `yaml:"version"`
	Edge     ledger.Edge `yaml:"edge"` // Key, StorageClass set; sizes and hash at the end
	Started  time.Time   `yaml:"started"`
	Estimate int64       `yaml:"estimate"` // expected stream bytes
	Upload   s3up.Upload `yaml:"upload"`

	path string
	lock *statefile.Lock
}

func (b *Backup) pendingPath(key string) string {
	h := sha256.Sum256([]byte(key))
	return filepath.Join(b.store.UploadsDir(), hex.EncodeToString(h[:8])+".yaml")
}

// save writes the state file atomically.
func (p *pending) save() error {
	switch {
	case p.Upload.Transformed && (p.Upload.Finishing != nil || p.Upload.Checksum == "sha256"):
		// The release before would redo the finishing segment over its
		// completed object, and takes a checksum it does not know for
		// none: it must refuse the file.
		p.Version = 4
	case p.Upload.Transformed:
		p.Version = 3
	case p.Upload.PartDigests:
		p.Version = 4
	default:
		p.Version = 2
	}
	out, err := yaml.Marshal(p)
	if err != nil {
		return err
	}
	return statefile.WriteFile(p.path, out)
}

// lockPending takes the per-upload lock, so one edge is uploaded by one
// process at a time while other edges proceed in parallel.
func lockPending(path string) (*statefile.Lock, error) { return statefile.TryLock(lockPath(path)) }

// lockPath is the lock file next to an upload state file.
func lockPath(statePath string) string { return strings.TrimSuffix(statePath, ".yaml") + ".lock" }

// release drops the state file and its lock (Unlock deletes the lock file)
// once the edge is recorded or the upload aborted.
func (p *pending) release() error {
	err := statefile.Remove(p.path)
	p.lock.Unlock()
	return err
}

// relock takes p's lock and re-reads its state, which another process may
// have advanced or finished since p was read. ok is false when the upload
// is gone (finished or aborted meanwhile).
func (b *Backup) relock(p *pending) (fresh *pending, ok bool, err error) {
	lock, err := lockPending(p.path)
	if err != nil {
		return nil, false, lockedHint(err, "the upload of "+p.Edge.String())
	}
	fresh, err = b.readPending(p.path)
	if errors.Is(err, os.ErrNotExist) {
		lock.Unlock()
		return nil, false, nil
	}
	if err != nil {
		lock.Unlock()
		return nil, false, err
	}
	fresh.lock = lock
	return fresh, true, nil
}

// maxPendingBytes bounds the read of an upload state file. The largest
// real one lists two objects' parts (10,000 of about 200 bytes each):
// anything past 8 MiB is not a file zfs2s3 wrote.
const maxPendingBytes = 8 << 20

func readPending(name string) (*pending, error) {
	data, err := statefile.ReadFile(name, maxPendingBytes)
	if err != nil {
		return nil, err
	}
	p := &pending{path: name}
	if err := yaml.Unmarshal(data, p); err != nil || p.Version < 1 || p.Version > pendingVersion || p.Edge.Key == "" {
		return nil, fmt.Errorf("upload state file %s is damaged or from another zfs2s3 version (%v); move it away after checking the bucket for its multipart upload", name, err)
	}
	return p, nil // save picks the version it is written as
}

// readPending reads an upload state file and checks that its keys are the
// ones zfs2s3 derives for its edge under the prefix, so that abort_upload
// can never be made to delete an object the upload did not write.
func (b *Backup) readPending(name string) (*pending, error) {
	p, err := readPending(name)
	if err != nil {
		return nil, err
	}
	err = p.Edge.CheckKeys(b.Opt.Prefix)
	if err == nil && p.Upload.Key != p.Edge.Key {
		err = fmt.Errorf("its upload key %q is not the edge's key", p.Upload.Key)
	}
	if err != nil {
		return nil, fmt.Errorf("upload state file %s was edited or tampered with (%v); move it away after checking the bucket for its multipart upload", name, err)
	}
	return p, nil
}

// loadPending reads all upload state files, oldest first. A damaged state
// file is an error: it may describe an upload that must not be forgotten.
func (b *Backup) loadPending() ([]*pending, error) {
	if err := b.store.CheckDirs(); err != nil {
		return nil, err
	}
	names, err := filepath.Glob(filepath.Join(b.store.UploadsDir(), "*.yaml"))
	if err != nil {
		return nil, err
	}
	var ps []*pending
	for _, name := range names {
		p, err := b.readPending(name)
		if errors.Is(err, os.ErrNotExist) {
			continue // finished meanwhile
		}
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Started.Before(ps[j].Started) })
	return ps, nil
}

// pendingEdges lists the edges of all pending uploads, for the remove rule.
func pendingEdges(ps []*pending) []ledger.Edge {
	var es []ledger.Edge
	for _, p := range ps {
		es = append(es, p.Edge)
	}
	return es
}

// selectPending keeps the uploads whose target is named target (all when empty).
func selectPending(ps []*pending, target string) []*pending {
	if target == "" {
		return ps
	}
	var sel []*pending
	for _, p := range ps {
		if p.Edge.Target.Name == target {
			sel = append(sel, p)
		}
	}
	return sel
}
