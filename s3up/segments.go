package s3up

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strconv"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/transform"
)

// Metadata keys of a transformed stream's objects (transform/FORMAT.md):
// with them ledger rebuild knows from the bucket alone that the objects of
// a key are one transformed stream, and how to read it.
const (
	MetaTransform   = "zfs2s3-transform"
	MetaSegment     = "zfs2s3-segment"
	MetaSegmentSize = "zfs2s3-segment-size"
)

// RunSegments uploads a transformed stream (u.Transformed): the plaintext
// that open returns is cut, compressed and encrypted by seg into one
// object per segment (ledger.SegmentKey(u.Key, i)), each its own multipart
// upload. Segments an earlier run finished (u.Done) are re-read and proved
// by their plaintext digests, never uploaded again. A segment whose
// completion was under way (u.Finishing) is adopted if its object is in
// the bucket, or completed again from its saved parts (resumeFinishing).
// Otherwise the multipart upload of the segment that was in flight is
// aborted, as it was encrypted under a file key nobody kept, and that
// segment starts over. A run that finished every segment (u.Completing)
// returns at once, without open.
func (up *Uploader) RunSegments(ctx context.Context, u *Upload, seg *transform.Segmenter, open func() (Source, error)) (transform.Result, error) {
	if u.Completing {
		sum, err := transform.StreamSHA256(u.Done)
		return transform.Result{Segments: u.Done, PlainBytes: u.StreamBytes, StreamSHA256: sum}, err
	}
	if u.Finishing != nil {
		if err := up.resumeFinishing(ctx, u); err != nil {
			return transform.Result{}, err
		}
	}
	if u.UploadID != "" {
		if err := up.Client.Abort(ctx, u.current(), u.UploadID); err != nil {
			return transform.Result{}, err
		}
		u.UploadID, u.Parts = "", nil
		if err := up.Save(u); err != nil {
			return transform.Result{}, fmt.Errorf("save upload state: %w", err)
		}
	}
	src, err := open()
	if err != nil {
		return transform.Result{}, err
	}
	defer src.Close()
	s := *seg
	s.Check = src.Wait
	var sink *segmentSink
	res, err := s.Run(ctx, src, u.Done, func(i int) (transform.Sink, error) {
		if i != len(u.Done) {
			return nil, fmt.Errorf("segment %d opened after %d finished ones", i, len(u.Done))
		}
		sink = &segmentSink{up: up, ctx: ctx, u: u}
		return sink, sink.create()
	})
	if err != nil {
		if sink != nil {
			sink.abort()
		}
		if errors.Is(err, transform.ErrStreamChanged) {
			err = fmt.Errorf("%w (%w)", ErrStreamChanged, err)
		}
		return transform.Result{}, err
	}
	u.Completing, u.StreamBytes, u.SHA256 = true, res.PlainBytes, res.StreamSHA256
	if err := up.Save(u); err != nil {
		return transform.Result{}, fmt.Errorf("save upload state: %w", err)
	}
	return res, nil
}

// segmentSink is one segment's multipart upload: it cuts the stored bytes
// into parts of u.PartSize and uploads them, up to the uploader's
// concurrency at once. Each part is hashed once with SHA-256; that digest
// is the checksum S3 verifies (x-amz-checksum-sha256) and, combined, the
// segment's stored digest (transform.CompositeSHA256).
type segmentSink struct {
	up  *Uploader
	ctx context.Context
	u   *Upload

	key, uploadID string
	buf           []byte
	bufs          chan []byte
	wg            sync.WaitGroup
	mu            sync.Mutex
	parts         []Part
	digests       map[int32][sha256.Size]byte
	err           error
	next          int32
	// finishing: the segment's CompleteMultipartUpload may have been sent
	// (u.Finishing is saved), so its upload must not be aborted: the object
	// may exist, and only a resume can tell. finished: it is done.
	finishing, finished bool
}

