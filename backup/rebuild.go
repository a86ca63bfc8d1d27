package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// Rebuild reconstructs the ledger from the bucket, for when the bucket's
// copy or the local one is lost or damaged. Everything in the bucket is
// input: an edge is taken only when its manifest passes the ledger's checks
// (keys derived under this prefix, plausible sizes and digest) and its
// objects are there with the recorded sizes. What the local ledger knows
// and the bucket still holds is kept, and its lost manifests written again;
// a stream object without a manifest is recovered from its metadata when
// its bytes prove it (a whole zfs stream of the snapshots the metadata
// names), else reported. The result is checked like any loaded ledger
// before it is written, and it counts as newer than both copies.
func (b *Backup) Rebuild(ctx context.Context) error {
	lock, err := b.store.Lock(ctx)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	objs, _, err := b.listObjects(ctx)
	if err != nil {
		return err
	}
	r := rebuild{b: b, sizes: map[string]int64{}, byID: map[ledger.ID]ledger.Edge{}, taken: map[string]bool{}}
	for _, o := range objs {
		r.sizes[o.Key] = o.Size
	}
	j, err := b.listJournal(ctx)
	if err != nil {
		return err
	}
	gen, err := r.readLedgers(ctx, j)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if _, ok := s3up.ManifestOf(o.Key); !ok {
			continue
		}
		e, err := b.readManifest(ctx, o.Key)
		if errors.As(err, new(badManifestError)) {
			b.Out("skipped manifest %s: %v", o.Key, err)
			continue
		}
		if err != nil { // not to be skipped: the rebuilt ledger would lack the edge
			return fmt.Errorf("read manifest %s: %w; nothing was written, run ledger rebuild again", o.Key, err)
		}
		r.add(ctx, e, "manifest")
	}
	for _, e := range r.known {
		if _, ok := r.byID[e.ID()]; !ok && r.add(ctx, e, "local ledger") {
			if err := b.writeManifest(ctx, e); err != nil {
				return fmt.Errorf("write the lost manifest of %s: %w", e, err)
			}
			b.Out("kept %s from the local ledger and wrote its lost manifest", e)
		}
	}
	if err := r.recoverUnrecorded(ctx, objs); err != nil {
		return err
	}
	l := ledger.New(b.S3.Bucket(), b.Opt.Prefix)
	l.Generation = gen
	for _, e := range r.byID {
		l.Edges = append(l.Edges, e)
	}
	sort.Slice(l.Edges, func(i, j int) bool {
		if !l.Edges[i].Uploaded.Equal(l.Edges[j].Uploaded) {
			return l.Edges[i].Uploaded.Before(l.Edges[j].Uploaded)
		}
		return l.Edges[i].Key < l.Edges[j].Key
	})
	// Checked as any loaded ledger is, so a rebuild never writes a ledger
	// that later commands reject.
	data, err := ledger.Marshal(l)
	if err == nil {
		_, err = ledger.Parse(data)
	}
	if err != nil {
		return fmt.Errorf("the rebuilt ledger does not pass its own checks, nothing written: %w", err)
	}
	for _, e := range l.Unrestorable() {
		b.Out("warning: %s has no restorable chain in the bucket", e)
	}
	// Rebuilding is the explicit override: a full entry for every dataset
	// the bucket or the rebuilt ledger has, and the stub.
	j.state = b.readJournalState()
	j.needStub = true
	b.j, b.rebuilding = j, true
	defer func() { b.rebuilding = false }()
	if err := b.saveLedger(ctx, l); err != nil {
		return err
	}
	b.Out("rebuilt the ledger from the bucket: %d edges, generation %d", len(l.Edges), l.Generation)
	return nil
}

// rebuild is the state of one Rebuild.
type rebuild struct {
	b     *Backup
	sizes map[string]int64 // the tree's objects
	known []ledger.Edge    // the local ledger's edges, when it could be read
	byID  map[ledger.ID]ledger.Edge
	taken map[string]bool // keys of the edges taken
}

