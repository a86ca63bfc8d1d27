package s3up

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"sort"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/transform"
)

// S3's multipart limits. MaxObjectSize is the largest object that
// S3-compatible stores generally take (R2, GCS, Wasabi, Ceph: 5 TiB; AWS
// now takes more): a stream continues in a further object before either
// limit is reached.
const (
	MinPartSize   = 5 << 20
	MaxPartSize   = 5 << 30
	MaxParts      = 10000
	MaxObjectSize = 5 << 40
)

// Part is one finished part.
type Part struct {
	Number   int32  `yaml:"number"`
	Size     int64  `yaml:"size"`
	ETag     string `yaml:"etag"`
	Checksum string `yaml:"checksum"` // base64 SHA-256, CRC32C or MD5 of the part, per Upload.Checksum
	// SHA256 is the part's own SHA-256 (hex), in an upload with
	// PartDigests: on resume the re-read part must hash to it again.
	SHA256 string `yaml:"sha256,omitempty"`
	// PrefixSHA256 is, in an upload without PartDigests (begun by an
	// earlier release), the SHA-256 of the stream from its first byte to
	// the end of this part: that stream is hashed once, in order, and on
	// resume the re-read stream must reach the same value at each
	// uploaded part.
	PrefixSHA256 string `yaml:"prefix_sha256,omitempty"`
}

// Upload is the saved progress of one multipart upload. Everything needed
// to continue or clean up after a crash is here.
type Upload struct {
	Key          string            `yaml:"key"`
	UploadID     string            `yaml:"upload_id"` // empty until CreateMultipartUpload returned
	PartSize     int64             `yaml:"part_size"`
	Checksum     string            `yaml:"checksum"` // one of Checksums, "" meaning crc32c; fixed for the upload
	StorageClass string            `yaml:"storage_class"`
	Metadata     map[string]string `yaml:"metadata"`
	Parts        []Part            `yaml:"parts"`
	// Completing is saved with the totals just before CompleteMultipartUpload,
	// so a crash after it can be verified and recorded instead of redone.
	Completing  bool   `yaml:"completing,omitempty"`
	StreamBytes int64  `yaml:"stream_bytes,omitempty"`
	SHA256      string `yaml:"sha256,omitempty"`
	// Full lists the objects this stream filled before the current one: a
	// stream longer than PartsPerObject parts continues in a further object
	// at ledger.SegmentKey(Key, 1), 2, and so on. Parts, UploadId and the fields
	// above are the current object's.
	Full []FullObject `yaml:"full,omitempty"`
	// PartsPerObject lowers the parts per object below the limits (tests).
	PartsPerObject int `yaml:"parts_per_object,omitempty"`
	// Lock, when set, stores each object with an object lock retention
	// (s3up/lock.go).
	Lock *Lock `yaml:"lock,omitempty"`
	// Transformed is set for a compressed or encrypted stream, stored as
	// one object per segment (RunSegments, transform/FORMAT.md). Done lists
	// its finished segments; UploadID is then the multipart upload of
	// segment len(Done), the one in flight, and Full is unused.
	Transformed bool               `yaml:"transformed,omitempty"`
	Done        []transform.Record `yaml:"segments_done,omitempty"`
	// PartDigests is set for every plain upload this release begins: each
	// part is hashed once, in the goroutine that sends it, and that one
	// SHA-256 is the request's payload hash, the checksum S3 verifies
	// (--checksum sha256) and, combined (transform.CompositeSHA256 over
	// all the stream's parts), the digest the ledger records. Uploads an
	// earlier release began, without it, hash the whole stream in order
	// as before (PrefixSHA256) and record that.
	PartDigests bool `yaml:"part_digests,omitempty"`
	// Finishing is the record of segment len(Done) (with StoredSHA256),
	// saved with its Parts and UploadID just before its
	// CompleteMultipartUpload: a crash between that and saving the segment
	// as done leaves an object that a resume must recognise and adopt, not
	// redo under a new key (which If-None-Match: * refuses, and a host may
	// not overwrite). Absent in files of earlier releases.
	Finishing *transform.Record `yaml:"segment_finishing,omitempty"`
}