// create starts the segment's multipart upload, after aborting any that a
// crash left at its key (their UploadId may never have been saved).
func (s *segmentSink) create() error {
	u := s.u
	s.key = u.current()
	if n, err := s.up.Client.AbortAll(s.ctx, s.key); err != nil {
		return err
	} else if n > 0 {
		slog.Info("aborted multipart uploads left by an earlier crash", "key", s.key, "count", n)
	}
	meta := maps.Clone(u.Metadata)
	if meta == nil {
		meta = map[string]string{}
	}
	meta[MetaSegment] = strconv.Itoa(len(u.Done))
	in := &s3.CreateMultipartUploadInput{
		Bucket: &s.up.Client.bucket, Key: &s.key, Metadata: meta,
		StorageClass: types.StorageClass(u.StorageClass),
		ContentType:  aws.String("application/octet-stream"),
	}
	if u.segmentSHA256() {
		in.ChecksumAlgorithm = types.ChecksumAlgorithmSha256
	}
	lockMultipart(in, u.Lock)
	out, err := s.up.Client.s3.CreateMultipartUpload(s.ctx, in)
	if err != nil {
		return wrap("create multipart upload", s.key, err)
	}
	s.uploadID = aws.ToString(out.UploadId)
	u.UploadID, u.Parts = s.uploadID, nil
	if err := s.up.Save(u); err != nil {
		return fmt.Errorf("save upload state: %w", err)
	}
	n := max(s.up.Concurrency, 1)
	s.bufs = make(chan []byte, n+1)
	for i := 0; i <= n; i++ {
		s.bufs <- nil // allocated on first use, so small segments stay small
	}
	s.digests = map[int32][sha256.Size]byte{}
	return nil
}

// Write fills part buffers and hands full ones to uploaders.
func (s *segmentSink) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if err := s.failed(); err != nil {
			return n - len(p), err
		}
		if s.buf == nil {
			select {
			case b := <-s.bufs:
				if b == nil {
					b = make([]byte, 0, s.u.PartSize)
				}
				s.buf = b[:0]
			case <-s.ctx.Done():
				return n - len(p), s.ctx.Err()
			}
		}
		take := min(len(p), int(s.u.PartSize)-len(s.buf))
		s.buf = append(s.buf, p[:take]...)
		p = p[take:]
		if len(s.buf) == int(s.u.PartSize) {
			s.send()
		}
	}
	return n, nil
}

func (s *segmentSink) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// send uploads the current buffer as the next part, in the background.
func (s *segmentSink) send() {
	s.next++
	num, data := s.next, s.buf
	s.buf = nil
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		p, sum, err := s.uploadPart(num, data)
		s.bufs <- data[:0]
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			if s.err == nil {
				s.err = err
			}
			return
		}
		s.parts = insertPart(s.parts, p)
		s.digests[num] = sum
		if s.up.Progress != nil {
			var done int64
			for _, d := range s.u.Done {
				done += d.StoredBytes
			}
			for _, q := range s.parts {
				done += q.Size
			}
			s.up.Progress(Progress{Done: done})
		}
	}()
}

