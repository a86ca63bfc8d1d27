// Package s3up stores zfs send streams in S3 as resumable multipart uploads.
//
// The AWS SDK's upload managers cannot continue an existing UploadId, so this
// package drives CreateMultipartUpload, UploadPart, ListParts and
// CompleteMultipartUpload itself and hands its progress to a save callback
// after every step, which is what makes a crash at any point resumable.
package s3up

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
)

// Config says where the bucket is. Credentials come from the SDK's chain.
type Config struct {
	Bucket   string
	Endpoint string // S3-compatible endpoint URL; empty for AWS
	Region   string
	Profile  string
}

// Client is the narrow S3 surface zfs2s3 uses, bound to one bucket.
type Client struct {
	s3       *s3.Client
	bucket   string
	endpoint string

	capsMu  sync.Mutex // guards caps and onLearn
	caps    Caps
	onLearn func(Caps)
	md5Once sync.Once // the Content-MD5 fallback is announced once
}

// NewClient builds a client from cfg and the SDK's standard configuration.
func NewClient(ctx context.Context, cfg Config) (*Client, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithLogger(logging.Nop{}), // errors reach the user as one line, with context
		config.WithRetryer(func() aws.Retryer {
			// Exponential backoff with jitter on 5xx, SlowDown, resets and
			// timeouts; no retry quota, so a long upload through a bad night
			// keeps retrying each request up to MaxAttempts. An endpoint
			// that was never reached is not retried (see dialer).
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = maxAttempts()
				o.RateLimiter = ratelimit.None
				o.Retryables = append(append([]retry.IsErrorRetryable{noRetryUnreachable}, o.Retryables...), retryTruncated)
			})
		}),
		// A BuildableClient, so that the SDK can still add AWS_CA_BUNDLE.
		config.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			dial := tr.DialContext
			if dial == nil {
				dial = (&net.Dialer{Timeout: awshttp.DefaultDialConnectTimeout, KeepAlive: awshttp.DefaultDialKeepAliveTimeout}).DialContext
			}
			tr.DialContext = (&dialer{dial: dial}).DialContext
		})),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(cfg.Profile))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1" // S3-compatible servers rarely care; AWS needs one
	}
	// The SDK's default CRC32 headers are rejected by B2, Ceph and others; we
	// send our own precomputed CRC32C on every part instead.
	awsCfg.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	awsCfg.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	c := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
			o.UsePathStyle = true
		}
		o.APIOptions = append(o.APIOptions, translateErrors(where{bucket: cfg.Bucket, endpoint: cfg.Endpoint, region: awsCfg.Region}))
	})
	return &Client{s3: c, bucket: cfg.Bucket, endpoint: cfg.Endpoint}, nil
}

// retryTruncated retries responses cut short, which the SDK reports as a
// failed deserialization rather than a connection error.
var retryTruncated = retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return aws.TrueTernary
	}
	return aws.UnknownTernary
})

// maxAttempts is 8 tries per request, or AWS_MAX_ATTEMPTS when set.
func maxAttempts() int {
	if n, err := strconv.Atoi(os.Getenv("AWS_MAX_ATTEMPTS")); err == nil && n > 0 {
		return n
	}
	return 8
}

// Bucket is the bucket the client writes to.
func (c *Client) Bucket() string { return c.bucket }

// Endpoint is the endpoint URL the client was made with, "" for AWS.
func (c *Client) Endpoint() string { return c.endpoint }

// ErrNotFound means the object or multipart upload does not exist.
var ErrNotFound = errors.New("not found")

func isNotFound(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound", "NoSuchUpload":
			return true
		}
	}
	return false
}

// wrap adds the operation and key to an S3 error and maps not-found. It is
// where errors leave the client: each is an *Error by then (translateErrors),
// whose message says what is wrong and what to do.
func wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if isNotFound(err) {
		return fmt.Errorf("%s s3 key %q: %w", op, key, ErrNotFound)
	}
	var e *Error
	if errors.As(err, &e) {
		e.Op, e.Key = op, key
		return e
	}
	return fmt.Errorf("%s s3 key %q: %w", op, key, err)
}

// Object is what HeadObject tells about a stored object.
type Object struct {
	Size         int64
	ETag         string
	Metadata     map[string]string
	LastModified time.Time
	StorageClass string    // "" for STANDARD, which S3 leaves out
	Retention    Retention // the object lock, if any (s3up/lock.go)
}

// Head returns an object's size, ETag, user metadata, time and class.
func (c *Client) Head(ctx context.Context, key string) (Object, error) {
	out, err := c.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &c.bucket, Key: &key})
	if err != nil {
		return Object{}, wrap("head", key, err)
	}
	return Object{Size: aws.ToInt64(out.ContentLength), ETag: etagOf(out.ETag), Metadata: out.Metadata,
		LastModified: aws.ToTime(out.LastModified), StorageClass: string(out.StorageClass), Retention: retentionOf(out)}, nil
}

// etagOf unquotes an ETag as S3 returns it.
func etagOf(s *string) string { return strings.Trim(aws.ToString(s), `"`) }

