package backup

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/plan"
	"github.com/zfs2s3/zfs2s3/statefile"
)

// keepLocal destroys the dataset's local snapshots that keep_local lets go
// (plan.KeepLocal decides) and records them in dr. It decides and destroys
// under the ledger lock, so that no upload can start from a snapshot
// between the decision and its destruction (an upload records its intent
// under that lock). A dry run lists what it would destroy, counting the
// edges it plans (planned, by target GUID) and the snapshot create would
// take (virtual) as stored.
func (b *Backup) keepLocal(ctx context.Context, d config.Dataset, opt RunOptions, planned map[uint64]bool, virtual *plan.Snapshot, dr *DatasetReport) error {
	var l *ledger.Ledger
	var err error
	if opt.DryRun {
		l, err = b.readLedger(ctx)
	} else {
		var lock *statefile.Lock
		if lock, err = b.store.Lock(ctx); err != nil {
			return fmt.Errorf("keep_local: %w", err)
		}
		defer lock.Unlock()
		l, err = b.loadLedger(ctx, false)
		err = setupError(err)
	}
	if err != nil {
		return fmt.Errorf("keep_local: %w", err)
	}
	local, err := b.ZFS.Snapshots(ctx, d.Name)
	if err != nil {
		return fmt.Errorf("keep_local: %w", err)
	}
	ps, err := b.loadPending()
	if err != nil {
		return fmt.Errorf("keep_local: %w", err)
	}
	pending := map[uint64]bool{}
	for _, e := range pendingEdges(ps) {
		pending[e.Target.GUID] = true
		if e.Base != nil {
			pending[e.Base.GUID] = true
		}
	}
	stored, full := storedGUIDs(l, d.Name)
	for g, f := range planned {
		stored[g], full[g] = true, full[g] || f
	}
	var snaps []plan.LocalSnapshot
	for _, s := range local {
		_, short, _ := strings.Cut(s.Name, "@")
		t, ok := d.SnapshotTime(short, s.Creation)
		snaps = append(snaps, plan.LocalSnapshot{Name: s.Name, Time: t, Created: d.Created(short), Undated: !ok,
			Stored: stored[s.GUID], StoredFull: full[s.GUID], Pending: pending[s.GUID]})
	}
	if virtual != nil {
		snaps = append(snaps, plan.LocalSnapshot{Name: virtual.Name, Time: virtual.Time, Created: true, Stored: true, StoredFull: planned[0]})
	}
	destroy := plan.KeepLocal(snaps, plan.LocalRules{KeepLocal: *d.KeepLocal, Keep: d.Keep,
		ChainFull: d.Chain == config.ChainFull, FullEvery: d.FullEvery, Loc: time.Local})
	for _, name := range destroy {
		if opt.DryRun {
			dr.WouldDestroy = append(dr.WouldDestroy, name)
			b.Out("%s: would destroy %s (keep_local)", d.Name, name)
			continue
		}
		if err := b.ZFS.Destroy(ctx, name, false); err != nil {
			return fmt.Errorf("keep_local: destroy %s: %w", name, err)
		}
		dr.Destroyed = append(dr.Destroyed, name)
		b.Out("%s: destroyed %s (keep_local)", d.Name, name)
	}
	return nil
}

// storedGUIDs returns the GUIDs of the dataset's snapshots that the ledger
// stores restorably (edges being removed or unrestorable not counted), and
// which of them as a full stream.
func storedGUIDs(l *ledger.Ledger, dataset string) (stored, full map[uint64]bool) {
	broken := map[ledger.ID]bool{}
	for _, be := range l.Broken(nil) {
		broken[be.Edge.ID()] = true
	}
	stored, full = map[uint64]bool{}, map[uint64]bool{}
	for _, e := range l.Edges {
		if e.Removing || broken[e.ID()] || e.Target.Dataset() != dataset {
			continue
		}
		stored[e.Target.GUID] = true
		if e.IsFull() {
			full[e.Target.GUID] = true
		}
	}
	return stored, full
}
