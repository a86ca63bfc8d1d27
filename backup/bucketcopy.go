package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/statefile"
)

// The bucket's whole copy of the ledger, as zfs2s3 kept it before the
// per-dataset journal (bucketledger.go): read, and migrated on the first
// change. Its key now holds a stub that older zfs2s3 refuse.

// LedgerKey is where the bucket kept its whole copy of the ledger, and
// now the stub that marks the tree.
func LedgerKey(prefix string) string { return ledger.NormalizePrefix(prefix) + ledgerSuffix }

const ledgerSuffix = ".zfs2s3/ledger.yaml"

// The bucket's copy is written with conditional PUTs: only over the copy
// this command read (If-Match on its ETag), or only if there was none. The
// ETag this machine last wrote or adopted is kept next to the local ledger,
// so a copy another machine wrote is recognised even when its generation
// is no higher than ours.

// syncedPath holds the ETag of the bucket copy the local ledger matches.
func (b *Backup) syncedPath() string { return filepath.Join(b.store.Dir, "bucket-ledger.etag") }

// maxETagFileBytes bounds the read of the ETag file, a line of under 100
// bytes, so that a link to /dev/zero planted there cannot fill memory.
const maxETagFileBytes = 1 << 20

// syncedETag is the ETag in the ETag file, "" when there is none or it
// cannot be read: then the bucket's copy is fetched and compared in full.
func (b *Backup) syncedETag() string {
	data, err := statefile.ReadFile(b.syncedPath(), maxETagFileBytes)
	if err != nil && !errors.Is(err, os.ErrNotExist) && !b.etagWarned {
		b.etagWarned = true
		slog.Warn("ignoring the ETag file; the bucket's ledger copy is compared in full", "error", err)
	}
	return strings.TrimSpace(string(data))
}

// setSynced records etag in the ETag file; in a state dir that cannot be
// written (a read-only command) it is skipped, and the next command that
// can write the state dir records it after comparing the copies.
func (b *Backup) setSynced(etag string) error {
	if b.readOnly {
		slog.Warn("the state dir cannot be written; not recording the ETag of the bucket's ledger copy", "file", b.syncedPath())
		return nil
	}
	return statefile.WriteFile(b.syncedPath(), []byte(etag+"\n"))
}

// bucketLedger reads the bucket's copy of the ledger, its bytes and its
// ETag; nil when there is none. A copy that cannot be parsed is returned
// with its ETag and an error wrapping ledger.ErrDamaged.
func (b *Backup) bucketLedger(ctx context.Context) (*ledger.Ledger, []byte, string, error) {
	key := LedgerKey(b.Opt.Prefix)
	data, etag, err := b.S3.ReadAll(ctx, key, ledger.MaxFileBytes)
	switch {
	case errors.Is(err, s3up.ErrNotFound):
		return nil, nil, "", nil
	case errors.Is(err, s3up.ErrTooLarge):
		obj, herr := b.S3.Head(ctx, key)
		if herr != nil {
			return nil, nil, "", err
		}
		etag, err = obj.ETag, fmt.Errorf("%w: %w", ledger.ErrDamaged, err)
	case err != nil:
		return nil, nil, "", err
	}
	var l *ledger.Ledger
	if err == nil {
		l, err = ledger.ParseCopy(data)
	}
	if err == nil && (l.Bucket != b.S3.Bucket() || l.Prefix != b.Opt.Prefix) {
		err = fmt.Errorf("%w: it is for bucket %q prefix %q", ledger.ErrDamaged, l.Bucket, l.Prefix)
	}
	if err != nil {
		return nil, nil, etag, fmt.Errorf("the bucket's ledger s3://%s/%s: %w", b.S3.Bucket(), key, err)
	}
	return l, data, etag, nil
}