// FullObject is an object of a stream that filled PartsPerObject parts.
type FullObject struct {
	Key          string `yaml:"key"`
	Bytes        int64  `yaml:"bytes"`
	PrefixSHA256 string `yaml:"prefix_sha256,omitempty"` // of the stream up to this object's end (without PartDigests)
	StoredSHA256 string `yaml:"stored_sha256,omitempty"` // of its parts (transform.CompositeSHA256; with PartDigests)
	ETag         string `yaml:"etag"`                    // the multipart ETag it gets
	// UploadID and Parts are kept until CompleteMultipartUpload is known to
	// have succeeded, so a crash in between is completed by the next run.
	UploadID string `yaml:"upload_id,omitempty"`
	Parts    []Part `yaml:"parts,omitempty"`
}

// current is the key of the object being uploaded.
func (u *Upload) current() string {
	if u.Transformed {
		return ledger.SegmentKey(u.Key, len(u.Done))
	}
	return ledger.SegmentKey(u.Key, len(u.Full))
}

func (u *Upload) partsPerObject() int {
	n := MaxParts
	if u.PartSize > 0 {
		n = min(n, int(MaxObjectSize/u.PartSize))
	}
	if u.PartsPerObject > 0 {
		n = min(n, u.PartsPerObject)
	}
	return n
}

// fullBytes is the stream's length in the filled objects.
func (u *Upload) fullBytes() int64 {
	var n int64
	for _, f := range u.Full {
		n += f.Bytes
	}
	return n
}

// Segments lists the objects after the first that hold the rest of the
// stream, with their sizes, once the upload is complete.
func (u *Upload) Segments() []ledger.Segment {
	if len(u.Full) == 0 {
		return nil
	}
	segs := make([]ledger.Segment, 0, len(u.Full))
	for _, f := range u.Full[1:] {
		segs = append(segs, ledger.Segment{Key: f.Key, Bytes: f.Bytes})
	}
	return append(segs, ledger.Segment{Key: u.current(), Bytes: u.StreamBytes - u.fullBytes()})
}

// Progress returns the parts and bytes uploaded so far.
func (u *Upload) Progress() (parts int, bytes int64) {
	bytes = u.fullBytes()
	for _, p := range u.Parts {
		bytes += p.Size
	}
	return len(u.Full)*u.partsPerObject() + len(u.Parts), bytes
}

