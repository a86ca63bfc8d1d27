package backup

import (
	"context"
	"fmt"
	"sort"

	"gopkg.in/yaml.v3"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
)

// Rebuild reconstructs the ledger from the manifests in the bucket alone,
// for when the bucket's copy and the local one are lost or damaged. Objects
// without a manifest were never recorded (an upload interrupted after
// completing) and are reported, not added.
func (b *Backup) Rebuild(ctx context.Context) error {
	lock, err := b.store.Lock(ctx)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	objs, err := b.S3.List(ctx, b.Opt.Prefix)
	if err != nil {
		return err
	}
	sizes := map[string]int64{}
	for _, o := range objs {
		sizes[o.Key] = o.Size
	}
	l := ledger.New(b.S3.Bucket(), b.Opt.Prefix)
	l.Generation = b.lastGeneration(ctx)
	b.remoteETag = s3up.AnyVersion // rebuilding is the explicit override
	seen := map[string]bool{}
	for _, o := range objs {
		if _, ok := s3up.ManifestOf(o.Key); !ok {
			continue
		}
		e, err := b.readManifest(ctx, o.Key)
		if err != nil {
			return err
		}
		if problem := objectsProblem(e, sizes); problem != "" {
			b.Out("skipped %s: %s", e, problem)
			continue
		}
		for _, o := range e.Objects() {
			seen[o.Key] = true
		}
		l.Edges = append(l.Edges, e)
	}
	ps, err := b.loadPending()
	if err != nil {
		return err
	}
	of := map[string]*pending{}
	for _, p := range ps {
		for _, k := range p.Upload.Keys() {
			of[k] = p
		}
	}
	for _, o := range objs {
		switch p := of[o.Key]; {
		case !s3up.IsStreamKey(o.Key) || seen[o.Key]:
		case p != nil:
			b.Out("skipped object %s: it belongs to the unfinished upload of %s; run zfs2s3 resume_upload or abort_upload %s", o.Key, p.Edge, p.Edge.Target.Name)
		default:
			b.Out("skipped object %s: it has no manifest (an upload that was never recorded); delete it or abort that upload", o.Key)
		}
	}
	sort.Slice(l.Edges, func(i, j int) bool { return l.Edges[i].Uploaded.Before(l.Edges[j].Uploaded) })
	for _, e := range l.Unrestorable() {
		b.Out("warning: %s has no restorable chain in the bucket", e)
	}
	if err := b.saveLedger(ctx, l); err != nil {
		return err
	}
	b.Out("rebuilt the ledger from the bucket: %d edges, generation %d", len(l.Edges), l.Generation)
	return nil
}

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

// readManifest reads the edge a manifest object records.
func (b *Backup) readManifest(ctx context.Context, key string) (ledger.Edge, error) {
	data, _, err := b.S3.ReadAll(ctx, key)
	if err != nil {
		return ledger.Edge{}, err
	}
	object, _ := s3up.ManifestOf(key)
	var m manifest
	if err := yaml.Unmarshal(data, &m); err != nil || m.Format < 1 || m.Format > ledger.FormatVersion || m.Edge.Key != object || !ledger.SegmentsValid(m.Edge) {
		return ledger.Edge{}, fmt.Errorf("manifest s3://%s/%s is damaged or of another format (%v); move it away and run ledger rebuild again", b.S3.Bucket(), key, err)
	}
	m.Edge.Removing = false
	return m.Edge, nil
}

// lastGeneration is the highest generation either ledger copy reached, so
// that a rebuilt ledger counts as newer than both.
func (b *Backup) lastGeneration(ctx context.Context) uint64 {
	var g uint64
	if l, err := b.store.Load(b.S3.Bucket(), b.Opt.Prefix); err == nil {
		g = l.Generation
	}
	if l, _, _, err := b.bucketLedger(ctx); err == nil && l != nil {
		g = max(g, l.Generation)
	}
	return g
}