// Put stores a small object in one request.
func (c *Client) Put(ctx context.Context, key string, data []byte, meta map[string]string) error {
	_, err := c.PutIf(ctx, key, data, meta, AnyVersion)
	return err
}

// ErrChanged means a conditional write found the object changed (or
// created) by someone else since it was read.
var ErrChanged = errors.New("changed by someone else")

// AnyVersion as the ifMatch of PutIf writes unconditionally.
const AnyVersion = "*any*"

// ErrNoConditionalWrites means the store refused a conditional write of an
// object that had not changed: it has no usable If-Match or If-None-Match.
var ErrNoConditionalWrites = errors.New("the store does not honour conditional writes (If-Match, If-None-Match)")

// PutIf stores a small object only if it still has the ETag ifMatch ("":
// only if it does not exist yet), and returns the new ETag; AnyVersion
// writes unconditionally. A store that does not implement conditional
// writes gets ErrNoConditionalWrites, never a plain write.
//
// A 412 is not taken at its word: when the object still has the ETag
// ifMatch, the store mis-compared (Ceph RGW 16 refuses quoted ETags), so
// the write is tried once more with the ETag written the other way, and
// the way that works is remembered. A store that refuses both gets
// ErrNoConditionalWrites, never ErrChanged.
//
// opts change the request, e.g. WithLock.
func (c *Client) PutIf(ctx context.Context, key string, data []byte, meta map[string]string, ifMatch string, opts ...PutOption) (string, error) {
	unquoted := c.Caps().IfMatchUnquoted
	etag, err := c.putIf(ctx, key, data, meta, ifMatch, unquoted, opts...)
	if !errors.Is(err, errPrecondition) {
		return etag, err
	}
	obj, herr := c.Head(ctx, key)
	switch {
	case herr != nil && !errors.Is(herr, ErrNotFound):
		return "", fmt.Errorf("check the object after a refused conditional write: %w", herr)
	case ifMatch == "" && errors.Is(herr, ErrNotFound):
		// If-None-Match: * refused although there is no object.
	case ifMatch != "" && herr == nil && obj.ETag == ifMatch:
		etag, err = c.putIf(ctx, key, data, meta, ifMatch, !unquoted, opts...)
		if err == nil {
			if !unquoted {
				c.learn(func(c *Caps) *bool { return &c.IfMatchUnquoted }, "a quoted If-Match ETag gets 412 although it matches; sending it unquoted")
			}
			return etag, nil
		}
		if !errors.Is(err, errPrecondition) {
			return "", err
		}
		if cur, herr := c.Head(ctx, key); herr != nil || cur.ETag != ifMatch {
			return "", fmt.Errorf("put s3 key %q: %w", key, ErrChanged) // changed meanwhile after all
		}
	default:
		return "", fmt.Errorf("put s3 key %q: %w", key, ErrChanged)
	}
	c.learn(func(c *Caps) *bool { return &c.NoConditionalWrites }, "conditional writes of an unchanged object get 412")
	if ifMatch == "" {
		return "", fmt.Errorf("put s3 key %q: %w (it answered 412 to If-None-Match: * where there is no object)", key, ErrNoConditionalWrites)
	}
	return "", fmt.Errorf("put s3 key %q: %w (it answered 412 to If-Match on the object's current ETag, quoted and unquoted)", key, ErrNoConditionalWrites)
}

// errPrecondition is a 412 (or a conflict) on a conditional write, before
// PutIf has checked whether the object really changed.
var errPrecondition = errors.New("precondition failed")

func (c *Client) putIf(ctx context.Context, key string, data []byte, meta map[string]string, ifMatch string, unquoted bool, opts ...PutOption) (string, error) {
	in := &s3.PutObjectInput{Bucket: &c.bucket, Key: &key,
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))), Metadata: meta}
	for _, o := range opts {
		o(in, data)
	}
	switch {
	case ifMatch == AnyVersion:
	case ifMatch == "":
		in.IfNoneMatch = aws.String("*")
	case unquoted:
		in.IfMatch = aws.String(ifMatch)
	default:
		in.IfMatch = aws.String(`"` + ifMatch + `"`)
	}
	out, err := c.s3.PutObject(ctx, in)
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "PreconditionFailed":
			return "", errPrecondition
		case "ConditionalRequestConflict":
			// Another write of the object is in flight (409): it changed,
			// or is changing. Not a store mis-comparing, so nothing learnt.
			return "", fmt.Errorf("put s3 key %q: %w", key, ErrChanged)
		case "NotImplemented":
			if ifMatch != AnyVersion {
				// Never a silent unconditional write: it could overwrite
				// another machine's copy. --conditional-writes off says so.
				return "", fmt.Errorf("put s3 key %q: %w (it answered NotImplemented)", key, ErrNoConditionalWrites)
			}
		}
	}
	if err != nil {
		return "", wrap("put", key, err)
	}
	return etagOf(out.ETag), nil
}

// ErrTooLarge means an object holds more than the caller reads.
var ErrTooLarge = errors.New("object too large")