// loadLegacy is loadLedger for a bucket that holds only the whole copy:
// the local ledger, or the bucket's copy when there is no local one (a new
// machine). When the bucket's copy is not the one this machine last wrote
// or adopted, and holds other content, another machine has changed it:
// read-only commands use the newer one and mutating ones refuse rather
// than overwrite it. The next write migrates the bucket to the journal.
func (b *Backup) loadLegacy(ctx context.Context, mutate bool, local *ledger.Ledger) (*ledger.Ledger, error) {
	if b.store.Exists() {
		// The usual case: the bucket holds the copy this machine last wrote.
		// A HEAD says so without fetching a ledger that may be tens of MB.
		if obj, err := b.S3.Head(ctx, LedgerKey(b.Opt.Prefix)); err == nil && obj.ETag != "" && obj.ETag == b.syncedETag() {
			b.remoteETag = obj.ETag
			if gen, err := strconv.ParseUint(obj.Metadata["zfs2s3-generation"], 10, 64); err == nil && gen < local.Generation {
				b.repairCopy(ctx, local) // this machine's last write to the bucket failed
			}
			return local, nil
		}
	}
	remote, _, etag, err := b.bucketLedger(ctx)
	b.remoteETag = etag
	switch {
	case errors.Is(err, ledger.ErrNewerFormat) && mutate:
		// Never overwritten: this zfs2s3 would drop what it cannot read.
		return nil, fmt.Errorf("%w; this zfs2s3 changes nothing while the bucket holds a newer ledger", err)
	case errors.Is(err, ledger.ErrNewerFormat) && b.store.Exists():
		b.notice("using this machine's ledger: %v", err)
		return local, nil
	case errors.Is(err, ledger.ErrNewerFormat):
		return nil, err // a new machine: nothing to fall back on, and nothing to rebuild
	case errors.Is(err, ledger.ErrDamaged) && b.store.Exists():
		// Replaced on the next change, but only over the damaged copy read here.
		b.notice("%v; this machine's ledger is used, and replaces that copy on the next change", err)
		return local, nil
	case errors.Is(err, ledger.ErrDamaged):
		return nil, fmt.Errorf("%w; run zfs2s3 ledger rebuild to make a new one from the manifests", err)
	case errors.Is(err, s3up.ErrSetup):
		return nil, err // wrong credentials, bucket, region, clock: the rest would fail too
	case err != nil && mutate:
		return nil, fmt.Errorf("cannot read the bucket's ledger to check that no other machine changed it (%w); try again", err)
	case err != nil && b.store.Exists():
		b.notice("the bucket's ledger copy cannot be read (%v); using this machine's ledger", err)
		return local, nil
	case err != nil:
		return nil, err
	case remote == nil:
		if local.Generation > 0 { // the first write to the bucket failed
			b.repairCopy(ctx, local)
		}
		return local, nil
	case !b.store.Exists() && b.readOnly:
		slog.Warn("no local ledger, and the state dir cannot be written; using the bucket's copy without saving it locally", "generation", remote.Generation, "dir", b.store.Dir)
		return remote, nil
	case !b.store.Exists():
		slog.Info("no local ledger; using the bucket's copy", "generation", remote.Generation)
		if err := b.store.Save(remote); err != nil {
			return nil, err
		}
		return remote, b.setSynced(etag)
	case etag == b.syncedETag():
		return local, nil
	}
	// Not the copy this machine last recorded: its own write whose answer
	// was lost (same content), or another machine's. Both sides are
	// re-encoded so that a copy written by an older zfs2s3 compares too.
	if sameLedger(local, remote) {
		return local, b.setSynced(etag)
	}
	how := "changed by another machine"
	if remote.Generation < local.Generation {
		how = "changed by another machine or rolled back to an older version"
	}
	if mutate {
		return nil, fmt.Errorf("the bucket's ledger (generation %d) was %s since this one's (generation %d); move %s away to adopt the bucket's copy, or run zfs2s3 ledger rebuild to merge both from the manifests",
			remote.Generation, how, local.Generation, b.store.Path())
	}
	if remote.Generation > local.Generation {
		slog.Info("another machine changed the bucket's ledger copy; using it", "generation", remote.Generation, "local_generation", local.Generation)
		return remote, nil
	}
	b.notice("the bucket's ledger copy (generation %d) was %s; this machine's (generation %d) is shown; run zfs2s3 ledger rebuild to merge both from the manifests",
		remote.Generation, how, local.Generation)
	return local, nil
}

// checkLegacyWrite stands where the conditional write of the whole copy
// stood before a migration: the copy must still be the one this command
// read (or, with --conditional-writes off, older than the generation
// written now), else another machine changed it and nothing is migrated.
func (b *Backup) checkLegacyWrite(ctx context.Context, l *ledger.Ledger) error {
	if b.Opt.ConditionalWrites == "off" {
		return b.checkGeneration(ctx, l)
	}
	obj, err := b.S3.Head(ctx, LedgerKey(b.Opt.Prefix))
	switch {
	case errors.Is(err, s3up.ErrNotFound) && b.remoteETag == "":
		return nil
	case err != nil && !errors.Is(err, s3up.ErrNotFound):
		return fmt.Errorf("%w: cannot check the bucket's ledger copy (%w); the next zfs2s3 command writes it again", errCopyBehind, err)
	case err == nil && obj.ETag == b.remoteETag:
		return nil
	}
	return fmt.Errorf("%w: another machine changed the bucket's ledger while this command ran; %s", errCopyBehind, b.localOnly())
}

// checkGeneration stands in for the conditional write on stores without
// one (--conditional-writes off): the copy in the bucket must still be the
// one this command read, or older than the generation written now. This
// leaves a window between the check and the write that only a conditional
// write closes.
func (b *Backup) checkGeneration(ctx context.Context, l *ledger.Ledger) error {
	obj, err := b.S3.Head(ctx, LedgerKey(b.Opt.Prefix))
	switch {
	case errors.Is(err, s3up.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("%w: cannot compare generations with the bucket's copy (%w); the next zfs2s3 command writes it again", errCopyBehind, err)
	case obj.ETag == b.remoteETag:
		return nil
	}
	gen, perr := strconv.ParseUint(obj.Metadata["zfs2s3-generation"], 10, 64)
	if perr == nil && gen < l.Generation {
		return nil
	}
	theirs := "no generation"
	if perr == nil {
		theirs = fmt.Sprintf("generation %d", gen)
	}
	return fmt.Errorf("%w: the bucket's ledger copy changed while this command ran (%s, this change is generation %d), and with --conditional-writes off zfs2s3 does not overwrite a copy that is not older; this change is in the local ledger %s only: run zfs2s3 ledger rebuild to merge both from the manifests",
		errCopyBehind, theirs, l.Generation, b.store.Path())
}

// sameLedger reports whether two ledgers encode to the same file.
func sameLedger(a, b *ledger.Ledger) bool {
	x, errA := ledger.Marshal(a)
	y, errB := ledger.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(x, y)
}
