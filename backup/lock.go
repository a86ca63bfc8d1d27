package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
)

// Object Lock (--lock-days, lock_days): stream objects and manifests are
// stored with a retention period, so that nobody, the admin's credentials
// included, can delete a backup before its date. zfs2s3 never sends the
// governance bypass header: a locked edge stays until its date, and prune
// and remove leave it, saying until when. The retain-until date is not
// recorded in the ledger: the store keeps it with each object, and HEAD
// reads it back, so it is right even after someone extended it.

// ErrLocked means an edge's objects are under object lock: they cannot be
// deleted before the date. It is exit code 3 (refused, nothing changed),
// like a refusal by the ledger's rule.
var ErrLocked = errors.New("locked by S3 object lock")

// LockedError is a removal refused because the edge is locked.
type LockedError struct {
	Edge string
	Lock s3up.Retention
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("remove %s: refused, its objects are %s and cannot be deleted before then (zfs2s3 never bypasses a lock); nothing was changed", e.Edge, lockPhrase(e.Lock))
}

func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// lockPhrase says until when and how an edge is locked, as users read it:
// "locked until 2027-01-05 (governance)".
func lockPhrase(r s3up.Retention) string {
	var parts []string
	if !r.Until.IsZero() {
		parts = append(parts, fmt.Sprintf("locked until %s (%s)", lockDate(r.Until), r.Mode))
	}
	if r.LegalHold {
		parts = append(parts, "under a legal hold (until it is lifted)")
	}
	return strings.Join(parts, " and ")
}

// lockDate prints a retain-until date: the day alone when it is midnight
// UTC, else with the time, in UTC either way, as the store keeps it.
func lockDate(t time.Time) string {
	t = t.UTC()
	if t.Equal(t.Truncate(24 * time.Hour)) {
		return t.Format("2006-01-02")
	}
	return t.Format("2006-01-02 15:04:05Z")
}

// EdgeLock is an edge's object lock in reports (verify, prune): the
// longest retention among its objects and manifest.
type EdgeLock struct {
	Mode      string    `json:"mode,omitempty"`
	Until     time.Time `json:"until,omitzero"`
	LegalHold bool      `json:"legal_hold,omitempty"`
	// Active is false once the date has passed: the edge may go.
	Active bool `json:"active"`
}

func edgeLockOf(r s3up.Retention, now time.Time) *EdgeLock {
	if r.Mode == "" && !r.LegalHold {
		return nil
	}
	return &EdgeLock{Mode: r.Mode, Until: r.Until, LegalHold: r.LegalHold, Active: r.Active(now)}
}

// checkLockBucket checks, once per command and before anything is
// uploaded, that a bucket new objects are to be locked in has Object Lock
// enabled: it can only be enabled when the bucket is created (or by AWS
// support), and every locked write to another bucket would be refused.
// Credentials that may not read the bucket's lock configuration (a policy
// that lacks s3:GetBucketObjectLockConfiguration) get a warning: the store
// itself then refuses the first locked write, before any data.
func (b *Backup) checkLockBucket(ctx context.Context) error {
	if b.Opt.Lock == nil || b.lockChecked {
		return nil
	}
	err := b.S3.BucketLock(ctx)
	switch {
	case err == nil:
	case errors.Is(err, s3up.ErrNoObjectLock):
		return usagef("bucket %s was not created with object lock, so --lock-days %d (lock_days) cannot lock anything in it: use a bucket created with object lock (aws s3api create-bucket --object-lock-enabled-for-bucket, mc mb --with-lock), or leave lock_days out; nothing was uploaded",
			b.S3.Bucket(), b.Opt.Lock.Days)
	case s3up.IsAccessDenied(err):
		slog.Warn("cannot check that the bucket has object lock (AccessDenied on GetObjectLockConfiguration); going on, the store refuses locked writes if it has not", "bucket", b.S3.Bucket())
	default:
		return fmt.Errorf("check the bucket's object lock for --lock-days: %w", err)
	}
	b.lockChecked = true
	return nil
}

// bucketMayLock reports whether objects in the bucket may be locked, so
// that commands which delete need not HEAD every object of a bucket
// without Object Lock. Anything but a clear "no object lock" counts as
// maybe.
func (b *Backup) bucketMayLock(ctx context.Context) bool {
	if b.mayLock == nil {
		may := !errors.Is(b.S3.BucketLock(ctx), s3up.ErrNoObjectLock)
		b.mayLock = &may
	}
	return *b.mayLock
}