// AbortUpload aborts every multipart upload u started, including one whose
// UploadId a crash kept from being saved. Objects it completed stay; the
// caller decides about them (they may be recorded already).
func (c *Client) AbortUpload(ctx context.Context, u *Upload) error {
	keys := u.Keys()
	for _, f := range u.Full {
		if f.UploadID != "" {
			if err := c.Abort(ctx, f.Key, f.UploadID); err != nil {
				return err
			}
		}
	}
	if u.UploadID != "" {
		if err := c.Abort(ctx, keys[len(keys)-1], u.UploadID); err != nil {
			return err
		}
	}
	for _, k := range keys {
		if _, err := c.AbortAll(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// Keys lists every object key the upload has used, first to current.
func (u *Upload) Keys() []string {
	if u.Transformed {
		return u.segmentKeys()
	}
	keys := make([]string, 0, len(u.Full)+1)
	for i := range u.Full {
		keys = append(keys, ledger.SegmentKey(u.Key, i))
	}
	return append(keys, u.current())
}

// Checksums S3 verifies on every part: SHA-256 (the default: the part's
// digest zfs2s3 computes anyway, carried into CompleteMultipartUpload),
// CRC32C, MD5 as Content-MD5 for stores that reject the newer checksum
// headers (Backblaze B2, some Ceph), or none (then only the SigV4
// signature, on plain HTTP, or TLS guards it). A transformed upload sends
// SHA-256 for crc32c too (it always has).
var Checksums = []string{"sha256", "crc32c", "md5", "none"}

func (u *Upload) checksum() string {
	if u.Checksum == "" {
		return "crc32c"
	}
	return u.Checksum
}

// Source is a stream whose success is known only after it ends, like zfs send.
type Source interface {
	io.Reader
	// Wait reports whether the whole stream was produced; a stream that was
	// cut short must return an error here.
	Wait() error
	// Close stops the producer if it still runs and releases it.
	Close() error
}

// Result describes a completed stream.
type Result struct {
	Bytes int64
	parts int // in the whole stream
	// SHA256 is the stream's digest: with PartDigests, the composite of
	// its parts' SHA-256s ("hex-N", transform.CompositeSHA256); without,
	// the hex SHA-256 of the whole stream.
	SHA256 string
}

// ErrStreamChanged means the re-read stream differs from what was uploaded.
var ErrStreamChanged = errors.New("the zfs send stream differs from the parts already uploaded")

// ErrObjectLost means an object this upload completed is gone from the
// bucket or holds other bytes: resuming cannot help, the upload must start
// over.
var ErrObjectLost = errors.New("an object this upload completed is gone or changed in the bucket")

// Uploader runs multipart uploads.
type Uploader struct {
	Client      *Client
	Concurrency int // parts in flight; at least 1
	// Save persists u; it is called after every change to u. An upload is
	// only as resumable as Save is durable.
	Save func(u *Upload) error
	// Progress, when set, is called as parts start and finish.
	Progress func(Progress)
}

// Progress is a snapshot of a running upload.
type Progress struct {
	Done     int64 // bytes in finished parts, including those of earlier runs
	InFlight int   // parts being uploaded
}

// Run uploads the stream that open returns into u, skipping parts that are
// already on the server (after checking that the re-read bytes hash to what
// they held), and completes the object. open is not called when u was
// already completed by an earlier, interrupted run.
func (up *Uploader) Run(ctx context.Context, u *Upload, open func() (Source, error)) (Result, error) {
	done, err := up.prepare(ctx, u)
	if err != nil {
		return Result{}, err
	}
	if done {
		return Result{Bytes: u.StreamBytes, SHA256: u.SHA256}, nil
	}
	src, err := open()
	if err != nil {
		return Result{}, err
	}
	defer src.Close() // on failure, zfs send must not stay blocked on a full pipe
	res, err := up.transfer(ctx, u, src)
	if err != nil {
		return Result{}, err
	}
	if err := up.complete(ctx, u, res); err != nil {
		return Result{}, err
	}
	return res, nil
}

// prepare creates the multipart upload, or reconciles the saved parts with
// the server's. done is true when the object was completed already.
func (up *Uploader) prepare(ctx context.Context, u *Upload) (done bool, err error) {
	for i := range u.Full {
		if err := up.completeFull(ctx, u, i); err != nil {
			return false, err
		}
	}
	if u.UploadID == "" {
		return false, up.create(ctx, u)
	}
	key := u.current()
	parts, err := up.Client.listParts(ctx, key, u.UploadID)
	if err == nil && len(parts) == 0 && (len(u.Parts) > 0 || u.Completing) {
		err = up.goneOrCompleted(key, u.UploadID)
	}
	switch {
	case err == nil:
		u.Parts = reconcile(u.Parts, parts)
		return false, up.Save(u)
	case !errors.Is(err, ErrNotFound):
		return false, err
	case u.Completing:
		if _, err := up.verifyCompleted(ctx, u, len(u.Full)); err != nil {
			return false, err
		}
		return true, up.checkFull(ctx, u)
	}
	slog.Warn("multipart upload is gone from the bucket (aborted or expired); starting it again with a new one; run abort_upload instead to give it up", "key", key, "upload_id", u.UploadID)
	u.UploadID, u.Parts = "", nil
	return false, up.create(ctx, u)
}

// goneOrCompleted is what an empty parts listing means for an upload that
// had parts: not that the parts are lost, but that the upload is no more
// (SeaweedFS answers ListParts on a completed or aborted UploadId with no
// parts). Uploading into it again would only fail; the object is checked
// first instead, as after NoSuchUpload.
func (up *Uploader) goneOrCompleted(key, uploadID string) error {
	up.Client.learn(func(c *Caps) *bool { return &c.ListPartsEmptyWhenGone }, "ListParts lists no parts for a completed or aborted upload")
	slog.Info("the store lists no parts for an upload that had some: it is completed or gone; checking the object", "key", key, "upload_id", uploadID)
	return fmt.Errorf("list parts of s3 key %q: %w", key, ErrNotFound)
}

// create starts the multipart upload of the current object.
func (up *Uploader) create(ctx context.Context, u *Upload) error {
	key := u.current()
	// A crash between CreateMultipartUpload and saving its UploadId leaves an
	// upload no state knows; it holds no parts yet, so aborting loses nothing.
	if n, err := up.Client.AbortAll(ctx, key); err != nil {
		return err
	} else if n > 0 {
		slog.Info("aborted multipart uploads left by an earlier crash", "key", key, "count", n)
	}
	in := &s3.CreateMultipartUploadInput{
		Bucket: &up.Client.bucket, Key: &key, Metadata: u.Metadata,
		StorageClass: types.StorageClass(u.StorageClass),
		ContentType:  aws.String("application/octet-stream"),
	}
	switch u.checksum() {
	case "crc32c":
		in.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32c
	case "sha256":
		in.ChecksumAlgorithm = types.ChecksumAlgorithmSha256
	}
	lockMultipart(in, u.Lock)
	out, err := up.Client.s3.CreateMultipartUpload(ctx, in)
	if err != nil {
		return wrap("create multipart upload", key, err)
	}
	u.UploadID, u.Parts, u.Completing = aws.ToString(out.UploadId), nil, false
	return up.Save(u)
}

// reconcile keeps the saved parts the server holds with the same ETag;
// anything else is uploaded again.
func reconcile(saved []Part, server map[int32]types.Part) []Part {
	var kept []Part
	for _, p := range saved {
		if sp, ok := server[p.Number]; ok && etagOf(sp.ETag) == p.ETag && aws.ToInt64(sp.Size) == p.Size {
			kept = append(kept, p)
		}
	}
	return kept
}

// chunk is one part's bytes on their way to UploadPart.
type chunk struct {
	key, uploadID string
	part          Part
	index         int // of the part in the whole stream, from 0
	buf           []byte
}

// transfer reads src part by part, verifies parts already uploaded and
// uploads the others concurrently. It returns only after src.Wait succeeded.
func (up *Uploader) transfer(ctx context.Context, u *Upload, src Source) (Result, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	n := max(up.Concurrency, 1)
	bufs := make(chan []byte, n+1)
	for i := 0; i < n+1; i++ {
		bufs <- nil // allocated on first use, so small streams stay small
	}
	work := make(chan chunk)
	var wg sync.WaitGroup
	var mu sync.Mutex       // guards u, digests and the progress counters
	var sent sync.WaitGroup // parts handed to workers and not yet saved
	_, doneBytes := u.Progress()
	// With PartDigests, the SHA-256 of every part of the stream, by its
	// index: hashed by the worker that sends it, or by read for a part
	// uploaded by an earlier run.
	digests := map[int][sha256.Size]byte{}
	digest := func(i int, sum [sha256.Size]byte) {
		mu.Lock()
		digests[i] = sum
		mu.Unlock()
	}
	var inFlight int
	report := func() { // hold mu
		if up.Progress != nil {
			up.Progress(Progress{Done: doneBytes, InFlight: inFlight})
		}
	}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				mu.Lock()
				inFlight++
				report()
				mu.Unlock()
				p, err := up.uploadPart(ctx, u, c)
				bufs <- c.buf
				mu.Lock()
				inFlight--
				if err == nil {
					if u.PartDigests {
						digests[c.index], err = partSum(p)
					}
					u.Parts = insertPart(u.Parts, p)
					doneBytes += p.Size
					if err = up.Save(u); err != nil {
						err = fmt.Errorf("save upload state: %w", err)
					}
					report()
				}
				mu.Unlock()
				if err != nil {
					cancel(err)
				}
				sent.Done()
			}
		}()
	}
	// A full object is completed once its parts are all saved; the parts
	// of the next one start after that.
	fill := func(end Part) error {
		sent.Wait()
		if err := context.Cause(ctx); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		return up.nextObject(ctx, u, end)
	}
	send := func(c chunk) error {
		sent.Add(1)
		select {
		case work <- c:
			return nil
		case <-ctx.Done():
			sent.Done()
			return context.Cause(ctx)
		}
	}
	res, readErr := up.read(ctx, u, src, bufs, send, fill, digest)
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && readErr == nil {
		readErr = err
	}
	if readErr == nil && u.PartDigests {
		sums := make([][sha256.Size]byte, res.parts)
		for i := range sums {
			sum, ok := digests[i]
			if !ok {
				return Result{}, fmt.Errorf("upload %s: part %d of %d has no digest", u.Key, i+1, res.parts)
			}
			sums[i] = sum
		}
		res.SHA256 = transform.CompositeSHA256(sums)
	}
	return res, readErr
}

