package backup

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"time"

	"filippo.io/age"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/transform"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// Upload stores "zfs send [-i base] target" as a new edge.
func (b *Backup) Upload(ctx context.Context, target, base string) error {
	// Arguments and snapshots first: a bad name or a missing snapshot is
	// said before any request to the store.
	edge, err := b.liveEdge(ctx, target, base)
	if err != nil {
		return err
	}
	if err := b.checkLockBucket(ctx); err != nil {
		return err
	}
	if err := b.checkCentralRecipients(ctx); err != nil {
		return err
	}
	p, err := b.begin(ctx, edge)
	if err != nil {
		return err
	}
	if err := b.run(ctx, p); err != nil {
		p.lock.Unlock() // the state file stays for resume_upload; the lock file goes
		return err
	}
	return nil
}

// liveEdge checks the arguments against the live snapshots and returns the
// edge an upload would record.
func (b *Backup) liveEdge(ctx context.Context, target, base string) (ledger.Edge, error) {
	if err := zfs.CheckSnapshotName(target); err != nil {
		return ledger.Edge{}, usagef("%v", err)
	}
	// A class the store does not offer would be refused only after the
	// upload started; a typo is caught here. Store-specific classes pass
	// with s3up.CustomClassPrefix.
	class, err := s3up.CheckStorageClass(b.Opt.StorageClass)
	if err != nil {
		return ledger.Edge{}, usagef("%v", err)
	}
	t, err := b.snapshot(ctx, target)
	if err != nil {
		return ledger.Edge{}, err
	}
	edge := ledger.Edge{Target: ledger.Snapshot{Name: t.Name, GUID: t.GUID}, StorageClass: class}
	if base != "" {
		if err := zfs.CheckSnapshotName(base); err != nil {
			return ledger.Edge{}, usagef("-i: %v", err)
		}
		bs, err := b.snapshot(ctx, base)
		if err != nil {
			return ledger.Edge{}, err
		}
		if bs.Dataset() != t.Dataset() {
			return ledger.Edge{}, usagef("base %s is on dataset %s, target %s on %s: an incremental needs a base from the same dataset", base, bs.Dataset(), target, t.Dataset())
		}
		if bs.CreateTXG >= t.CreateTXG {
			return ledger.Edge{}, usagef("base %s is not older than target %s: swap them, an incremental goes from an older base to a newer target", base, target)
		}
		edge.Base = &ledger.Snapshot{Name: bs.Name, GUID: bs.GUID}
	}
	if f := b.Opt.SendFlags; f != (zfs.SendFlags{}) {
		support, err := b.ZFS.SendSupport(ctx)
		if err != nil {
			return ledger.Edge{}, err
		}
		if err := support.Check(f); err != nil {
			return ledger.Edge{}, usagef("--send-flags: %v", err)
		}
		edge.SendFlags = f.String()
	}
	edge.Key = ledger.ObjectKey(b.Opt.Prefix, edge.Target, edge.Base)
	// S3 keys end at 1024 bytes; the longest key of an edge is its manifest's.
	if n := len(s3up.ManifestKey(edge.Key)); n > maxKeyBytes {
		return ledger.Edge{}, usagef("the keys of %s would be %d bytes, over S3's %d: use a shorter --prefix, dataset or snapshot name", edge, n, maxKeyBytes)
	}
	return edge, nil
}

// maxKeyBytes is S3's limit on an object key.
const maxKeyBytes = 1024

// snapshot reads a live snapshot, turning "does not exist" into a usage error.
func (b *Backup) snapshot(ctx context.Context, name string) (zfs.Snapshot, error) {
	s, err := b.ZFS.Snapshot(ctx, name)
	if errors.Is(err, zfs.ErrNotExist) {
		return s, usagef("snapshot %s does not exist (check the name with: zfs list -t snapshot)", name)
	}
	return s, err
}