// ReadAll reads a small object whole, with its ETag. An object of more
// than limit bytes is not read: what the bucket holds is input, and a
// huge ledger copy or manifest must not exhaust memory.
func (c *Client) ReadAll(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	out, err := c.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &c.bucket, Key: &key})
	if err != nil {
		return nil, "", wrap("get", key, err)
	}
	defer out.Body.Close()
	tooLarge := fmt.Errorf("s3 key %q has more than %d bytes: %w", key, limit, ErrTooLarge)
	if aws.ToInt64(out.ContentLength) > limit {
		return nil, "", tooLarge
	}
	data, err := io.ReadAll(io.LimitReader(out.Body, limit+1))
	if err != nil {
		return nil, "", fmt.Errorf("read s3 key %q: %w", key, err)
	}
	if int64(len(data)) > limit {
		return nil, "", tooLarge
	}
	return data, etagOf(out.ETag), nil
}

// Delete removes an object; a missing object is not an error, so that an
// interrupted removal can simply be repeated.
func (c *Client) Delete(ctx context.Context, key string) error {
	_, err := c.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &c.bucket, Key: &key})
	if isNotFound(err) {
		return nil
	}
	return wrap("delete", key, err)
}

// MultipartUploads lists the UploadIds of unfinished multipart uploads at
// exactly key. (MinIO matches only exact keys, so exact is also portable.)
func (c *Client) MultipartUploads(ctx context.Context, key string) ([]string, error) {
	ups, err := c.listUploads(ctx, key, func(k string) bool { return k == key })
	var ids []string
	for _, u := range ups {
		ids = append(ids, u.UploadID)
	}
	return ids, err
}

// Abort aborts the multipart upload id at key; one already gone is not an error.
func (c *Client) Abort(ctx context.Context, key, id string) error {
	_, err := c.s3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &c.bucket, Key: &key, UploadId: &id})
	if isNotFound(err) {
		return nil
	}
	return wrap("abort multipart upload", key, err)
}

// AbortAll aborts every multipart upload at exactly key, including ones
// whose UploadId a crash kept from being saved.
func (c *Client) AbortAll(ctx context.Context, key string) (int, error) {
	ids, err := c.MultipartUploads(ctx, key)
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		if err := c.Abort(ctx, key, id); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

// listParts returns the parts the server holds for an upload, by number.
func (c *Client) listParts(ctx context.Context, key, id string) (map[int32]types.Part, error) {
	parts := map[int32]types.Part{}
	p := s3.NewListPartsPaginator(c.s3, &s3.ListPartsInput{Bucket: &c.bucket, Key: &key, UploadId: &id})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, wrap("list parts", key, err)
		}
		for _, pt := range page.Parts {
			parts[aws.ToInt32(pt.PartNumber)] = pt
		}
	}
	return parts, nil
}

// ObjectInfo is one entry of a listing.
type ObjectInfo struct {
	Key  string
	Size int64
	ETag string // unquoted
}

// List returns every object under prefix.
func (c *Client) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	var objs []ObjectInfo
	p := s3.NewListObjectsV2Paginator(c.s3, &s3.ListObjectsV2Input{Bucket: &c.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, wrap("list", prefix, err)
		}
		for _, o := range page.Contents {
			objs = append(objs, ObjectInfo{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size), ETag: etagOf(o.ETag)})
		}
	}
	return objs, nil
}

// PendingUpload is an unfinished multipart upload in the bucket.
type PendingUpload struct {
	Key      string `json:"key"`
	UploadID string `json:"upload_id"`
	// Initiated is when it began, where the store says (fleet status
	// names those older than a day).
	Initiated time.Time `json:"initiated,omitzero"`
}

// AllMultipartUploads lists unfinished multipart uploads whose keys start
// with prefix. It lists the whole bucket and filters, because MinIO matches
// a prefix only when it is a whole key.
func (c *Client) AllMultipartUploads(ctx context.Context, prefix string) ([]PendingUpload, error) {
	return c.listUploads(ctx, "", func(k string) bool { return strings.HasPrefix(k, prefix) })
}

// listUploads pages through ListMultipartUploads under prefix, keeping the
// uploads whose keys keep accepts.
func (c *Client) listUploads(ctx context.Context, prefix string, keep func(string) bool) ([]PendingUpload, error) {
	var ups []PendingUpload
	p := s3.NewListMultipartUploadsPaginator(c.s3, &s3.ListMultipartUploadsInput{Bucket: &c.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload" {
			// rclone serve s3 answers so for a bucket that never had a
			// multipart upload: nothing is listed, there is nothing to list.
			c.learn(func(c *Caps) *bool { return &c.ListUploadsNotFound }, "ListMultipartUploads answers NoSuchUpload when there are none")
			return ups, nil
		}
		if err != nil {
			return nil, wrap("list multipart uploads", prefix, err)
		}
		for _, u := range page.Uploads {
			if k := aws.ToString(u.Key); keep(k) {
				ups = append(ups, PendingUpload{Key: k, UploadID: aws.ToString(u.UploadId), Initiated: aws.ToTime(u.Initiated)})
			}
		}
	}
	return ups, nil
}