// partSum is the binary SHA-256 of a part, from its record.
func partSum(p Part) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	b, err := hex.DecodeString(p.SHA256)
	if err != nil || len(b) != sha256.Size {
		return sum, fmt.Errorf("part %d: sha256 %q is not a hex SHA-256 (the upload state was edited or damaged)", p.Number, p.SHA256)
	}
	copy(sum[:], b)
	return sum, nil
}

// partsComposite is the stored digest of an object made of parts
// (transform.CompositeSHA256), from their records.
func partsComposite(parts []Part) (string, error) {
	sums := make([][sha256.Size]byte, 0, len(parts))
	for _, p := range parts {
		sum, err := partSum(p)
		if err != nil {
			return "", err
		}
		sums = append(sums, sum)
	}
	return transform.CompositeSHA256(sums), nil
}

// read splits src into parts and sends the missing ones. Parts of objects
// filled in an earlier run are only hashed, and must reach the same hash at
// each object's end. When the current object has all its parts and the
// stream goes on, fill completes it and starts the next. With PartDigests
// read hashes only the parts it does not send, and gives their digests to
// digest; without, it hashes the whole stream.
func (up *Uploader) read(ctx context.Context, u *Upload, src Source, bufs chan []byte, send func(chunk) error, fill func(end Part) error, digest func(int, [sha256.Size]byte)) (Result, error) {
	// u changes as workers finish; decide from what was there at the start.
	filled, fullBytes := len(u.Full), u.fullBytes()
	full := append([]FullObject(nil), u.Full...)
	saved := map[int32]Part{}
	for _, p := range u.Parts {
		saved[p.Number] = p
	}
	per := u.partsPerObject()
	whole := sha256.New()
	var objParts [][sha256.Size]byte // of the filled object being re-read
	var total int64
	var prev Part // the last part read
	var buf []byte
	parts := 0
	for i := 0; ; i++ {
		obj, num := i/per, int32(i%per+1)
		select {
		case buf = <-bufs:
		case <-ctx.Done():
			return Result{}, context.Cause(ctx)
		}
		if buf == nil {
			buf = make([]byte, u.PartSize)
		}
		size, err := io.ReadFull(src, buf[:u.PartSize])
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return Result{}, fmt.Errorf("read zfs send stream: %w", err)
		}
		last := size < int(u.PartSize)
		if last {
			// A short read is the end of the stream only if zfs send says so;
			// a killed one must not leave a short part that no resume matches.
			if err := src.Wait(); err != nil {
				bufs <- buf
				return Result{}, fmt.Errorf("zfs send failed, upload not completed: %w", err)
			}
		}
		if size == 0 && i > 0 {
			bufs <- buf
			break
		}
		if num == 1 && obj > filled {
			// The stream outgrew the current object: continue in a new one.
			if err := fill(prev); err != nil {
				bufs <- buf
				return Result{}, err
			}
		}
		data := buf[:size]
		total += int64(size)
		parts = i + 1
		p := Part{Number: num, Size: int64(size)}
		old, ok := saved[num]
		switch {
		case !u.PartDigests:
			whole.Write(data)
			p.PrefixSHA256 = hex.EncodeToString(whole.Sum(nil))
		case obj < filled || obj == filled && ok:
			sum := sha256.Sum256(data)
			p.SHA256 = hex.EncodeToString(sum[:])
			digest(i, sum)
			if obj < filled {
				objParts = append(objParts, sum)
			}
		}
		prev = p
		switch {
		case obj < filled:
			bufs <- buf
			end := int(num) == per
			same := p.PrefixSHA256 == full[obj].PrefixSHA256
			if u.PartDigests && end {
				same = transform.CompositeSHA256(objParts) == full[obj].StoredSHA256
				objParts = objParts[:0]
			}
			if end && !same || last {
				return Result{}, fmt.Errorf("%w: object %s (bytes %d to %d) hashes differently now", ErrStreamChanged, full[obj].Key, total-int64(num)*u.PartSize, total)
			}
		case obj == filled && ok:
			bufs <- buf
			if old.PrefixSHA256 != p.PrefixSHA256 || old.SHA256 != p.SHA256 || old.Size != p.Size {
				return Result{}, fmt.Errorf("%w: part %d (bytes %d to %d) hashes differently now", ErrStreamChanged, num, total-p.Size, total)
			}
		default:
			if err := send(chunk{key: u.current(), uploadID: u.UploadID, part: p, index: i, buf: buf}); err != nil {
				return Result{}, err
			}
		}
		if last {
			break
		}
	}
	if filled > 0 && total <= fullBytes {
		return Result{}, fmt.Errorf("%w: it ends within the objects already filled", ErrStreamChanged)
	}
	for num, p := range saved {
		// A saved part must start within the stream (an empty stream's one
		// empty part starts at its end).
		if start := int64(filled*per+int(num)-1) * u.PartSize; start > total || start == total && p.Size > 0 {
			return Result{}, fmt.Errorf("%w: it ends before part %d (%d bytes uploaded there)", ErrStreamChanged, num, p.Size)
		}
	}
	// Only a zfs send that exited cleanly may complete the object: a killed
	// one just looks like a short stream.
	if err := src.Wait(); err != nil {
		return Result{}, fmt.Errorf("zfs send failed, upload not completed: %w", err)
	}
	res := Result{Bytes: total, parts: parts}
	if !u.PartDigests {
		res.SHA256 = hex.EncodeToString(whole.Sum(nil))
	}
	return res, nil
}

