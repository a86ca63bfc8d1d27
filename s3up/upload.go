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
	"hash/crc32"
	"io"
	"log/slog"
	"sort"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// S3's multipart limits.
const (
	MinPartSize = 5 << 20
	MaxPartSize = 5 << 30
	MaxParts    = 10000
)

// Part is one finished part.
type Part struct {
	Number   int32  `yaml:"number"`
	Size     int64  `yaml:"size"`
	ETag     string `yaml:"etag"`
	Checksum string `yaml:"checksum"` // base64 CRC32C or MD5 of the part, per Upload.Checksum
	// PrefixSHA256 is the SHA-256 of the stream from its first byte to the
	// end of this part. The whole stream is hashed once, in order; on resume
	// the re-read stream must reach the same value at each uploaded part.
	PrefixSHA256 string `yaml:"prefix_sha256"`
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
}

// Checksums S3 verifies on every part: CRC32C (the default, cheap to
// compute, carried into CompleteMultipartUpload), MD5 as Content-MD5 for
// stores that reject the newer checksum headers (Backblaze B2, some Ceph),
// or none (then only the SigV4 signature, on plain HTTP, or TLS guards it).
var Checksums = []string{"crc32c", "md5", "none"}

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

// Result describes a completed object.
type Result struct {
	Bytes  int64
	SHA256 string // hex, of the whole object
}

// ErrStreamChanged means the re-read stream differs from what was uploaded.
var ErrStreamChanged = errors.New("the zfs send stream differs from the parts already uploaded")

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
	if u.UploadID != "" {
		parts, err := up.Client.listParts(ctx, u.Key, u.UploadID)
		if errors.Is(err, ErrNotFound) {
			if u.Completing {
				return true, up.verifyCompleted(ctx, u)
			}
			slog.Warn("multipart upload is gone from the bucket; starting it again", "key", u.Key, "upload_id", u.UploadID)
			u.UploadID, u.Parts = "", nil
		} else if err != nil {
			return false, err
		} else {
			u.Parts = reconcile(u.Parts, parts)
			return false, up.Save(u)
		}
	}
	// A crash between CreateMultipartUpload and saving its UploadId leaves an
	// upload no state knows; it holds no parts yet, so aborting loses nothing.
	if n, err := up.Client.AbortAll(ctx, u.Key); err != nil {
		return false, err
	} else if n > 0 {
		slog.Info("aborted multipart uploads left by an earlier crash", "key", u.Key, "count", n)
	}
	in := &s3.CreateMultipartUploadInput{
		Bucket: &up.Client.bucket, Key: &u.Key, Metadata: u.Metadata,
		StorageClass: types.StorageClass(u.StorageClass),
		ContentType:  aws.String("application/octet-stream"),
	}
	if u.checksum() == "crc32c" {
		in.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32c
	}
	out, err := up.Client.s3.CreateMultipartUpload(ctx, in)
	if err != nil {
		return false, wrap("create multipart upload", u.Key, err)
	}
	u.UploadID, u.Parts, u.Completing = aws.ToString(out.UploadId), nil, false
	return false, up.Save(u)
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
	part Part
	buf  []byte
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
	var mu sync.Mutex
	var doneBytes int64
	var inFlight int
	report := func() { // hold mu
		if up.Progress != nil {
			up.Progress(Progress{Done: doneBytes, InFlight: inFlight})
		}
	}
	for _, p := range u.Parts {
		doneBytes += p.Size
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
			}
		}()
	}
	res, readErr := up.read(ctx, u, src, bufs, work)
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && readErr == nil {
		readErr = err
	}
	return res, readErr
}