// begin checks the edge against the ledger and records the intent to upload
// it, all under the ledger lock, so that a concurrent remove sees the
// pending upload before any byte reaches S3.
func (b *Backup) begin(ctx context.Context, edge ledger.Edge) (*pending, error) {
	estimate, err := b.estimate(ctx, edge)
	if err != nil {
		return nil, err
	}
	partSize := b.Opt.PartSize
	if partSize == 0 {
		partSize = PlanPartSize(estimate)
	}
	up := s3up.Upload{Key: edge.Key, PartSize: partSize, Checksum: b.Opt.Checksum, StorageClass: edge.StorageClass,
		PartsPerObject: b.Opt.PartsPerObject, Lock: b.Opt.Lock}
	if spec := b.Opt.Transform.Spec(); spec.Segmented() {
		// The transform is fixed for the upload's lifetime, in its state
		// file: a resume continues with what it started with.
		if b.Opt.PartSize == 0 {
			partSize = DefaultPartSize // per segment, which is at most 64 GiB
		}
		edge.SegmentSize = planSegmentSize(b.Opt.Transform.SegmentSize, estimate)
		// A segment is one multipart upload: its stored bytes (a little
		// more than its plaintext when incompressible) fit 9,000 parts.
		partSize = max(partSize, (edge.SegmentSize/9000+(1<<20))&^((1<<20)-1))
		edge.Transform, edge.PartSize = spec.String(), partSize
		for _, r := range b.Opt.Transform.Recipients {
			edge.Recipients = append(edge.Recipients, r.String())
		}
		up.PartSize, up.Transformed, up.PartsPerObject = partSize, true, 0
	} else {
		up.PartDigests = true // hashed once per part (ledger format 4)
	}
	recorded := edge // as record will make it: its format is the objects' zfs2s3-format
	if up.PartDigests {
		recorded.PartSize = partSize
	}
	up.Metadata = objectMetadata(recorded)
	p := &pending{Edge: edge, Started: time.Now().UTC(), path: b.pendingPath(edge.Key), Estimate: estimate, Upload: up}
	err = b.withLedger(ctx, func(l *ledger.Ledger) (bool, error) {
		if err := l.CheckAdd(edge); err != nil {
			return false, err
		}
		if bl, ok := b.j.blockedFor(edge.Target.Dataset()); ok {
			// Refused now, not after the whole stream was sent: the edge
			// could not be recorded until ledger rebuild.
			return false, bl.err
		}
		if err := b.checkCentralQuota(ctx, l, edge, estimate); err != nil {
			return false, err
		}
		if err := checkBaseFlags(l, edge); err != nil {
			return false, err
		}
		lock, err := lockPending(p.path)
		if err != nil {
			return false, lockedHint(err, "an upload of "+edge.String())
		}
		if _, err := os.Stat(p.path); err == nil {
			lock.Unlock()
			return false, fmt.Errorf("an upload of %s was interrupted earlier; run zfs2s3 resume_upload %s, or abort_upload %s to start over", edge, edge.Target.Name, edge.Target.Name)
		}
		if err := p.save(); err != nil { // a full disk: leave no lock file behind
			lock.Unlock()
			return false, err
		}
		p.lock = lock
		return false, nil
	})
	return p, err
}

// estimate is the expected stream size, for planning the part size (fixed
// for the upload's lifetime: Cloudflare R2 requires equal parts) and for
// progress.
func (b *Backup) estimate(ctx context.Context, e ledger.Edge) (int64, error) {
	if est, ok := b.ZFS.Estimate(ctx, e.Target.Name, e.BaseName()); ok {
		return est, nil
	}
	// zfs-fuse cannot estimate; the snapshot's logical size bounds a full
	// stream and, in practice, an incremental to it.
	return b.ZFS.LogicalSize(ctx, e.Target.Name)
}

// DefaultPartSize is the smallest part size planned: big enough for good
// throughput, small enough that (concurrency+2) buffers stay modest.
const DefaultPartSize = 16 << 20

// PlanPartSize returns the part size for a stream of about est bytes: the
// default, or larger so the stream plus half again fits in 9,000 parts,
// rounded up to a MiB.
func PlanPartSize(est int64) int64 {
	need := (est + est/2) / 9000
	size := max(int64(DefaultPartSize), (need+(1<<20)-1)&^((1<<20)-1))
	return min(size, s3up.MaxPartSize)
}