// nextObject records the current object as full, completes it and starts
// the multipart upload of the next. end is the object's last part. Hold
// the lock that guards u, with no part in flight.
func (up *Uploader) nextObject(ctx context.Context, u *Upload, end Part) error {
	if len(u.Parts) != u.partsPerObject() {
		return fmt.Errorf("object %s has %d parts at its end, want %d", u.current(), len(u.Parts), u.partsPerObject())
	}
	f := FullObject{Key: u.current(), PrefixSHA256: end.PrefixSHA256, ETag: MultipartETag(u.Parts), UploadID: u.UploadID, Parts: u.Parts}
	if u.PartDigests {
		sum, err := partsComposite(u.Parts)
		if err != nil {
			return err
		}
		f.StoredSHA256 = sum
	}
	for _, p := range u.Parts {
		f.Bytes += p.Size
	}
	u.Full = append(u.Full, f)
	u.UploadID, u.Parts = "", nil
	if err := up.Save(u); err != nil {
		return fmt.Errorf("save upload state: %w", err)
	}
	if err := up.completeFull(ctx, u, len(u.Full)-1); err != nil {
		return err
	}
	return up.create(ctx, u)
}

// completeFull completes the multipart upload of the filled object i, unless
// an earlier run did. Completing twice is safe: the object is then checked.
func (up *Uploader) completeFull(ctx context.Context, u *Upload, i int) error {
	f := &u.Full[i]
	if f.UploadID == "" {
		return nil
	}
	parts, err := up.Client.listParts(ctx, f.Key, f.UploadID)
	if err == nil && len(parts) == 0 && len(f.Parts) > 0 {
		err = up.goneOrCompleted(f.Key, f.UploadID)
	}
	var etag string
	if errors.Is(err, ErrNotFound) {
		etag, err = up.verifyCompleted(ctx, u, i)
	} else if err == nil {
		etag, err = up.completeObject(ctx, u, i, f.Parts)
	}
	if err != nil {
		return err
	}
	// The ETag the store gave is what checkFull expects from now on: on
	// stores whose ETags are not MD5-based it differs from f.ETag.
	if etag != "" {
		f.ETag = etag
	}
	f.UploadID, f.Parts = "", nil
	return up.Save(u)
}

