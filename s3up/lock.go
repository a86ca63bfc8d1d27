package s3up

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// S3 Object Lock keeps an object version from being deleted or overwritten
// until a date, whatever the credentials: the protection against whoever
// takes a backup host, or the admin's keys, and deletes the backups. Stream
// objects and manifests are written with a retention period; the ledger
// copy under PREFIX.zfs2s3/ never is, because it must be rewritten.

// Object lock modes. Governance can be lifted by credentials holding
// s3:BypassGovernanceRetention (zfs2s3 never sends that header); compliance
// cannot be lifted by anyone, the account's root included, until it ends.
const (
	LockGovernance = "governance"
	LockCompliance = "compliance"
)

// LockModes are the values lock_mode and --lock-mode take.
var LockModes = []string{LockGovernance, LockCompliance}

// Lock is the retention new objects get: Days days from the moment each
// object is created, in Mode. It is saved with an upload's state, so that a
// resumed upload locks its further objects and manifest as it started.
type Lock struct {
	Mode string `yaml:"mode"`
	Days int    `yaml:"days"`
}

// Until is the retain-until date of an object created at now.
func (l Lock) Until(now time.Time) time.Time {
	return now.UTC().AddDate(0, 0, l.Days).Truncate(time.Second)
}

func (l Lock) mode() types.ObjectLockMode {
	if l.Mode == LockCompliance {
		return types.ObjectLockModeCompliance
	}
	return types.ObjectLockModeGovernance
}

// CheckLock checks a lock setting as the user gave it: days 0 (no lock) or
// more, and a mode of LockModes ("" meaning governance).
func CheckLock(days int, mode string) (*Lock, error) {
	if mode == "" {
		mode = LockGovernance
	}
	switch {
	case days < 0:
		return nil, fmt.Errorf("lock days %d: want 0 (no object lock) or a number of days", days)
	case !slices.Contains(LockModes, mode):
		return nil, fmt.Errorf("lock mode %q: want governance (lifted only with s3:BypassGovernanceRetention) or compliance (lifted by no one)", mode)
	case days == 0:
		return nil, nil
	}
	return &Lock{Mode: mode, Days: days}, nil
}

// lockMultipart sets the retention of an object a multipart upload creates.
// The date counts from the CreateMultipartUpload request: an object that
// takes hours to upload is locked a little less than Days after it is
// complete.
func lockMultipart(in *s3.CreateMultipartUploadInput, l *Lock) {
	if l == nil {
		return
	}
	in.ObjectLockMode = l.mode()
	in.ObjectLockRetainUntilDate = aws.Time(l.Until(time.Now()))
}

// PutOption changes a PutObject request of PutIf.
type PutOption func(in *s3.PutObjectInput, data []byte)

// WithLock stores the object with l's retention (nothing when l is nil).
// Amazon S3 requires a Content-MD5 (or a checksum) on a write with a
// retention period, so the MD5 goes with it.
func WithLock(l *Lock) []PutOption {
	if l == nil {
		return nil
	}
	return []PutOption{func(in *s3.PutObjectInput, data []byte) {
		in.ObjectLockMode = l.mode()
		in.ObjectLockRetainUntilDate = aws.Time(l.Until(time.Now()))
		sum := md5.Sum(data)
		in.ContentMD5 = aws.String(base64.StdEncoding.EncodeToString(sum[:]))
	}}
}

// Retention is an object's lock as HEAD reports it.
type Retention struct {
	Mode      string    // "governance" or "compliance"; "" when none
	Until     time.Time // zero when none
	LegalHold bool
}

// Active reports whether the object cannot be deleted at now.
func (r Retention) Active(now time.Time) bool {
	return r.LegalHold || r.Mode != "" && r.Until.After(now)
}

// Later returns whichever of r and o keeps an object longer: an edge is
// locked as long as the longest-locked of its objects.
func (r Retention) Later(o Retention) Retention {
	out := r
	if o.Until.After(r.Until) {
		out.Mode, out.Until = o.Mode, o.Until
	}
	out.LegalHold = r.LegalHold || o.LegalHold
	return out
}