// checkBaseFlags refuses an incremental whose -L, -e or -w differ from
// those of the stored edges into its base: switching -L within a chain
// zeroes files on receive (openzfs #6224), and a raw chain must stay raw.
func checkBaseFlags(l *ledger.Ledger, e ledger.Edge) error {
	if e.Base == nil {
		return nil
	}
	mine, _ := zfs.ParseSendFlags(e.SendFlags)
	for _, be := range l.Edges {
		if be.Target.GUID != e.Base.GUID || be.Removing {
			continue
		}
		theirs, _ := zfs.ParseSendFlags(be.SendFlags)
		if mine.LargeBlocks != theirs.LargeBlocks || mine.Embedded != theirs.Embedded || mine.Raw != theirs.Raw {
			return usagef("%s would be sent with send flags %q, but %s was stored with %q: an incremental keeps the base's large-blocks, embedded and raw; set --send-flags to match, or upload a new full", e, e.SendFlags, be, be.SendFlags)
		}
	}
	return nil
}

// planSegmentSize is the segment size of a transformed upload: the one
// asked for (default 256 MiB), or larger so that a stream of about est
// bytes, plus half again, stays within ledger.MaxSegments objects.
func planSegmentSize(asked, est int64) int64 {
	size := asked
	if size == 0 {
		size = transform.DefaultSegmentSize
	}
	need := (est + est/2) / (ledger.MaxSegments - 1)
	size = max(size, (need+(1<<20)-1)&^((1<<20)-1))
	return min(size, transform.MaxSegmentSize)
}

// objectMetadata is stored with the object, enough to rebuild the edge
// from the bucket alone; the stream's size and hash follow in the manifest.
// Names are percent-encoded because S3 metadata must be ASCII.
func objectMetadata(e ledger.Edge) map[string]string {
	m := map[string]string{
		"zfs2s3-format":      strconv.Itoa(e.Format()),
		"zfs2s3-target":      url.PathEscape(e.Target.Name),
		"zfs2s3-target-guid": strconv.FormatUint(e.Target.GUID, 10),
	}
	if e.Base != nil {
		m["zfs2s3-base"] = url.PathEscape(e.Base.Name)
		m["zfs2s3-base-guid"] = strconv.FormatUint(e.Base.GUID, 10)
	}
	if e.Transformed() {
		m[s3up.MetaTransform] = e.Transform
		m[s3up.MetaSegmentSize] = strconv.FormatInt(e.SegmentSize, 10)
	}
	return m
}

// edgeFromMetadata reads the edge an upload wrote into its objects'
// metadata (objectMetadata).
func edgeFromMetadata(m map[string]string) (ledger.Edge, error) {
	snap := func(name, guid string) (ledger.Snapshot, error) {
		n, err1 := url.PathUnescape(m[name])
		g, err2 := strconv.ParseUint(m[guid], 10, 64)
		if err1 != nil || err2 != nil || n == "" {
			return ledger.Snapshot{}, fmt.Errorf("its metadata lacks %s or %s", name, guid)
		}
		return ledger.Snapshot{Name: n, GUID: g}, nil
	}
	t, err := snap("zfs2s3-target", "zfs2s3-target-guid")
	if err != nil {
		return ledger.Edge{}, err
	}
	e := ledger.Edge{Target: t}
	if m["zfs2s3-base"] != "" {
		base, err := snap("zfs2s3-base", "zfs2s3-base-guid")
		if err != nil {
			return ledger.Edge{}, err
		}
		e.Base = &base
	}
	return e, nil
}

// MemoryBound is the most memory an upload should take: a part buffer for
// each part in flight, one being filled, one spare, and room for the rest;
// a compressed upload adds its encoder's frames (transform.EncoderMemory).
func MemoryBound(concurrency int, partSize int64, spec transform.Spec) int64 {
	return int64(concurrency+2)*partSize + 32<<20 + transform.EncoderMemory(spec)
}