func (up *Uploader) uploadPart(ctx context.Context, u *Upload, c chunk) (Part, error) {
	p := c.part
	data := c.buf[:p.Size]
	in := &s3.UploadPartInput{
		Bucket: &up.Client.bucket, Key: &c.key, UploadId: &c.uploadID,
		PartNumber: aws.Int32(p.Number), Body: bytes.NewReader(data), ContentLength: aws.Int64(p.Size),
	}
	// With PartDigests the part is hashed here, once: the digest is the
	// request's payload hash, the sha256 checksum, and the ledger's.
	var sum [sha256.Size]byte
	var opts []func(*s3.Options)
	if u.PartDigests {
		sum = sha256.Sum256(data)
		p.SHA256 = hex.EncodeToString(sum[:])
		opts = append(opts, presetPayloadHash(p.SHA256))
	}
	header := u.checksum() // sent in an x-amz-checksum-* header: sha256 or crc32c
	switch header {
	case "sha256":
		if !u.PartDigests {
			sum = sha256.Sum256(data)
		}
		p.Checksum = base64.StdEncoding.EncodeToString(sum[:])
		in.ChecksumSHA256 = aws.String(p.Checksum)
	case "crc32c":
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
		p.Checksum = base64.StdEncoding.EncodeToString(b[:])
		in.ChecksumCRC32C = aws.String(p.Checksum)
	case "md5":
		sum := md5.Sum(data)
		p.Checksum = base64.StdEncoding.EncodeToString(sum[:])
		in.ContentMD5 = aws.String(p.Checksum)
		header = ""
	default:
		header = ""
	}
	if header != "" && up.Client.Caps().ChecksumNotEchoed {
		up.md5Fallback(in, data)
	}
	out, err := up.Client.s3.UploadPart(ctx, in, opts...)
	if err == nil && header != "" && in.ContentMD5 == nil && aws.ToString(out.ChecksumCRC32C) == "" && aws.ToString(out.ChecksumSHA256) == "" {
		// A store that checks the checksum echoes it; one that does not
		// echo it stored the part unchecked (Ceph RGW, rclone). Send the
		// part again with Content-MD5, which such stores do check, and so
		// every later part.
		up.Client.learn(func(c *Caps) *bool { return &c.ChecksumNotEchoed }, "x-amz-checksum-"+header+" is not echoed, so not checked")
		up.md5Fallback(in, data)
		in.Body = bytes.NewReader(data)
		out, err = up.Client.s3.UploadPart(ctx, in, opts...)
	}
	if err != nil {
		return Part{}, wrap(fmt.Sprintf("upload part %d of", p.Number), c.key, err)
	}
	p.ETag = etagOf(out.ETag)
	return p, nil
}

