package s3up

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// The kinds of S3 failure, for errors.Is. Every error a Client returns for a
// request the store answered with an error, or never answered, is an *Error
// of exactly one kind (except not-found, which is ErrNotFound).
var (
	// ErrPermanent: the store refused the request itself (a storage class
	// it does not offer, a key or metadata it does not accept, a part size
	// out of its limits). Repeating the request, now or from a resumed
	// upload, which asks for the same things, gets the same answer.
	ErrPermanent = errors.New("refused by the store")
	// ErrSetup: the credentials, bucket, region, endpoint or clock are
	// wrong. No retry fixes that, but once the user has, the same request
	// succeeds: an upload stays resumable.
	ErrSetup = errors.New("S3 setup problem")
	// ErrTransient: the store failed or was out of reach for longer than
	// the retries lasted (5xx, SlowDown, resets, timeouts, a cut body).
	// Later, the same request may succeed.
	ErrTransient = errors.New("temporary S3 failure")
)

// Error is an S3 request that failed, translated for the user: what is
// wrong and how to fix it, in one line, with the S3 error code for reference.
type Error struct {
	Op     string // what zfs2s3 asked, e.g. "get" or "upload part 3 of"
	Key    string
	Code   string // the S3 error code; "" when no answer came
	Status int    // the HTTP status; 0 when no answer came
	// Cause says what is wrong and Fix what to do; both are "" for
	// transient errors, whose SDK message (Err) says what happened.
	Cause, Fix string
	Kind       error // ErrPermanent, ErrSetup or ErrTransient
	Err        error // the SDK's error
}

func (e *Error) Error() string {
	if e.Cause == "" {
		return fmt.Sprintf("%s s3 key %q: %v", e.Op, e.Key, e.Err)
	}
	answer := "no answer"
	if e.Code != "" {
		answer = fmt.Sprintf("S3 %s, HTTP %d", e.Code, e.Status)
	}
	return fmt.Sprintf("%s (%s, on %s s3 key %q); %s", e.Cause, answer, e.Op, e.Key, e.Fix)
}

// Is reports the error's kind.
func (e *Error) Is(target error) bool { return target == e.Kind }

func (e *Error) Unwrap() error { return e.Err }

// StorageClasses are the storage classes --storage-class accepts as they
// are; any other needs the CustomClassPrefix.
var StorageClasses = []string{"STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"}

// CustomClassPrefix in front of a storage class sends it to the store
// unchecked: a class only some stores offer (Google's NEARLINE, OVH's
// HIGH_PERF). A store that does not offer it refuses the upload at its start.
const CustomClassPrefix = "custom:"

var customClass = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// CheckStorageClass returns the storage class to send for the value of
// --storage-class, or an error naming the accepted ones. "" leaves the
// choice to the store.
func CheckStorageClass(s string) (string, error) {
	if s == "" || slices.Contains(StorageClasses, s) {
		return s, nil
	}
	if c, ok := strings.CutPrefix(s, CustomClassPrefix); ok {
		if !customClass.MatchString(c) {
			return "", fmt.Errorf("--storage-class %q: a custom class is 1 to 64 letters, digits, _ or -", s)
		}
		return c, nil
	}
	hint := ""
	if up := strings.ToUpper(s); slices.Contains(StorageClasses, up) {
		hint = fmt.Sprintf(" (did you mean %s?)", up)
	} else if up == "DEEP_GLACIER" {
		hint = " (did you mean DEEP_ARCHIVE?)"
	}
	return "", fmt.Errorf("--storage-class %q%s: want one of %s, or %sNAME to send a class only your store offers",
		s, hint, strings.Join(StorageClasses, ", "), CustomClassPrefix)
}

// where is what a client's errors name besides the request.
type where struct {
	bucket, endpoint, region string
}

// translateErrors is the middleware that turns every error an S3 operation
// returns, after the SDK's retries, into an *Error. It runs first, so it
// sees the operation's input and the final error.
func translateErrors(w where) func(*middleware.Stack) error {
	return func(stack *middleware.Stack) error {
		return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("zfs2s3TranslateErrors",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				out, md, err := next.HandleInitialize(ctx, in)
				if err != nil {
					err = w.translate(err, in.Parameters)
				}
				return out, md, err
			}), middleware.Before)
	}
}

// codes that a retry, or a resumed upload, can get past: the request was
// cut, timed out, its body was damaged on the way, or the upload's state
// and the server's disagree (a resume reconciles them).
var transientCodes = []string{"RequestTimeout", "RequestTimeoutException", "SlowDown", "Throttling", "ThrottlingException",
	"TooManyRequests", "TooManyRequestsException", "BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch",
	"XAmzContentChecksumMismatch", "IncompleteBody", "OperationAborted", "InvalidPart", "InvalidPartOrder",
	"NoSuchUpload", "NoSuchKey", "NotFound", "PreconditionFailed", "ConditionalRequestConflict"}

