package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
)

// LedgerKey is where the bucket keeps its copy of the ledger, so that the
// backups can be restored when the machine that made them is gone.
func LedgerKey(prefix string) string { return s3up.NormalizePrefix(prefix) + ".zfs2s3/ledger.yaml" }

// bucketLedger reads the bucket's copy of the ledger; nil when there is none.
func (b *Backup) bucketLedger(ctx context.Context) (*ledger.Ledger, error) {
	key := LedgerKey(b.Opt.Prefix)
	r, err := b.S3.Get(ctx, key)
	if errors.Is(err, s3up.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read s3://%s/%s: %w", b.S3.Bucket(), key, err)
	}
	l, err := ledger.Parse(data)
	if err == nil && (l.Bucket != b.S3.Bucket() || l.Prefix != b.Opt.Prefix) {
		err = fmt.Errorf("%w: it is for bucket %q prefix %q", ledger.ErrDamaged, l.Bucket, l.Prefix)
	}
	if err != nil {
		return nil, fmt.Errorf("the bucket's ledger s3://%s/%s: %w; run zfs2s3 ledger rebuild", b.S3.Bucket(), key, err)
	}
	return l, nil
}

// loadLedger returns the local ledger, or the bucket's copy when there is
// no local one (a new machine). When the bucket's copy is newer, another
// machine has changed it: read-only commands use it, mutating ones refuse
// rather than overwrite it. Hold the ledger lock.
func (b *Backup) loadLedger(ctx context.Context, mutate bool) (*ledger.Ledger, error) {
	local, err := b.store.Load(b.S3.Bucket(), b.Opt.Prefix)
	if err != nil {
		return nil, err
	}
	remote, err := b.bucketLedger(ctx)
	switch {
	case err != nil && b.store.Exists():
		slog.Warn("using the local ledger; the bucket's copy will be replaced on the next change", "error", err)
		return local, nil
	case err != nil:
		return nil, err
	case remote == nil:
		return local, nil
	case !b.store.Exists():
		slog.Info("no local ledger; using the bucket's copy", "generation", remote.Generation)
		return remote, b.store.Save(remote)
	case remote.Generation > local.Generation && mutate:
		return nil, fmt.Errorf("the bucket's ledger (generation %d) is newer than the local one (generation %d): another machine changed it; move %s away to adopt the bucket's copy",
			remote.Generation, local.Generation, b.store.Path())
	case remote.Generation > local.Generation:
		return remote, nil
	}
	return local, nil
}

// saveLedger writes the next generation of the ledger locally, then to the
// bucket. A failed bucket write is repaired by the next save.
func (b *Backup) saveLedger(ctx context.Context, l *ledger.Ledger) error {
	l.Generation++
	if err := b.store.Save(l); err != nil {
		return err
	}
	data, err := ledger.Marshal(l)
	if err != nil {
		return err
	}
	meta := map[string]string{"zfs2s3-generation": strconv.FormatUint(l.Generation, 10)}
	if err := b.S3.Put(ctx, LedgerKey(b.Opt.Prefix), data, meta); err != nil {
		return fmt.Errorf("ledger saved locally but not to the bucket (%w); the next change writes it again", err)
	}
	return nil
}