// uploadPart sends one part with its SHA-256 (or MD5, per u.Checksum).
func (s *segmentSink) uploadPart(num int32, data []byte) (Part, [sha256.Size]byte, error) {
	sum := sha256.Sum256(data)
	in := &s3.UploadPartInput{
		Bucket: &s.up.Client.bucket, Key: &s.key, UploadId: &s.uploadID,
		PartNumber: aws.Int32(num), Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
	}
	p := Part{Number: num, Size: int64(len(data))}
	switch s.u.checksum() {
	case "sha256", "crc32c":
		p.Checksum = base64.StdEncoding.EncodeToString(sum[:])
		in.ChecksumSHA256 = aws.String(p.Checksum)
		if s.up.Client.Caps().ChecksumNotEchoed {
			s.up.md5Fallback(in, data)
		}
	case "md5":
		m := md5.Sum(data)
		p.Checksum = base64.StdEncoding.EncodeToString(m[:])
		in.ContentMD5 = aws.String(p.Checksum)
	}
	hashed := presetPayloadHash(hex.EncodeToString(sum[:]))
	out, err := s.up.Client.s3.UploadPart(s.ctx, in, hashed)
	if err == nil && in.ChecksumSHA256 != nil && in.ContentMD5 == nil && aws.ToString(out.ChecksumSHA256) == "" {
		// As for CRC32C (uploadPart): a store that does not echo the
		// checksum did not check it; Content-MD5 it does check.
		s.up.Client.learn(func(c *Caps) *bool { return &c.ChecksumNotEchoed }, "x-amz-checksum-sha256 is not echoed, so not checked")
		s.up.md5Fallback(in, data)
		in.Body = bytes.NewReader(data)
		out, err = s.up.Client.s3.UploadPart(s.ctx, in, hashed)
	}
	if err != nil {
		return Part{}, sum, wrap(fmt.Sprintf("upload part %d of", num), s.key, err)
	}
	p.ETag = etagOf(out.ETag)
	return p, sum, nil
}

// presetPayloadHash gives SigV4 the part's SHA-256, already computed for
// the checksum header and the stored digest, so that the SDK does not hash
// the part a second time. Over HTTPS, where the SDK would send
// UNSIGNED-PAYLOAD, the payload is then signed too: at no cost, and a part
// changed after TLS is refused even with --checksum none.
func presetPayloadHash(hexSum string) func(*s3.Options) {
	const computeID = "ComputePayloadHash" // aws/signer/v4's middleware
	return func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			if _, ok := st.Finalize.Get(computeID); !ok {
				return nil
			}
			return st.Finalize.Insert(middleware.FinalizeMiddlewareFunc("zfs2s3PresetPayloadHash",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
					return next.HandleFinalize(v4.SetPayloadHash(ctx, hexSum), in)
				}), computeID, middleware.Before)
		})
	}
}

// Finish uploads the last part, completes the object and records the
// segment as done in the upload state: from then on a resume skips it.
// The record and parts are saved before the completion (u.Finishing), so
// that a crash or a failed save after it leaves a state from which a
// resume recognises the completed object (resumeFinishing).
func (s *segmentSink) Finish(rec transform.Record) (string, error) {
	if len(s.buf) > 0 || s.next == 0 {
		if s.buf == nil {
			s.buf = []byte{}
		}
		s.send()
	}
	s.wg.Wait()
	if err := s.failed(); err != nil {
		return "", err
	}
	digests := make([][sha256.Size]byte, 0, len(s.parts))
	for _, p := range s.parts {
		digests = append(digests, s.digests[p.Number])
	}
	if len(s.parts) != int(s.next) {
		return "", fmt.Errorf("segment %s: %d parts uploaded of %d", s.key, len(s.parts), s.next)
	}
	stored := transform.CompositeSHA256(digests)
	rec.StoredSHA256 = stored
	s.u.Parts, s.u.Finishing = append([]Part(nil), s.parts...), &rec
	if err := s.up.Save(s.u); err != nil {
		return "", fmt.Errorf("save upload state: %w", err)
	}
	s.finishing = true
	if err := s.up.completeSegment(s.ctx, s.u, s.key, s.uploadID, rec, s.parts); err != nil {
		return "", err
	}
	s.finished = true
	s.u.Done = append(s.u.Done, rec)
	s.u.UploadID, s.u.Parts, s.u.Finishing = "", nil, nil
	if err := s.up.Save(s.u); err != nil {
		return "", fmt.Errorf("save upload state: %w", err)
	}
	return stored, nil
}