// readLedgers reads both ledgers for what survives a rebuild: the local
// edges and the highest generation. A bucket copy or journal entry in a
// newer format stops the rebuild, which would overwrite it; damaged ones
// are what a rebuild replaces.
func (r *rebuild) readLedgers(ctx context.Context, j *journal) (uint64, error) {
	b := r.b
	var gen uint64
	local, err := b.store.Load(b.S3.Bucket(), b.Opt.Prefix)
	switch {
	case errors.Is(err, ledger.ErrNewerFormat):
		return 0, err
	case err != nil:
		b.Out("warning: the local ledger cannot be used (%v); rebuilding from the bucket alone", err)
	default:
		r.known, gen = local.Edges, local.Generation
	}
	remote, _, _, err := b.bucketLedger(ctx)
	switch {
	case errors.Is(err, ledger.ErrStub):
	case errors.Is(err, ledger.ErrNewerFormat):
		return 0, fmt.Errorf("%w; a rebuild by this zfs2s3 would overwrite it", err)
	case err == nil && remote != nil:
		gen = max(gen, remote.Generation)
	case err != nil && !errors.Is(err, ledger.ErrDamaged):
		return 0, err
	}
	for ds := range j.entries {
		_, _, err := b.readDataset(ctx, j, ds, nil, nil)
		switch {
		case errors.Is(err, ledger.ErrNewerFormat):
			return 0, fmt.Errorf("%w; a rebuild by this zfs2s3 would overwrite it", err)
		case err != nil && !errors.Is(err, ledger.ErrDamaged):
			return 0, err
		}
	}
	return gen, nil
}

// add takes e unless its objects are missing or of other sizes, or another
// edge between the same snapshots was taken; it reports whether e was taken.
func (r *rebuild) add(ctx context.Context, e ledger.Edge, from string) bool {
	if problem := objectsProblem(e, r.sizes); problem != "" {
		r.b.Out("skipped %s (%s): %s", e, from, problem)
		return false
	}
	if other, dup := r.byID[e.ID()]; dup {
		// Two edges between the same snapshots under different names: a
		// forgery. Keep the one the local ledger has, else the one its
		// object's metadata vouches for, else the first.
		if r.rank(ctx, e) <= r.rank(ctx, other) {
			r.b.Out("skipped %s (%s, %s): it duplicates %s stored as %s", e, from, e.Key, other, other.Key)
			return false
		}
		r.b.Out("skipped %s (%s): it duplicates %s stored as %s", other, other.Key, e, e.Key)
		for _, k := range other.Keys() {
			delete(r.taken, k)
		}
	}
	r.byID[e.ID()] = e
	for _, k := range e.Keys() {
		r.taken[k] = true
	}
	return true
}

// rank orders edges between the same snapshots by how far they are to be
// trusted: 2 when the local ledger has it, 1 when its object's metadata
// names the same snapshots, else 0.
func (r *rebuild) rank(ctx context.Context, e ledger.Edge) int {
	for _, k := range r.known {
		if k.ID() == e.ID() && k.Key == e.Key {
			return 2
		}
	}
	head, err := r.b.S3.Head(ctx, e.Key)
	if err != nil {
		return 0
	}
	m, err := edgeFromMetadata(head.Metadata)
	if err != nil || m.Target != e.Target || (m.Base == nil) != (e.Base == nil) || m.Base != nil && *m.Base != *e.Base {
		return 0
	}
	return 1
}

// recoverUnrecorded handles the stream objects no edge took: objects of
// an unfinished upload on this machine are named, others are recovered
// from their metadata when their bytes prove it, or reported.
func (r *rebuild) recoverUnrecorded(ctx context.Context, objs []s3up.ObjectInfo) error {
	b := r.b
	ps, err := b.loadPending()
	if err != nil {
		return err
	}
	of, reported := map[string]*pending{}, map[string]bool{}
	for _, p := range ps {
		for _, k := range p.Upload.Keys() {
			of[k] = p
		}
	}
	for _, o := range objs {
		if !s3up.IsStreamKey(o.Key) || r.taken[o.Key] {
			continue
		}
		if p := of[o.Key]; p != nil {
			b.Out("skipped object %s: it belongs to the unfinished upload of %s; run zfs2s3 resume_upload or abort_upload %s", o.Key, p.Edge, p.Edge.Target.Name)
			continue
		}
		if !strings.HasSuffix(o.Key, ".zfs") {
			continue // a further object: recovered with its first, or reported below
		}
		e, err := r.recover(ctx, o.Key)
		if err != nil && !errors.As(err, new(notProven)) { // an S3 error: retry rather than leave the edge out
			return fmt.Errorf("read object %s to recover its edge: %w; nothing was written, run ledger rebuild again", o.Key, err)
		}
		if err != nil {
			b.Out("skipped object %s: no valid manifest describes it, and %v; check it, then delete it or abort its upload", o.Key, err)
			reported[o.Key] = true
			continue
		}
		if r.add(ctx, e, "object metadata") {
			if err := b.writeManifest(ctx, e); err != nil {
				return fmt.Errorf("write the manifest of %s: %w", e, err)
			}
			b.Out("recovered %s from its object's metadata and contents, and wrote its manifest", e)
		}
	}
	for _, o := range objs {
		if s3up.IsStreamKey(o.Key) && !r.taken[o.Key] && of[o.Key] == nil && !reported[o.Key] {
			b.Out("skipped object %s: no edge could be made of it (an upload that was never recorded); check it, then delete it or abort that upload", o.Key)
		}
	}
	return nil
}

