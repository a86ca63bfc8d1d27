package backup

import (
	"context"
	"fmt"

	"github.com/zfs2s3/zfs2s3/ledger"
)

// EdgeRef names a stored edge the way users type it; GUIDs disambiguate
// snapshots re-created under the same name.
type EdgeRef struct {
	Target, Base         string
	TargetGUID, BaseGUID uint64
}

// Remove deletes a stored edge if the ledger's rule allows it. The edge is
// marked first, so a crash between the delete and the ledger update is
// finished by the next run instead of leaving an edge without an object.
func (b *Backup) Remove(ctx context.Context, ref EdgeRef) error {
	if err := b.checkCanDelete(ctx, "remove"); err != nil {
		return err
	}
	var removed ledger.Edge
	err := b.withLedger(ctx, func(l *ledger.Ledger) (bool, error) {
		e, err := l.Find(ref.Target, ref.Base, ref.TargetGUID, ref.BaseGUID)
		if err != nil {
			return false, usagef("%v", err)
		}
		ps, err := b.loadPending()
		if err != nil {
			return false, err
		}
		if err := l.CheckRemove(e.ID(), append(pendingEdges(ps), b.hostUploads...)); err != nil {
			return false, err
		}
		// On a bucket with object lock a delete of a locked object only
		// hides it behind a delete marker: the edge would leave the ledger
		// while its bytes stay. A locked edge is refused instead.
		if err := b.refuseLocked(ctx, e); err != nil {
			return false, err
		}
		l.MarkRemoving(e.ID())
		if err := b.saveLedger(ctx, l); err != nil {
			return false, err
		}
		if err := b.deleteObjects(ctx, e.Keys()); err != nil {
			return false, fmt.Errorf("remove %s: %w; the ledger marks it as being removed, run the command again to finish", e, err)
		}
		l.Drop(e.ID())
		removed = e
		return true, nil
	})
	if err != nil {
		return err
	}
	b.Out("removed %s (s3://%s/%s)", removed, b.S3.Bucket(), removed.Key)
	return nil
}