// read splits src into parts and sends the missing ones to work.
func (up *Uploader) read(ctx context.Context, u *Upload, src Source, bufs chan []byte, work chan<- chunk) (Result, error) {
	// u.Parts grows as workers finish; decide from what was there at the start.
	saved := map[int32]Part{}
	for _, p := range u.Parts {
		saved[p.Number] = p
	}
	whole := sha256.New()
	var total int64
	var buf []byte
	for num := int32(1); ; num++ {
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
		if size == 0 && num > 1 {
			bufs <- buf
			if p, ok := saved[num]; ok {
				return Result{}, fmt.Errorf("%w: it ends before part %d (%d bytes uploaded there)", ErrStreamChanged, num, p.Size)
			}
			break
		}
		if num > MaxParts {
			return Result{}, fmt.Errorf("stream is larger than %d parts of %d bytes; set a larger --part-size", MaxParts, u.PartSize)
		}
		data := buf[:size]
		whole.Write(data)
		total += int64(size)
		p := Part{Number: num, Size: int64(size), PrefixSHA256: hex.EncodeToString(whole.Sum(nil))}
		if old, ok := saved[num]; ok {
			bufs <- buf
			if old.PrefixSHA256 != p.PrefixSHA256 || old.Size != p.Size {
				return Result{}, fmt.Errorf("%w: part %d (bytes %d to %d) hashes differently now", ErrStreamChanged, num, int64(num-1)*u.PartSize, int64(num-1)*u.PartSize+p.Size)
			}
		} else {
			select {
			case work <- chunk{part: p, buf: buf}:
			case <-ctx.Done():
				return Result{}, context.Cause(ctx)
			}
		}
		if last {
			break
		}
	}
	for num, p := range saved {
		if int64(num-1)*u.PartSize >= total {
			return Result{}, fmt.Errorf("%w: it ends before part %d (%d bytes uploaded there)", ErrStreamChanged, num, p.Size)
		}
	}
	// Only a zfs send that exited cleanly may complete the object: a killed
	// one just looks like a short stream.
	if err := src.Wait(); err != nil {
		return Result{}, fmt.Errorf("zfs send failed, upload not completed: %w", err)
	}
	return Result{Bytes: total, SHA256: hex.EncodeToString(whole.Sum(nil))}, nil
}

func (up *Uploader) uploadPart(ctx context.Context, u *Upload, c chunk) (Part, error) {
	p := c.part
	data := c.buf[:p.Size]
	in := &s3.UploadPartInput{
		Bucket: &up.Client.bucket, Key: &u.Key, UploadId: &u.UploadID,
		PartNumber: aws.Int32(p.Number), Body: bytes.NewReader(data), ContentLength: aws.Int64(p.Size),
	}
	switch u.checksum() {
	case "crc32c":
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
		p.Checksum = base64.StdEncoding.EncodeToString(b[:])
		in.ChecksumCRC32C = aws.String(p.Checksum)
	case "md5":
		sum := md5.Sum(data)
		p.Checksum = base64.StdEncoding.EncodeToString(sum[:])
		in.ContentMD5 = aws.String(p.Checksum)
	}
	out, err := up.Client.s3.UploadPart(ctx, in)
	if err != nil {
		return Part{}, wrap(fmt.Sprintf("upload part %d of", p.Number), u.Key, err)
	}
	p.ETag = etagOf(out.ETag)
	return p, nil
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

// complete records the totals, then completes the multipart upload.
func (up *Uploader) complete(ctx context.Context, u *Upload, res Result) error {
	u.Completing, u.StreamBytes, u.SHA256 = true, res.Bytes, res.SHA256
	if err := up.Save(u); err != nil {
		return fmt.Errorf("save upload state: %w", err)
	}
	var parts []types.CompletedPart
	for _, p := range u.Parts {
		cp := types.CompletedPart{PartNumber: aws.Int32(p.Number), ETag: aws.String(p.ETag)}
		if u.checksum() == "crc32c" {
			cp.ChecksumCRC32C = aws.String(p.Checksum)
		}
		parts = append(parts, cp)
	}
	_, err := up.Client.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &up.Client.bucket, Key: &u.Key, UploadId: &u.UploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil && up.verifyCompleted(ctx, u) == nil {
		// The server completed it and the answer was lost (a cut connection,
		// or a retry that found the upload already gone).
		return nil
	}
	return wrap("complete multipart upload", u.Key, err)
}

// verifyCompleted checks that the object at u.Key is the one u describes:
// the size and the multipart ETag derived from the saved parts must match.
func (up *Uploader) verifyCompleted(ctx context.Context, u *Upload) error {
	obj, err := up.Client.Head(ctx, u.Key)
	if err != nil {
		return fmt.Errorf("upload was being completed but the object is missing: %w; run abort_upload and upload again", err)
	}
	if obj.Size != u.StreamBytes {
		return fmt.Errorf("object %q has %d bytes, the upload had %d; run abort_upload and upload again", u.Key, obj.Size, u.StreamBytes)
	}
	if want := MultipartETag(u.Parts); obj.ETag != want {
		return fmt.Errorf("object %q has ETag %s, the upload's parts give %s; run abort_upload and upload again", u.Key, obj.ETag, want)
	}
	return nil
}

// MultipartETag is the ETag S3 gives an object made of parts: the MD5 of
// the parts' binary MD5s, a dash, and the part count.
func MultipartETag(parts []Part) string {
	h := md5.New()
	for _, p := range parts {
		b, _ := hex.DecodeString(p.ETag)
		h.Write(b)
	}
	return fmt.Sprintf("%x-%d", h.Sum(nil), len(parts))
}