// edgeRetention reads an edge's lock from the store, before anything of it
// is deleted: the longest retention of its manifest and objects. An object
// that is missing is not locked.
// Results are kept for the command: a retention can be extended, but a
// lock that was seen never lifts before its date without the bypass
// header zfs2s3 never sends.
func (b *Backup) edgeRetention(ctx context.Context, e ledger.Edge) (s3up.Retention, error) {
	if r, ok := b.locks[e.Key]; ok {
		return r, nil
	}
	var r s3up.Retention
	if b.bucketMayLock(ctx) {
		// GetObjectRetention rather than HEAD, which leaves the lock out
		// for credentials that may not read it.
		for _, key := range append([]string{s3up.ManifestKey(e.Key)}, e.Keys()...) {
			o, err := b.S3.ObjectLock(ctx, key)
			if errors.Is(err, s3up.ErrNotFound) {
				continue
			}
			if err != nil {
				return r, fmt.Errorf("read the object lock of %s: %w", e, err)
			}
			r = r.Later(o)
		}
	}
	if b.locks == nil {
		b.locks = map[string]s3up.Retention{}
	}
	b.locks[e.Key] = r
	return r, nil
}

// refuseLocked returns a *LockedError when e is locked now.
func (b *Backup) refuseLocked(ctx context.Context, e ledger.Edge) error {
	r, err := b.edgeRetention(ctx, e)
	if err != nil {
		return err
	}
	if r.Active(time.Now()) {
		return &LockedError{Edge: e.String(), Lock: r}
	}
	return nil
}

// KeptEdge is an edge prune planned to remove that stays because of an
// object lock: locked itself, or needed by a locked edge that stays (its
// base must stay restorable, by the ledger's rule).
type KeptEdge struct {
	Edge string `json:"edge"`
	// Why is "locked until DATE (MODE)", or names the edge that needs it.
	Why  string    `json:"why"`
	Lock *EdgeLock `json:"lock,omitempty"` // the edge's own lock; nil when kept for another
}

// lockedRemovals reads the lock of each edge in remove (only when the
// bucket may hold locked objects).
func (b *Backup) lockedRemovals(ctx context.Context, remove []ledger.Edge) (map[ledger.ID]s3up.Retention, error) {
	locked := map[ledger.ID]s3up.Retention{}
	if len(remove) == 0 || !b.bucketMayLock(ctx) {
		return locked, nil
	}
	now := time.Now()
	for _, e := range remove {
		r, err := b.edgeRetention(ctx, e)
		if err != nil {
			return nil, err
		}
		if r.Active(now) {
			locked[e.ID()] = r
		}
	}
	return locked, nil
}

// skipLocked splits prune's planned removals (in the plan's order,
// dependents first) into those that go and those that stay: each locked
// edge, and each edge the ledger's rule then refuses to remove because an
// edge that stays needs it. edges are the dataset's stored edges. Skipping
// only ever keeps more than the plan: the guard is asked as Remove asks it.
func skipLocked(edges, remove []ledger.Edge, locked map[ledger.ID]s3up.Retention, now time.Time) (gone []ledger.Edge, kept []KeptEdge) {
	if len(locked) == 0 {
		return remove, nil
	}
	l := &ledger.Ledger{Edges: append([]ledger.Edge(nil), edges...)}
	for _, e := range remove {
		if r, ok := locked[e.ID()]; ok {
			kept = append(kept, KeptEdge{Edge: e.String(), Why: lockPhrase(r), Lock: edgeLockOf(r, now)})
			continue
		}
		var refused *ledger.RefusedError
		if err := l.CheckRemove(e.ID(), nil); errors.As(err, &refused) {
			kept = append(kept, KeptEdge{Edge: e.String(), Why: "needed by " + strings.Join(refused.Blocked, ", ") + ", which stays for a lock"})
			continue
		}
		l.Drop(e.ID())
		gone = append(gone, e)
	}
	return gone, kept
}

// noteRetention keeps the lock verify read from an edge's HEADs. It is
// kept apart from what removals go by: a HEAD leaves the lock out for
// credentials that may not read it.
func (b *Backup) noteRetention(e ledger.Edge, r s3up.Retention) {
	if b.seen == nil {
		b.seen = map[string]s3up.Retention{}
	}
	b.seen[e.Key] = r
}

// seenLock is the lock of e as its HEADs showed it, for verify's report.
func (b *Backup) seenLock(e ledger.Edge) *EdgeLock {
	return edgeLockOf(b.seen[e.Key], time.Now())
}

// Note is the lock as verify's text output appends it to an edge's line:
// " (locked until 2027-01-05 (governance))", or "" without a lock.
func (l *EdgeLock) Note() string {
	if l == nil {
		return ""
	}
	r := s3up.Retention{Mode: l.Mode, Until: l.Until, LegalHold: l.LegalHold}
	if !l.Active {
		return fmt.Sprintf(" (lock ended %s)", lockDate(l.Until))
	}
	return " (" + lockPhrase(r) + ")"
}