// run uploads a pending edge, then records it.
func (b *Backup) run(ctx context.Context, p *pending) error {
	// The part buffers are most of the heap and live for the whole upload;
	// without a limit the GC lets garbage grow to twice their size. The Go
	// heap gets MemoryBound less one part and 16 MiB, which are left for the
	// runtime and the mapped binary that the limit does not count.
	var spec transform.Spec // none: a plain upload, or a spec that runSegments refuses
	if p.Upload.Transformed {
		spec, _ = transform.ParseSpec(p.Edge.Transform)
	}
	bound := MemoryBound(max(b.Opt.Concurrency, 1), p.Upload.PartSize, spec)
	old := debug.SetMemoryLimit(bound - p.Upload.PartSize - 16<<20)
	defer debug.SetMemoryLimit(old)
	up := &s3up.Uploader{Client: b.S3, Concurrency: b.Opt.Concurrency,
		Save: func(u *s3up.Upload) error { p.Upload = *u; return p.save() }}
	if b.Progress != nil {
		up.Progress = func(pr s3up.Progress) { b.Progress(p.Edge.String(), pr, p.Estimate) }
	}
	u := p.Upload
	var res s3up.Result
	var segs transform.Result
	var err error
	if u.Transformed {
		segs, err = b.runSegments(ctx, up, p, &u)
	} else {
		res, err = up.Run(ctx, &u, func() (s3up.Source, error) { return b.send(ctx, p.Edge) })
	}
	if b.ProgressDone != nil {
		b.ProgressDone()
	}
	switch {
	case err == nil && u.Transformed:
		return b.recordSegments(ctx, p, segs)
	case err == nil:
		return b.record(ctx, p, res)
	case errors.Is(err, s3up.ErrPermanent):
		return b.refused(ctx, p, err)
	case errors.Is(err, s3up.ErrStreamChanged):
		return fmt.Errorf("upload of %s cannot continue: %w; the snapshot is not what was uploaded: run zfs2s3 abort_upload %s and upload again", p.Edge, err, p.Edge.Target.Name)
	case errors.Is(err, errSnapshotGone):
		return fmt.Errorf("upload of %s cannot continue: %w; run zfs2s3 abort_upload %s to discard it", p.Edge, err, p.Edge.Target.Name)
	case errors.Is(err, s3up.ErrObjectLost):
		return fmt.Errorf("upload of %s cannot continue: %w; run zfs2s3 abort_upload %s and upload again", p.Edge, err, p.Edge.Target.Name)
	}
	hint := "run zfs2s3 resume_upload to continue, or abort_upload to discard it"
	if errors.Is(err, s3up.ErrSetup) {
		hint = "once that is fixed, " + hint
	}
	return fmt.Errorf("upload of %s interrupted: %w; %s", p.Edge, err, hint)
}

// runSegments uploads a transformed edge with the transform recorded in
// its state, not the one the command line asks for now.
func (b *Backup) runSegments(ctx context.Context, up *s3up.Uploader, p *pending, u *s3up.Upload) (transform.Result, error) {
	spec, err := transform.ParseSpec(p.Edge.Transform)
	if err != nil {
		return transform.Result{}, err
	}
	var recipients []age.Recipient
	for _, r := range p.Edge.Recipients {
		rec, err := transform.ParseRecipient(r)
		if err != nil {
			return transform.Result{}, fmt.Errorf("upload state of %s: recipient %q: %w", p.Edge, r, err)
		}
		recipients = append(recipients, rec)
	}
	enc, err := transform.NewEncoder(spec, recipients)
	if err != nil {
		return transform.Result{}, err
	}
	defer enc.Close()
	seg := &transform.Segmenter{Encoder: enc, Size: p.Edge.SegmentSize}
	return up.RunSegments(ctx, u, seg, func() (s3up.Source, error) { return b.send(ctx, p.Edge) })
}

// recordSegments is record for a transformed edge.
func (b *Backup) recordSegments(ctx context.Context, p *pending, res transform.Result) error {
	e := p.Edge
	e.Records, e.StreamBytes, e.SHA256, e.StoredBytes = res.Segments, res.PlainBytes, res.StreamSHA256, 0
	for _, r := range res.Segments {
		e.StoredBytes += r.StoredBytes
	}
	return b.recordEdge(ctx, p, e)
}