func retentionOf(out *s3.HeadObjectOutput) Retention {
	r := Retention{LegalHold: out.ObjectLockLegalHoldStatus == types.ObjectLockLegalHoldStatusOn}
	if out.ObjectLockMode != "" && out.ObjectLockRetainUntilDate != nil {
		r.Mode = map[types.ObjectLockMode]string{types.ObjectLockModeGovernance: LockGovernance,
			types.ObjectLockModeCompliance: LockCompliance}[out.ObjectLockMode]
		if r.Mode == "" {
			r.Mode = string(out.ObjectLockMode)
		}
		r.Until = out.ObjectLockRetainUntilDate.UTC()
	}
	return r
}

// ErrNoObjectLock means the bucket was not created with Object Lock, so
// objects cannot be stored with a retention period.
var ErrNoObjectLock = errors.New("the bucket has no object lock")

// BucketLock reports whether the bucket has Object Lock enabled: nil when
// it has, ErrNoObjectLock when it has not (or the store has no Object Lock
// at all), another error when the store could not be asked.
func (c *Client) BucketLock(ctx context.Context) error {
	out, err := c.s3.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: &c.bucket})
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "ObjectLockConfigurationNotFoundError", "NotImplemented", "MethodNotAllowed", "InvalidRequest":
			return fmt.Errorf("s3://%s: %w (%s)", c.bucket, ErrNoObjectLock, ae.ErrorCode())
		}
	}
	if err != nil {
		return wrap("get the object lock configuration of", "", err)
	}
	if out.ObjectLockConfiguration == nil || out.ObjectLockConfiguration.ObjectLockEnabled != types.ObjectLockEnabledEnabled {
		return fmt.Errorf("s3://%s: %w", c.bucket, ErrNoObjectLock)
	}
	return nil
}

// ErrLockUnreadable means the credentials may not read an object's lock
// (AccessDenied on GetObjectRetention or GetObjectLegalHold). HEAD would
// not tell: Amazon S3 and MinIO leave the lock headers out of a HEAD for
// such credentials, so a locked object would look unlocked and its DELETE
// would only add a delete marker.
var ErrLockUnreadable = errors.New("cannot read the object lock")

// ObjectLock asks the store for an object's retention and legal hold,
// which, unlike HEAD, fails when the credentials may not read them. An
// object without either, a bucket without Object Lock and a store without
// the API give the zero Retention; a missing object gives ErrNotFound.
func (c *Client) ObjectLock(ctx context.Context, key string) (Retention, error) {
	var r Retention
	ret, err := c.s3.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: &c.bucket, Key: &key})
	if err = c.lockErr("get the object retention of", key, err); err != nil {
		return r, err
	}
	if ret != nil && ret.Retention != nil && ret.Retention.RetainUntilDate != nil {
		r.Mode = retentionOf(&s3.HeadObjectOutput{ObjectLockMode: types.ObjectLockMode(ret.Retention.Mode), ObjectLockRetainUntilDate: ret.Retention.RetainUntilDate}).Mode
		r.Until = ret.Retention.RetainUntilDate.UTC()
	}
	hold, err := c.s3.GetObjectLegalHold(ctx, &s3.GetObjectLegalHoldInput{Bucket: &c.bucket, Key: &key})
	if err = c.lockErr("get the legal hold of", key, err); err != nil {
		return r, err
	}
	r.LegalHold = hold != nil && hold.LegalHold != nil && hold.LegalHold.Status == types.ObjectLockLegalHoldStatusOn
	return r, nil
}

// lockErr sorts an error of GetObjectRetention or GetObjectLegalHold: nil
// when the object simply has no such lock, or the bucket or store none at
// all.
func (c *Client) lockErr(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if IsAccessDenied(err) {
		return fmt.Errorf("%s s3 key %q: %w (AccessDenied): these credentials need s3:GetObjectRetention and s3:GetObjectLegalHold on a bucket with object lock (zfs2s3 policy prints them); nothing was changed", op, key, ErrLockUnreadable)
	}
	if isNotFound(err) {
		return wrap(op, key, err)
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError", "InvalidRequest", "NotImplemented", "MethodNotAllowed":
			return nil
		}
		var e *Error
		if !errors.As(err, &e) || !errors.Is(e, ErrTransient) {
			// A store that answers something else has no lock to read.
			return nil
		}
	}
	return wrap(op, key, err)
}