// completeSegment completes the multipart upload of segment rec at key
// from parts, with If-None-Match: * first, as completeObject does. A lost
// answer (or a 412 for the object an earlier attempt completed) is
// recognised by segmentAt.
func (up *Uploader) completeSegment(ctx context.Context, u *Upload, key, uploadID string, rec transform.Record, parts []Part) error {
	var cps []types.CompletedPart
	for _, p := range parts {
		cp := types.CompletedPart{PartNumber: aws.Int32(p.Number), ETag: aws.String(p.ETag)}
		if u.segmentSHA256() {
			cp.ChecksumSHA256 = aws.String(p.Checksum)
		}
		cps = append(cps, cp)
	}
	var err error
	for _, conditional := range []bool{true, false} {
		in := &s3.CompleteMultipartUploadInput{
			Bucket: &up.Client.bucket, Key: &key, UploadId: &uploadID,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: cps},
		}
		if conditional {
			in.IfNoneMatch = aws.String("*")
		}
		_, err = up.Client.s3.CompleteMultipartUpload(ctx, in)
		if err == nil {
			return nil
		}
		if _, found, same, verr := up.segmentAt(ctx, u, key, rec, parts); verr == nil && found && same {
			return nil // completed, and the answer was lost
		}
		if !conditional || !conditionRefused(err) {
			break
		}
		slog.Info("completing without If-None-Match", "key", key, "error", err)
	}
	return wrap("complete multipart upload", key, err)
}

// segmentAt looks at the object at key and reports whether it is segment
// rec as uploaded from parts: its size must be rec.StoredBytes, and its
// ETag the MD5 of the parts' MD5s. Where the ETag is another (other
// bytes, or a store that makes ETags otherwise: versitygw, rclone), the
// object is read back instead, cut into parts of u.PartSize as it was
// uploaded, and must hash to rec.StoredSHA256. obj is
// what HeadObject said; found is false when there is no object at key.
func (up *Uploader) segmentAt(ctx context.Context, u *Upload, key string, rec transform.Record, parts []Part) (obj Object, found, same bool, err error) {
	obj, err = up.Client.Head(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return obj, false, false, nil
	}
	if err != nil {
		return obj, false, false, fmt.Errorf("check segment %d: %w", rec.Index, err)
	}
	if obj.Size != rec.StoredBytes {
		return obj, true, false, nil
	}
	etag := MultipartETag(parts)
	if etag != "" && obj.ETag == etag {
		return obj, true, true, nil // the MD5s of these very parts
	}
	// Another ETag: other bytes (a redo of the segment under a new age
	// key has the same size), or a store whose multipart ETags only look
	// like MD5s of MD5s. The stored digest decides.
	if u.PartSize <= 0 {
		return obj, true, false, fmt.Errorf("check segment %d at s3 key %q: the upload state has no part size", rec.Index, key)
	}
	slog.Info("the object's ETag is not the one of its parts; reading it back to check its stored digest", "key", key, "etag", obj.ETag, "parts_give", etag)
	h := transform.NewStoredHash(u.PartSize)
	r := up.Client.Open(ctx, key, obj.Size)
	n, err := io.Copy(h, r)
	r.Close()
	if err == nil && n != obj.Size {
		err = fmt.Errorf("read %d bytes, want %d", n, obj.Size)
	}
	if err != nil {
		return obj, true, false, fmt.Errorf("read back s3 key %q to check it: %w", key, err)
	}
	if h.Sum() != rec.StoredSHA256 {
		return obj, true, false, nil
	}
	if etag != "" {
		up.Client.learn(func(c *Caps) *bool { return &c.ETagNotMD5 }, "multipart ETags are not the MD5 of the parts' MD5s")
	}
	return obj, true, true, nil
}