// regionHint finds the bucket's region in an AuthorizationHeaderMalformed
// message ("... the region 'us-east-1' is wrong; expecting 'eu-west-1'").
var regionHint = regexp.MustCompile(`expecting '([a-z0-9-]+)'`)

// translate classifies err and, for what is not transient, says what is
// wrong and what to do about it. in is the operation's input.
func (w where) translate(err error, in any) error {
	e := &Error{Err: err, Kind: ErrTransient}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		w.network(e)
		return e
	}
	e.Code = ae.ErrorCode()
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		e.Status = re.HTTPStatusCode()
	}
	setup := func(cause, fix string, args ...any) {
		e.Kind, e.Cause, e.Fix = ErrSetup, cause, fmt.Sprintf(fix, args...)
	}
	refused := func(cause, fix string) {
		e.Kind, e.Cause, e.Fix = ErrPermanent, cause, fix
	}
	credentials := "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the --profile's credentials"
	switch code := e.Code; {
	case code == "InvalidAccessKeyId":
		setup("access denied: the store does not know the access key ID", "check the credentials: %s", credentials)
	case code == "SignatureDoesNotMatch":
		setup("access denied: the secret key does not match the access key ID", "check the credentials: %s", credentials)
	case code == "ExpiredToken" || code == "TokenRefreshRequired" || code == "InvalidToken":
		setup("access denied: the session credentials have expired or are invalid", "renew them (AWS_SESSION_TOKEN, or the --profile's credentials)")
	case code == "RequestTimeTooSkewed":
		setup("this machine's clock differs from the store's by more than 15 minutes", "set the system clock right (enable NTP), then run the command again")
	case code == "NoSuchBucket":
		setup(fmt.Sprintf("bucket %q does not exist at %s", w.bucket, w.endpointName()), "check --bucket (ZFS2S3_BUCKET) and --endpoint, or create the bucket")
	case code == "InvalidBucketName":
		setup(fmt.Sprintf("the store does not accept the bucket name %q", w.bucket), "check --bucket (ZFS2S3_BUCKET)")
	case code == "PermanentRedirect" || code == "MovedPermanently" || code == "IllegalLocationConstraintException" ||
		code == "AuthorizationHeaderMalformed" && regionHint.MatchString(ae.ErrorMessage()):
		if r := w.bucketRegion(re, ae.ErrorMessage()); r != "" {
			setup(fmt.Sprintf("bucket %q is in region %s, not %s", w.bucket, r, w.region), "set --region %s (or AWS_REGION)", r)
		} else {
			setup(fmt.Sprintf("bucket %q is in another region than %s", w.bucket, w.region), "set --region (or AWS_REGION) to the bucket's region")
		}
	case code == "AuthorizationHeaderMalformed":
		setup("the store refused the request's signature: "+ae.ErrorMessage(), "check --region and the credentials (%s)", credentials)
	case code == "InvalidObjectState":
		setup("the object is in an archive storage class (GLACIER, DEEP_ARCHIVE) and cannot be read until it is restored",
			"restore it first (aws s3api restore-object), wait until it is readable, then run the command again")
	case strings.Contains(strings.ToLower(code), "quota"):
		setup("the store refused the request over a quota: "+ae.ErrorMessage(), "raise the quota or free space, then run the command again (an upload resumes)")
	case e.Status == 403 || code == "AccessDenied" || code == "AllAccessDisabled" || code == "AccountProblem":
		setup("access denied: the credentials or the bucket policy do not allow this",
			"check the credentials (%s) and that their policy allows zfs2s3 to read and write under the prefix (zfs2s3 policy host prints one; deleting needs zfs2s3 policy admin)", credentials)
	case slices.Contains(transientCodes, code) || e.Status == 408 || e.Status == 429 || e.Status >= 500 && code != "NotImplemented":
	case code == "InvalidStorageClass":
		refused(fmt.Sprintf("the store does not offer storage class %q", storageClassOf(in)),
			"choose one it offers with --storage-class (ZFS2S3_STORAGE_CLASS)")
	case code == "KeyTooLongError":
		refused(fmt.Sprintf("the object key is %d bytes, longer than the store accepts", len(keyOf(in))),
			"use a shorter --prefix, dataset or snapshot name")
	case code == "InvalidObjectName" || code == "XMinioInvalidObjectName":
		refused(fmt.Sprintf("the store does not accept the object key %q", keyOf(in)), "use another --prefix")
	case code == "MetadataTooLarge":
		refused("the object metadata is larger than the store accepts", "use shorter dataset and snapshot names")
	case code == "EntityTooLarge":
		refused("a part is larger than the store accepts", "set a smaller --part-size")
	case code == "EntityTooSmall":
		refused("a part is smaller than the store accepts", "set a larger --part-size")
	case code == "NotImplemented":
		refused("the store does not implement this request: "+ae.ErrorMessage(),
			"if it names a checksum header, try --checksum md5 or --checksum none")
	case e.Status >= 400 && e.Status < 500:
		// Not known to be final: an upload stays resumable, which costs an
		// abort_upload at worst; discarding it could cost hours of upload.
		msg := ae.ErrorMessage()
		if msg == "" {
			msg = "no reason given"
		}
		setup(fmt.Sprintf("the store refused the request (%s): %s", code, msg), "correct what it names, then run the command again")
	}
	return e
}