// md5Fallback adds Content-MD5 to a part whose CRC32C the store ignores,
// and says so once.
func (up *Uploader) md5Fallback(in *s3.UploadPartInput, data []byte) {
	up.Client.md5Once.Do(func() {
		slog.Warn("the store does not echo the x-amz-checksum header, so it does not check it; parts also carry Content-MD5 from now on (or use --checksum md5 for this store)", "bucket", up.Client.bucket)
	})
	sum := md5.Sum(data)
	in.ContentMD5 = aws.String(base64.StdEncoding.EncodeToString(sum[:]))
}

func insertPart(parts []Part, p Part) []Part {
	i := sort.Search(len(parts), func(i int) bool { return parts[i].Number >= p.Number })
	if i < len(parts) && parts[i].Number == p.Number {
		parts[i] = p
		return parts
	}
	parts = append(parts, Part{})
	copy(parts[i+1:], parts[i:])
	parts[i] = p
	return parts
}

// checkFull checks that the objects filled earlier are still in the
// bucket as they were completed, so that an edge whose first objects were
// deleted meanwhile is never recorded.
func (up *Uploader) checkFull(ctx context.Context, u *Upload) error {
	for i := range u.Full {
		if _, err := up.verifyCompleted(ctx, u, i); err != nil {
			return err
		}
	}
	return nil
}

// complete records the totals, then completes the last object.
func (up *Uploader) complete(ctx context.Context, u *Upload, res Result) error {
	if err := up.checkFull(ctx, u); err != nil {
		return err
	}
	u.Completing, u.StreamBytes, u.SHA256 = true, res.Bytes, res.SHA256
	if err := up.Save(u); err != nil {
		return fmt.Errorf("save upload state: %w", err)
	}
	_, err := up.completeObject(ctx, u, len(u.Full), u.Parts)
	return err
}

// completeObject completes the multipart upload of object i of u
// (len(u.Full): the current one) from parts, and returns its ETag.
func (up *Uploader) completeObject(ctx context.Context, u *Upload, i int, parts []Part) (string, error) {
	key, uploadID := u.current(), u.UploadID
	if i < len(u.Full) {
		key, uploadID = u.Full[i].Key, u.Full[i].UploadID
	}
	var cps []types.CompletedPart
	for _, p := range parts {
		cp := types.CompletedPart{PartNumber: aws.Int32(p.Number), ETag: aws.String(p.ETag)}
		switch u.checksum() {
		case "crc32c":
			cp.ChecksumCRC32C = aws.String(p.Checksum)
		case "sha256":
			cp.ChecksumSHA256 = aws.String(p.Checksum)
		}
		cps = append(cps, cp)
	}
	// A stream object is only ever created, never overwritten: completed
	// with If-None-Match: *, which a backup host's policy on AWS demands
	// (zfs2s3 policy host). Where that is refused (an object is already
	// there that is not this upload's, or a store that does not take the
	// header here), it is completed once more without it, as before:
	// credentials that may overwrite do, a host's get AccessDenied.
	var err error
	for _, conditional := range []bool{true, false} {
		in := &s3.CompleteMultipartUploadInput{
			Bucket: &up.Client.bucket, Key: &key, UploadId: &uploadID,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: cps},
		}
		if conditional {
			in.IfNoneMatch = aws.String("*")
		}
		var out *s3.CompleteMultipartUploadOutput
		out, err = up.Client.s3.CompleteMultipartUpload(ctx, in)
		if err == nil {
			return etagOf(out.ETag), nil
		}
		if etag, verr := up.verifyCompleted(ctx, u, i); verr == nil {
			// The server completed it and the answer was lost (a cut
			// connection, or a retry that found the upload already gone),
			// or a 412 for the object an earlier attempt completed.
			return etag, nil
		}
		if !conditional || !conditionRefused(err) {
			break
		}
		slog.Info("completing without If-None-Match", "key", key, "error", err)
	}
	return "", wrap("complete multipart upload", key, err)
}

