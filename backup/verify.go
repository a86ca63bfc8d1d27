package backup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/transform"
)

// VerifyReport is the result of Verify; its JSON shape is documented in
// README.md and kept stable for scripts.
type VerifyReport struct {
	Edges   []EdgeCheck `json:"edges"`
	Unknown []string    `json:"unknown_objects"` // keys under the prefix no edge references
	OK      bool        `json:"ok"`
}

// EdgeCheck is the verdict on one edge.
type EdgeCheck struct {
	Edge     string   `json:"edge"`
	Key      string   `json:"key"`
	Problems []string `json:"problems"` // empty when intact
	// Lock is the edge's object lock, if any (backup/lock.go).
	Lock *EdgeLock `json:"lock,omitempty"`
}

// Verify checks every edge of the ledger (of one dataset, when given)
// against the bucket: object present, size and metadata as recorded, and
// with readData the object's SHA-256. It also lists objects under the
// prefix that no edge references.
func (b *Backup) Verify(ctx context.Context, dataset string, readData bool) (VerifyReport, error) {
	l, err := b.readLedger(ctx)
	if err != nil {
		return VerifyReport{}, err
	}
	if dataset != "" && !slices.ContainsFunc(l.Edges, func(e ledger.Edge) bool { return e.Target.Dataset() == dataset }) {
		// Checking nothing is not "all intact": most likely a typo.
		return VerifyReport{}, usagef("verify %s: the ledger holds no edge of dataset %s; zfs2s3 status lists what is stored", dataset, dataset)
	}
	objs, _, err := b.listObjects(ctx)
	if err != nil {
		return VerifyReport{}, err
	}
	rep := VerifyReport{OK: true, Unknown: unknownObjects(l, objs, LedgerKey(b.Opt.Prefix))}
	if ps := b.unusableKeyPrefixes(); len(ps) > 0 {
		// The streams of a dataset whose journal cannot be used (on a new
		// machine, verifying another dataset) are not unknown.
		rep.Unknown = slices.DeleteFunc(rep.Unknown, func(k string) bool { return inTree(k, ps) })
	}
	missing, damaged := map[ledger.ID]bool{}, map[ledger.ID]bool{}
	var ids []ledger.ID // of rep.Edges
	for _, e := range l.Edges {
		if dataset != "" && e.Target.Dataset() != dataset {
			continue
		}
		problems, objects := b.checkEdge(ctx, e, readData)
		switch objects {
		case objectsMissing:
			missing[e.ID()] = true
		case objectsDamaged:
			missing[e.ID()], damaged[e.ID()] = true, true
		}
		rep.Edges = append(rep.Edges, EdgeCheck{Edge: e.String(), Key: e.Key, Problems: problems, Lock: b.seenLock(e)})
		ids = append(ids, e.ID())
	}
	// An edge whose chain needs a missing or damaged object cannot be
	// restored either, though its own objects are intact.
	needs := map[ledger.ID]string{}
	for _, br := range l.Broken(missing) {
		if id := br.Edge.ID(); br.Needs != nil && br.Needs.ID() != id {
			needs[id] = whyBroken(br, damaged)
		}
	}
	for i, id := range ids {
		if why, ok := needs[id]; ok {
			rep.Edges[i].Problems = append(rep.Edges[i].Problems, "not restorable: "+why)
		}
		rep.OK = rep.OK && len(rep.Edges[i].Problems) == 0
	}
	rep.OK = rep.OK && len(rep.Unknown) == 0
	return rep, nil
}

// What checkEdge found of an edge's objects.
const (
	objectsIntact  = ""
	objectsMissing = "missing"
	objectsDamaged = "damaged"
)

// checkEdge lists what is wrong with one edge and says whether its objects
// are intact, missing (or unreadable) or damaged.
func (b *Backup) checkEdge(ctx context.Context, e ledger.Edge, readData bool) (problems []string, objects string) {
	problems = []string{} // JSON "problems": [] when intact, as README shows
	var lock s3up.Retention
	defer func() { b.noteRetention(e, lock) }()
	if e.Removing {
		problems = append(problems, "its removal is unfinished; run zfs2s3 remove again")
	}
	for _, o := range e.Objects() {
		obj, err := b.S3.Head(ctx, o.Key)
		if errors.Is(err, s3up.ErrNotFound) {
			problems = append(problems, "object missing: "+err.Error())
			objects = objectsMissing
			continue
		}
		if err != nil {
			// Unreadable now (access, a failing store) is not missing: the
			// edges built on it are not reported as broken for it.
			problems = append(problems, "object unreadable: "+err.Error())
			continue
		}
		if obj.Size != o.Bytes {
			problems = append(problems, fmt.Sprintf("object %s has %d bytes, the ledger recorded %d", o.Key, obj.Size, o.Bytes))
			objects = cmp.Or(objects, objectsDamaged)
		}
		lock = lock.Later(obj.Retention)
		if g := obj.Metadata["zfs2s3-target-guid"]; g != strconv.FormatUint(e.Target.GUID, 10) {
			// Restore checks the data, not the metadata: the chain holds.
			problems = append(problems, fmt.Sprintf("object %s metadata names target guid %q, the ledger %d", o.Key, g, e.Target.GUID))
		}
	}
	if m, err := b.S3.Head(ctx, s3up.ManifestKey(e.Key)); err != nil {
		problems = append(problems, "manifest missing: "+err.Error())
	} else {
		lock = lock.Later(m.Retention)
	}
	if readData && len(problems) == 0 {
		if err := b.readEdge(ctx, e); err != nil {
			problems = append(problems, err.Error())
			objects = objectsDamaged
		}
	}
	return problems, objects
}

// readEdge reads all of e's data and checks it against the ledger: a
// plain edge's SHA-256; a transformed edge's plaintext digests, after
// decryption and decompression; or, for an encrypted edge when none of the
// identities given is one of its recipients (or none was given), each
// object's stored digest, which proves the bytes are the uploaded ones
// without reading them. (A chain switched to a new key keeps edges that
// the current identity cannot open: they are intact, not damaged.)
func (b *Backup) readEdge(ctx context.Context, e ledger.Edge) error {
	if !e.Transformed() || len(e.Recipients) == 0 || b.checkIdentity([]ledger.Edge{e}) == nil {
		return b.copyEdge(ctx, io.Discard, e)
	}
	for i, rec := range e.Records {
		key := ledger.SegmentKey(e.Key, i)
		h := transform.NewStoredHash(e.PartSize)
		body := b.S3.OpenParallel(ctx, key, rec.StoredBytes, s3up.DownloadChunk, b.Opt.Concurrency)
		n, err := io.Copy(h, body)
		body.Close()
		if err != nil {
			return fmt.Errorf("read s3 object %s: %w", key, err)
		}
		if sum := h.Sum(); n != rec.StoredBytes || sum != rec.StoredSHA256 {
			return fmt.Errorf("object %s (segment %d of %d) has %d bytes with digest %s, the ledger recorded %d with %s (damaged in the bucket?)", key, i+1, len(e.Records), n, sum, rec.StoredBytes, rec.StoredSHA256)
		}
	}
	return nil
}