// network classifies an error without an answer from the store: an
// endpoint that cannot be reached at all is a setup problem, anything
// else (resets, timeouts, a cancelled command) transient.
func (w where) network(e *Error) {
	var ue *unreachableError
	var dns *net.DNSError
	switch {
	case errors.As(e.Err, &ue):
		e.Kind, e.Cause = ErrSetup, fmt.Sprintf("cannot connect to %s: connection refused", w.endpointName())
	case errors.As(e.Err, &dns) && dns.IsNotFound:
		e.Kind, e.Cause = ErrSetup, fmt.Sprintf("cannot connect to %s: host %s not found", w.endpointName(), dns.Name)
	default:
		return
	}
	e.Fix = "check --endpoint (ZFS2S3_ENDPOINT) and that the S3 server runs and is reachable from here"
	if w.endpoint == "" {
		e.Fix = "check --region (AWS_REGION): AWS has no S3 endpoint for region " + w.region
	}
}

// endpointName is the endpoint as the user set it, or AWS's.
func (w where) endpointName() string {
	if w.endpoint != "" {
		return w.endpoint
	}
	return "AWS S3 (" + w.region + ")"
}

// bucketRegion finds the bucket's region in S3's answer: the
// x-amz-bucket-region header, else the AuthorizationHeaderMalformed hint.
func (w where) bucketRegion(re *smithyhttp.ResponseError, msg string) string {
	if re != nil && re.Response != nil {
		if r := re.Response.Header.Get("X-Amz-Bucket-Region"); r != "" {
			return r
		}
	}
	if m := regionHint.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	return ""
}

// storageClassOf is the storage class an operation's input asked for.
func storageClassOf(in any) string {
	switch in := in.(type) {
	case *s3.CreateMultipartUploadInput:
		return string(in.StorageClass)
	case *s3.PutObjectInput:
		return string(in.StorageClass)
	}
	return ""
}

// keyOf is the object key of an operation's input.
func keyOf(in any) string {
	switch in := in.(type) {
	case *s3.CreateMultipartUploadInput:
		return aws.ToString(in.Key)
	case *s3.PutObjectInput:
		return aws.ToString(in.Key)
	case *s3.UploadPartInput:
		return aws.ToString(in.Key)
	case *s3.GetObjectInput:
		return aws.ToString(in.Key)
	}
	return ""
}

// unreachableError is a connection refused on the first contact with the
// endpoint: nothing listens there, which retrying for minutes does not change.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// refusedTries and refusedWait: a refused first connection is tried a few
// times within a second (a server that is just starting), then given up.
const (
	refusedTries = 3
	refusedWait  = 200 * time.Millisecond
)

// dialer fails fast on an endpoint that refuses connections before it ever
// accepted one. Once it has, a refused connection is a server restarting
// mid-command, and the SDK's retries with backoff wait for it.
type dialer struct {
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	reached atomic.Bool // a connection succeeded
}

// DialContext is dial with the fast failure above.
func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	for try := 1; ; try++ {
		c, err := d.dial(ctx, network, addr)
		if err == nil {
			d.reached.Store(true)
			return c, nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) || d.reached.Load() {
			return nil, err
		}
		if try == refusedTries {
			return nil, &unreachableError{err}
		}
		select {
		case <-time.After(refusedWait * time.Duration(try)):
		case <-ctx.Done():
			return nil, err
		}
	}
}

// noRetryUnreachable keeps the SDK from retrying what dialer gave up on.
var noRetryUnreachable = retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
	var ue *unreachableError
	if errors.As(err, &ue) {
		return aws.FalseTernary
	}
	return aws.UnknownTernary
})