// recover makes the edge of the stream stored under key, and any further
// objects KEY.2, KEY.3, … after it, from the first object's metadata,
// and proves it by reading them: a whole zfs stream of the snapshots the
// metadata names, whose SHA-256 becomes the edge's.
func (r *rebuild) recover(ctx context.Context, key string) (ledger.Edge, error) {
	b := r.b
	head, err := b.S3.Head(ctx, key)
	if err != nil {
		return ledger.Edge{}, err
	}
	if t := head.Metadata[s3up.MetaTransform]; t != "" {
		// A transformed stream's per-object digests are in its manifest
		// only; read back, its plaintext needs the identity and its stored
		// digests would only prove what is there now.
		return ledger.Edge{}, notProven{fmt.Errorf("it is a transformed stream (%s) whose manifest is gone; its digests cannot be proven from the bucket alone", t)}
	}
	e, err := edgeFromMetadata(head.Metadata)
	if err != nil {
		return ledger.Edge{}, notProven{err}
	}
	e.Key = key
	for i := 1; ; i++ {
		size, ok := r.sizes[ledger.SegmentKey(key, i)]
		if !ok {
			break
		}
		e.Segments = append(e.Segments, ledger.Segment{Key: ledger.SegmentKey(key, i), Bytes: size})
	}
	for _, o := range e.Objects() {
		e.StoredBytes += r.sizes[o.Key]
	}
	e.StreamBytes = e.StoredBytes
	e.Uploaded = head.LastModified.UTC()
	e.StorageClass = head.StorageClass
	if e.StorageClass == "" {
		e.StorageClass = "STANDARD"
	}
	if err := e.CheckKeys(b.Opt.Prefix); err != nil {
		return ledger.Edge{}, notProven{fmt.Errorf("its metadata does not describe it (%v)", err)}
	}
	b.Out("reading %s (%d bytes) to recover its edge", key, e.StoredBytes)
	h, check := sha256.New(), &zfs.StreamCheck{}
	body := b.S3.OpenObjects(ctx, e.Objects(), b.Opt.Concurrency)
	defer body.Close()
	if _, err := io.Copy(io.MultiWriter(h, check), body); err != nil {
		return ledger.Edge{}, fmt.Errorf("reading it failed: %w", err)
	}
	if err := check.Check(e.Target.GUID, e.ID().BaseGUID); err != nil {
		return ledger.Edge{}, notProven{fmt.Errorf("its contents do not match its metadata: %w", err)}
	}
	e.SHA256 = hex.EncodeToString(h.Sum(nil))
	return e, nil
}

// notProven is an object whose metadata or bytes do not make an edge, as
// opposed to one that could not be read.
type notProven struct{ error }

func (e notProven) Unwrap() error { return e.error }

// objectsProblem says what is wrong with an edge's objects in the bucket,
// given the sizes of the objects there; "" when nothing is.
func objectsProblem(e ledger.Edge, sizes map[string]int64) string {
	for _, o := range e.Objects() {
		size, ok := sizes[o.Key]
		switch {
		case !ok:
			return fmt.Sprintf("its object %s is missing", o.Key)
		case size != o.Bytes:
			return fmt.Sprintf("its object %s has %d bytes, the manifest says %d", o.Key, size, o.Bytes)
		}
	}
	return ""
}
