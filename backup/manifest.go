package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
)

// manifest is the small object that completes an edge in the bucket,
// next to its first object (s3up.ManifestKey). It carries what is only
// known at the end of an upload (sizes, SHA-256), so that the ledger can
// be rebuilt from the bucket alone. Its format is documented in README.md.
type manifest struct {
	Format int         `yaml:"format"`
	Edge   ledger.Edge `yaml:"edge"`
}

// maxManifestBytes bounds what is read of a manifest: one of an edge with
// ledger.MaxSegments further objects takes about 1.5 MB.
const maxManifestBytes = 4 << 20

// writeManifest stores e's manifest, locked as --lock-days says.
func (b *Backup) writeManifest(ctx context.Context, e ledger.Edge) error {
	return b.writeManifestLocked(ctx, e, b.Opt.Lock)
}

// writeManifestLocked stores e's manifest with lock's retention (none when
// nil): an upload's manifest is locked as its objects are.
func (b *Backup) writeManifestLocked(ctx context.Context, e ledger.Edge, lock *s3up.Lock) error {
	data, err := yaml.Marshal(manifest{Format: e.Format(), Edge: e})
	if err != nil {
		return err
	}
	return b.putCreateOnly(ctx, s3up.ManifestKey(e.Key), data, s3up.WithLock(lock)...)
}

// putCreateOnly stores a small object that is only ever created, never changed
// (a manifest): with If-None-Match: *, which a backup host's policy on AWS
// demands (zfs2s3 policy host). An object already there with the same
// bytes is the one an earlier attempt wrote. One with other bytes, or a
// store without conditional writes, gets a plain write, as before:
// credentials that may overwrite do, a host's get AccessDenied.
func (b *Backup) putCreateOnly(ctx context.Context, key string, data []byte, opts ...s3up.PutOption) error {
	if !b.S3.Caps().NoConditionalWrites {
		_, err := b.S3.PutIf(ctx, key, data, nil, "", opts...)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, s3up.ErrChanged):
			if cur, _, rerr := b.S3.ReadAll(ctx, key, int64(len(data))); rerr == nil && bytes.Equal(cur, data) {
				return nil
			}
		case !errors.Is(err, s3up.ErrNoConditionalWrites):
			return err
		}
	}
	_, err := b.S3.PutIf(ctx, key, data, nil, s3up.AnyVersion, opts...)
	return err
}

// readManifest reads the edge a manifest object records. A manifest is
// input like anything else in the bucket: it must be the manifest of its
// own object, and its edge must pass ledger.Edge.Check under the prefix.
func (b *Backup) readManifest(ctx context.Context, key string) (ledger.Edge, error) {
	data, _, err := b.S3.ReadAll(ctx, key, maxManifestBytes)
	if errors.Is(err, s3up.ErrTooLarge) {
		return ledger.Edge{}, badManifestError{err}
	}
	if err != nil {
		return ledger.Edge{}, err
	}
	e, err := parseManifest(data, key, b.Opt.Prefix)
	if err != nil {
		return ledger.Edge{}, badManifestError{err}
	}
	return e, nil
}

// badManifestError is a manifest whose contents cannot be taken, as
// opposed to one that could not be read (an S3 error, to retry).
type badManifestError struct{ error }

func (e badManifestError) Unwrap() error { return e.error }

// parseManifest decodes the manifest stored at key and checks it.
func parseManifest(data []byte, key, prefix string) (ledger.Edge, error) {
	var m manifest
	if err := yaml.Unmarshal(data, &m); err != nil {
		return ledger.Edge{}, fmt.Errorf("damaged: %v", err)
	}
	if m.Format < 1 || m.Format > ledger.FormatVersion {
		return ledger.Edge{}, fmt.Errorf("format %d, this zfs2s3 reads 1 to %d", m.Format, ledger.FormatVersion)
	}
	if err := m.Edge.Check(prefix); err != nil {
		return ledger.Edge{}, fmt.Errorf("tampered or damaged: %v", err)
	}
	if object, _ := s3up.ManifestOf(key); m.Edge.Key != object {
		return ledger.Edge{}, fmt.Errorf("tampered or damaged: it records the edge of %s, not of %s", m.Edge.Key, object)
	}
	m.Edge.Removing = false
	return m.Edge, nil
}
