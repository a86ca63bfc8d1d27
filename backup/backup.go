// Package backup carries out zfs2s3's commands. It is the only place that
// combines the zfs wrapper, the ledger and the S3 uploader, in the order
// that keeps ledger, state files and bucket consistent across crashes:
// intent is saved before any S3 call, the ledger is changed only under its
// lock, and an object is deleted only after the ledger marks it as going.
package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"filippo.io/age"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/statefile"
	"github.com/zfs2s3/zfs2s3/transform"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// ErrUsage marks errors in what the user asked for (exit code 2).
var ErrUsage = errors.New("bad usage")

type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == ErrUsage }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// Options are the settings every command shares.
type Options struct {
	StateDir     string
	Prefix       string
	StorageClass string
	PartSize     int64 // 0: planned from the stream's size estimate
	Concurrency  int
	Checksum     string // per-part checksum, one of s3up.Checksums
	// PartsPerObject lowers S3's 10,000-part limit at which a stream
	// continues in a further object; only tests set it.
	PartsPerObject int
	// ConditionalWrites is "auto" (the default, also ""): the bucket's
	// ledger copy is written with If-Match / If-None-Match; or "off", for
	// stores without usable conditional writes: written unconditionally
	// after comparing generations.
	ConditionalWrites string
	// Lock, when set, stores new stream objects and manifests with an
	// object lock retention (--lock-days; backup/lock.go).
	Lock *s3up.Lock
	// Transform compresses and/or encrypts new uploads (transform/FORMAT.md);
	// the zero value stores them plain, as before.
	Transform TransformOptions
	// Identities decrypt encrypted edges for restore, save and verify
	// --read-data; none are needed for plain or compressed-only edges.
	Identities []*age.X25519Identity
	// SendFlags are the zfs send options of new uploads (--send-flags);
	// each edge records its own, and a resume uses those.
	SendFlags zfs.SendFlags
	// IdentityFiles are the files Identities were read from, for the hand
	// restore script restore --dry-run prints.
	IdentityFiles []string
	// PolicyKey is the key of the fleet's central policy object
	// (central.Key of the configured prefix), read by commands that upload
	// or prune; "" reads none.
	PolicyKey string
	// Host is this machine's name in the central policy's hosts:.
	Host string
}

// TransformOptions say how new uploads are transformed.
type TransformOptions struct {
	Compress    transform.Spec         // the compression alone (transform.ParseCompress)
	Recipients  []*age.X25519Recipient // encrypt to these when any
	SegmentSize int64                  // 0: transform.DefaultSegmentSize
}

// Spec is the whole transform: the compression, plus age when there are
// recipients.
func (t TransformOptions) Spec() transform.Spec {
	s := t.Compress
	s.Encrypt = len(t.Recipients) > 0
	return s
}

// ConditionalWriteModes are the values Options.ConditionalWrites takes.
var ConditionalWriteModes = []string{"auto", "off"}

// Backup runs commands against one bucket and prefix.
type Backup struct {
	// fleet: a fleet command's Backup of one host, whose state dir is a
	// temporary one deleted at exit (forHost).
	fleet bool
	ZFS   zfs.Runner
	S3    *s3up.Client
	Opt   Options
	store ledger.Store
	// Out receives results, one line each (stdout in the CLI).
	Out func(format string, args ...any)
	// Progress, when set, receives upload progress; estimate is the
	// expected stream size (0 when unknown).
	Progress func(edge string, p s3up.Progress, estimate int64)
	// ProgressDone, when set, is called when an upload stops, to clear its
	// progress display before results are printed.
	ProgressDone func()
	// HookOutput receives the output of pre and post hooks; nil is
	// stderr, which keeps stdout for results and --json reports.
	HookOutput io.Writer
	// remoteETag is the ETag of the bucket's whole ledger copy of before
	// the journal, as this command read it ("" when there was none), to
	// check that it did not change before the migration.
	remoteETag string
	// notices are what loading the ledger found wrong with the bucket's
	// copy, for status to show.
	notices []string
	// readOnly is set when a read-only command found the state dir not
	// writable: the ledger was read without its lock, and local writes
	// are skipped.
	readOnly bool
	// j is what the last loadLedger saw of the bucket's journals, for
	// the writes after it.
	j *journal
	// reading is the dataset a read-only command reads ("" for all of
	// them), set by Reading; unusableLater is set by status, which shows
	// such journals in its report and exit code. With neither, a dataset
	// journal that a new machine cannot use fails the command
	// (bucketledger.go, unusableJournals).
	reading       *string
	unusableLater bool
	// central is the fleet policy this command read (backup/central.go).
	central centralState
	// saves counts this process's ledger saves; runCache is a backup
	// run's ledger, valid while saves is unchanged.
	saves    int
	runCache *runLedger
	// runSnaps are the local snapshots of a backup run's datasets, listed
	// in one zfs get when it began; each is used once, and dropped when
	// the run takes a snapshot of the dataset.
	runSnaps map[string][]zfs.Snapshot
	// rebuilding makes the next write a full entry for every dataset.
	rebuilding bool
	// etagWarned is set once a warning said the ETag file is unusable.
	etagWarned bool
	// lastRecorded is the edge the last upload recorded, for the sizes a
	// backup run reports.
	lastRecorded *ledger.Edge
	// deleteChecked is set once checkCanDelete found that these
	// credentials may delete, so a prune's removals ask only once.
	deleteChecked bool
	// lockChecked is set once the bucket was found to have object lock;
	// mayLock caches whether its objects may be locked at all, locks the
	// retention of edges read before removals and seen what verify's HEADs
	// showed, by key (backup/lock.go).
	lockChecked bool
	mayLock     *bool
	locks, seen map[string]s3up.Retention
	// hostUploads are the uploads a backup host has in flight under the
	// prefix, as fleet prune sees them in the bucket: their bases stay
	// restorable, like this machine's own pending uploads (fleet.go).
	hostUploads []ledger.Edge
}