// resumeFinishing settles the segment whose completion a crash (or a
// failed save) interrupted: u.Finishing, with its parts and UploadID. If
// its object is in the bucket it is adopted as done; if not, but the
// multipart upload still holds the saved parts, it is completed again;
// if neither, the segment is redone (RunSegments aborts what is left). An
// object at the key that is not this segment is an error, never
// overwritten: it is what makes a redo fail forever on a store or policy
// that refuses overwrites.
func (up *Uploader) resumeFinishing(ctx context.Context, u *Upload) error {
	rec, key := *u.Finishing, u.current()
	if rec.Index != len(u.Done) {
		return fmt.Errorf("upload state: the segment being completed is %d, after %d finished ones; the state file was edited or damaged", rec.Index, len(u.Done))
	}
	obj, found, same, err := up.segmentAt(ctx, u, key, rec, u.Parts)
	if err != nil {
		return err
	}
	if found && !same {
		return fmt.Errorf("%w: s3 key %q holds %d bytes with ETag %s, which are not segment %d of this upload (%d bytes, stored SHA-256 %s); it was left as it is: check who wrote it, then run zfs2s3 abort_upload to give the upload up (which deletes that object)", ErrObjectLost, key, obj.Size, obj.ETag, rec.Index, rec.StoredBytes, rec.StoredSHA256)
	}
	if !found && u.UploadID != "" {
		parts, err := up.Client.listParts(ctx, key, u.UploadID)
		if err == nil && len(parts) == 0 && len(u.Parts) > 0 {
			err = up.goneOrCompleted(key, u.UploadID) // and the object is not there
		}
		switch {
		case err == nil && len(reconcile(u.Parts, parts)) == len(u.Parts):
			slog.Info("completing the segment an earlier run was completing", "key", key, "segment", rec.Index)
			if err := up.completeSegment(ctx, u, key, u.UploadID, rec, u.Parts); err != nil {
				return fmt.Errorf("%w (completing segment %d again, as the run that was killed did; run zfs2s3 resume_upload again, or abort_upload to give the upload up)", err, rec.Index)
			}
			found = true
		case err == nil:
			slog.Warn("the multipart upload of the segment being completed lacks some of its parts; that segment is uploaded again", "key", key, "segment", rec.Index)
		case !errors.Is(err, ErrNotFound):
			return err
		}
	}
	if !found {
		slog.Warn("the segment being completed is neither in the bucket nor completable; uploading it again", "key", key, "segment", rec.Index)
		u.Finishing = nil
		if err := up.Save(u); err != nil {
			return fmt.Errorf("save upload state: %w", err)
		}
		return nil
	}
	slog.Info("adopted the segment an earlier run completed", "key", key, "segment", rec.Index)
	u.Done = append(u.Done, rec)
	u.UploadID, u.Parts, u.Finishing = "", nil, nil
	if err := up.Save(u); err != nil {
		return fmt.Errorf("save upload state: %w", err)
	}
	return nil
}

// abort drops an unfinished segment's multipart upload (best effort: a
// later resume or abort_upload aborts it too).
func (s *segmentSink) abort() {
	if s.finished || s.finishing || s.uploadID == "" {
		return
	}
	s.wg.Wait()
	ctx := context.WithoutCancel(s.ctx)
	if err := s.up.Client.Abort(ctx, s.key, s.uploadID); err != nil {
		slog.Warn("could not abort the multipart upload of an unfinished segment; resume_upload or abort_upload will", "key", s.key, "error", err)
		return
	}
	s.u.UploadID, s.u.Parts, s.u.Finishing = "", nil, nil
	if err := s.up.Save(s.u); err != nil {
		slog.Warn("save upload state", "error", err)
	}
}

// segmentSHA256 reports whether a transformed upload's parts carry
// x-amz-checksum-sha256: for --checksum sha256 and, as since segments
// began, crc32c (each part's SHA-256 is computed anyway).
func (u *Upload) segmentSHA256() bool {
	c := u.checksum()
	return c == "sha256" || c == "crc32c"
}

// segmentKeys lists the keys of a transformed upload's finished segments
// and the one in flight.
func (u *Upload) segmentKeys() []string {
	keys := make([]string, 0, len(u.Done)+1)
	for i := range u.Done {
		keys = append(keys, ledger.SegmentKey(u.Key, i))
	}
	if !u.Completing {
		keys = append(keys, u.current())
	}
	return keys
}