// refused discards an upload the store refused: what it refused (the storage
// class, the key, the metadata, the part size) is fixed in the upload's
// state, so a resume would be refused again, and a pending upload would only
// block the edge.
func (b *Backup) refused(ctx context.Context, p *pending, err error) error {
	if aerr := b.abort(ctx, p); aerr != nil {
		return fmt.Errorf("upload of %s refused: %w; discarding it failed too (%v): run zfs2s3 abort_upload %s", p.Edge, err, aerr, p.Edge.Target.Name)
	}
	return fmt.Errorf("upload of %s refused: %w; the upload was discarded (nothing is pending): upload again once that is fixed", p.Edge, err)
}

// errSnapshotGone means a snapshot of a pending upload was destroyed or
// re-created since the upload started: it can never be finished.
var errSnapshotGone = errors.New("the upload can never be finished")

// send starts zfs send after checking that the live snapshots still have
// the GUIDs the upload was started with.
func (b *Backup) send(ctx context.Context, e ledger.Edge) (s3up.Source, error) {
	ends := []ledger.Snapshot{e.Target}
	if e.Base != nil {
		ends = append(ends, *e.Base)
	}
	for _, want := range ends {
		live, err := b.ZFS.Snapshot(ctx, want.Name)
		if errors.Is(err, zfs.ErrNotExist) {
			return nil, fmt.Errorf("snapshot %s was destroyed since the upload started: %w", want.Name, errSnapshotGone)
		}
		if err != nil {
			return nil, err
		}
		if live.GUID != want.GUID {
			return nil, fmt.Errorf("snapshot %s has GUID %d, the upload was started for GUID %d: it was re-created, %w", want.Name, live.GUID, want.GUID, errSnapshotGone)
		}
	}
	flags, err := zfs.ParseSendFlags(e.SendFlags)
	if err != nil {
		return nil, fmt.Errorf("upload of %s: send flags %q: %w", e, e.SendFlags, err)
	}
	return b.ZFS.SendWith(ctx, flags, e.Target.Name, e.BaseName())
}

// record writes the manifest and adds the edge to the ledger, then drops the
// upload state. A crash in between is finished by resume_upload.
func (b *Backup) record(ctx context.Context, p *pending, res s3up.Result) error {
	e := p.Edge
	e.StreamBytes, e.StoredBytes, e.SHA256 = res.Bytes, res.Bytes, res.SHA256
	if p.Upload.PartDigests {
		e.PartSize = p.Upload.PartSize // res.SHA256 is made of its parts' digests
	}
	e.Segments = p.Upload.Segments()
	return b.recordEdge(ctx, p, e)
}

// recordEdge is record once the edge's sizes and digests are known.
func (b *Backup) recordEdge(ctx context.Context, p *pending, e ledger.Edge) error {
	e.Uploaded = time.Now().UTC().Truncate(time.Second)
	// A refused manifest never discards the stored stream: the upload stays
	// pending, and resume_upload writes the manifest once the cause is fixed.
	if err := b.writeManifestLocked(ctx, e, p.Upload.Lock); err != nil {
		return fmt.Errorf("upload of %s: write manifest: %w; run zfs2s3 resume_upload to finish", e, err)
	}
	err := b.withLedger(ctx, func(l *ledger.Ledger) (bool, error) {
		if l.Stored(e) {
			return false, nil // recorded by a run that crashed before cleaning up
		}
		return true, l.Add(e)
	})
	if err != nil && !errors.Is(err, errCopyBehind) {
		return fmt.Errorf("upload of %s completed but not recorded: %w", e, err)
	}
	copyErr := err
	b.lastRecorded = &e
	if err := p.release(); err != nil {
		return err
	}
	more := ""
	if n := len(e.Keys()) - 1; n > 0 {
		more = fmt.Sprintf(" and %d further objects %s.2 to .%d", n, e.Key, n+1)
	}
	if e.Transformed() {
		more += fmt.Sprintf(", %s, %d bytes before", e.Transform, e.StreamBytes)
	}
	b.Out("stored %s as s3://%s/%s%s (%d bytes, sha256 %s)", e, b.S3.Bucket(), e.Key, more, e.StoredBytes, e.SHA256)
	return copyErr
}