// New returns a Backup; out prints results.
func New(z zfs.Runner, c *s3up.Client, opt Options, out func(string, ...any)) *Backup {
	opt.Prefix = ledger.NormalizePrefix(opt.Prefix)
	b := &Backup{ZFS: z, S3: c, Opt: opt, Out: out,
		store: ledger.OpenStore(opt.StateDir, c.Bucket(), opt.Prefix)}
	b.loadCaps()
	return b
}

// withLedger runs fn on the ledger under its lock and saves the ledger if fn
// returns save=true. Removals left unfinished by an earlier crash are
// completed first.
func (b *Backup) withLedger(ctx context.Context, fn func(l *ledger.Ledger) (save bool, err error)) error {
	lock, err := b.store.Lock(ctx)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	l, err := b.loadLedger(ctx, true)
	if err != nil {
		return setupError(err)
	}
	if err := b.finishRemovals(ctx, l); err != nil {
		return err
	}
	save, err := fn(l)
	if err != nil || !save {
		return err
	}
	return b.saveLedger(ctx, l)
}

// readLedger loads the ledger for commands that only read it, under the
// lock so that what it writes locally (the bucket's copy on a new machine)
// cannot overwrite a concurrent change. It uses the bucket's copy when that
// is newer. In a state dir this process cannot write (a read-only mount,
// another user's files) it reads without the lock, which is consistent
// because the ledger file is replaced by rename, and skips local writes.
func (b *Backup) readLedger(ctx context.Context) (*ledger.Ledger, error) {
	lock, err := b.store.Lock(ctx)
	if statefile.NotWritable(err) {
		slog.Info("the state dir cannot be written; reading the ledger without its lock", "error", err)
		b.readOnly = true
		return b.loadLedger(ctx, false)
	}
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	l, err := b.loadLedger(ctx, false)
	return l, setupError(err)
}

// setupError returns the S3 error inside err alone when it is a setup
// problem (credentials, bucket, region, endpoint, clock): its line names
// the cause and the fix, which context such as "cannot read the bucket's
// ledger ...; try again" would only blur.
func setupError(err error) error {
	var se *s3up.Error
	if errors.As(err, &se) && errors.Is(se, s3up.ErrSetup) {
		return se
	}
	return err
}

// finishRemovals deletes the objects of edges marked as being removed and
// drops them, saving after each.
func (b *Backup) finishRemovals(ctx context.Context, l *ledger.Ledger) error {
	for _, e := range l.Removing() {
		if bl, ok := b.j.blockedFor(e.Target.Dataset()); ok {
			// Dropping the edge would change the blocked dataset's
			// edges, which saveLedger refuses: every command would
			// fail. It is finished after ledger rebuild.
			slog.Warn(fmt.Sprintf("the interrupted removal of %s is left unfinished: %v", e, bl.err))
			continue
		}
		if err := b.deleteObjects(ctx, e.Keys()); err != nil {
			if s3up.IsAccessDenied(err) {
				// Host credentials (zfs2s3 policy host): the edge stays
				// marked, and a remove or prune from the admin side
				// finishes it. Adding backups goes on meanwhile.
				slog.Warn(fmt.Sprintf("cannot finish the interrupted removal of %s: these credentials cannot delete (AccessDenied); run zfs2s3 prune or remove from the admin side to finish it", e))
				return nil
			}
			return fmt.Errorf("finish the interrupted removal of %s: %w", e, err)
		}
		l.Drop(e.ID())
		if err := b.saveLedger(ctx, l); err != nil {
			return err
		}
		b.Out("removed %s (finished an interrupted removal)", e)
	}
	return nil
}

// deleteObjects deletes an edge's manifest, then its objects, the first
// last. The manifest goes first so the bucket never holds a manifest
// without its objects.
func (b *Backup) deleteObjects(ctx context.Context, keys []string) error {
	if err := b.S3.Delete(ctx, s3up.ManifestKey(keys[0])); err != nil {
		return err
	}
	for i := len(keys) - 1; i >= 0; i-- {
		if err := b.S3.Delete(ctx, keys[i]); err != nil {
			return err
		}
	}
	return nil
}

// lockedHint turns a held lock into the one-line error users see.
func lockedHint(err error, what string) error {
	var le *statefile.LockedError
	if errors.As(err, &le) {
		return fmt.Errorf("%s is already running in %s: %w", what, le.Holder(), statefile.ErrLocked)
	}
	return err
}

// localOnly is the advice for a change saved in the local ledger that
// could not be written to the bucket. A fleet command's state dir is
// deleted at exit, so there is no local ledger to rebuild from: the admin
// runs the fleet command again.
func (b *Backup) localOnly() string {
	if b.fleet {
		return "this change was not written to the bucket: run zfs2s3 fleet prune again"
	}
	return fmt.Sprintf("this change is in the local ledger %s only: run zfs2s3 ledger rebuild to merge both from the manifests", b.store.Path())
}