// conditionRefused reports whether a conditional write was refused for its
// condition: 412 (the object exists), 409 (a conflicting write), or a
// store that does not implement the header on this request.
func conditionRefused(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode() {
	case "PreconditionFailed", "ConditionalRequestConflict", "NotImplemented":
		return true
	}
	return false
}

// verifyCompleted checks that object i of u (len(u.Full): the current one)
// is the completed one, and returns its ETag. Its size must be the
// upload's; its ETag should be the MD5 of the parts' MD5s (or, for a
// filled object, the ETag the store gave when it completed it). Stores
// whose ETags are made otherwise (rclone, versitygw) are not taken at
// their ETag: the object is read back and must hash to the digest
// recorded while uploading (with PartDigests, the object's own stored
// digest; without, the SHA-256 of the stream up to its end).
func (up *Uploader) verifyCompleted(ctx context.Context, u *Upload, i int) (string, error) {
	key, size, etag, want := u.current(), u.StreamBytes-u.fullBytes(), MultipartETag(u.Parts), u.SHA256
	if i < len(u.Full) {
		f := u.Full[i]
		key, size, etag, want = f.Key, f.Bytes, f.ETag, f.PrefixSHA256
		if u.PartDigests {
			want = f.StoredSHA256
		}
	} else if u.PartDigests {
		sum, err := partsComposite(u.Parts)
		if err != nil {
			return "", err
		}
		want = sum
	}
	obj, err := up.Client.Head(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("%w: object %q is missing", ErrObjectLost, key)
	}
	if err != nil {
		return "", fmt.Errorf("check the completed object: %w", err)
	}
	if obj.Size != size {
		return "", fmt.Errorf("%w: object %q has %d bytes, the upload had %d", ErrObjectLost, key, obj.Size, size)
	}
	if etag != "" && obj.ETag == etag {
		return obj.ETag, nil
	}
	slog.Info("the object's ETag is not the MD5 of its parts' MD5s; reading it back to check its digest", "key", key, "etag", obj.ETag, "parts_give", etag)
	got, err := up.hashObjects(ctx, u, i)
	if err != nil {
		return "", fmt.Errorf("read back object %q to check it: %w", key, err)
	}
	if got != want {
		return "", fmt.Errorf("%w: object %q does not hold what was uploaded (its digest read back is %s, the upload's %s)", ErrObjectLost, key, got, want)
	}
	up.Client.learn(func(c *Caps) *bool { return &c.ETagNotMD5 }, "multipart ETags are not the MD5 of the parts' MD5s")
	return obj.ETag, nil
}

// hashObjects reads back object i of u and returns its stored digest
// (transform.CompositeSHA256 of its parts) with PartDigests; without, the
// SHA-256 of u's stream from its start to the end of object i.
func (up *Uploader) hashObjects(ctx context.Context, u *Upload, i int) (string, error) {
	var h interface {
		io.Writer
		sum() string
	} = wholeHash{sha256.New()}
	first := 0
	if u.PartDigests {
		h, first = storedHash{transform.NewStoredHash(u.PartSize)}, i
	}
	for j := first; j <= i; j++ {
		key, size := u.current(), u.StreamBytes-u.fullBytes()
		if j < len(u.Full) {
			key, size = u.Full[j].Key, u.Full[j].Bytes
		}
		r := up.Client.Open(ctx, key, size)
		n, err := io.Copy(h, r)
		r.Close()
		if err != nil {
			return "", err
		}
		if n != size {
			return "", fmt.Errorf("s3 key %q: read %d bytes, want %d", key, n, size)
		}
	}
	return h.sum(), nil
}

type wholeHash struct{ hash.Hash }

func (w wholeHash) sum() string { return hex.EncodeToString(w.Sum(nil)) }

type storedHash struct{ *transform.StoredHash }

func (s storedHash) sum() string { return s.Sum() }

// MultipartETag is the ETag S3 gives an object made of parts: the MD5 of
// the parts' binary MD5s, a dash, and the part count.
//
// It is "" when a part's ETag is not an MD5 (versitygw's, for one): the
// object's ETag is then unknown, not the MD5 of nothing.
func MultipartETag(parts []Part) string {
	h := md5.New()
	for _, p := range parts {
		b, err := hex.DecodeString(p.ETag)
		if err != nil || len(b) != md5.Size {
			return ""
		}
		h.Write(b)
	}
	return fmt.Sprintf("%x-%d", h.Sum(nil), len(parts))
}
