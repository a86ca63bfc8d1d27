package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/health"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/metrics"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// snapshotTime is a stored snapshot's time, the one freshness is judged
// by: read from its name when the dataset has a time_format that fits,
// else the local snapshot's creation property, else (gone locally) when
// its first edge was uploaded, which is never earlier than the snapshot.
func snapshotTime(d config.Dataset, s ledger.Snapshot, local map[uint64]zfs.Snapshot, firstUpload time.Time) time.Time {
	if d.TimeFormat != "" {
		if t, ok := d.SnapshotTime(s.Short(), time.Time{}); ok {
			return t
		}
	}
	if ls, ok := local[s.GUID]; ok {
		return ls.Creation
	}
	return firstUpload
}

// needsCreation reports whether dating d's stored snapshots needs their
// creation property: some name does not give the time. Listing a
// dataset's snapshots is a zfs command, which a run over hundreds of
// datasets does not repeat for nothing.
func needsCreation(l *ledger.Ledger, d config.Dataset) bool {
	if d.TimeFormat == "" {
		return true
	}
	for _, e := range l.Edges {
		if e.Target.Dataset() == d.Name {
			if _, ok := d.SnapshotTime(e.Target.Short(), time.Time{}); !ok {
				return true
			}
		}
	}
	return false
}

// storedSummary is what the ledger stores of one dataset.
type storedSummary struct {
	// restorable are the stored snapshots a chain restores, oldest
	// first: by snapshot time, never before the base of an edge into it.
	restorable   []storedSnap
	unrestorable int
	bytes        int64
}

// summarize reads dataset d's stored snapshots from l; broken holds the
// edges no chain restores (ledger.Broken, with the bucket listing's
// missing objects when there is one), local the dataset's snapshots here.
func summarize(l *ledger.Ledger, broken map[ledger.ID]bool, d config.Dataset, local []zfs.Snapshot) storedSummary {
	here := make(map[uint64]zfs.Snapshot, len(local))
	for _, s := range local {
		here[s.GUID] = s
	}
	var sum storedSummary
	type info struct {
		snap        ledger.Snapshot
		ok          bool
		firstUpload time.Time
	}
	byGUID := map[uint64]*info{}
	var order []uint64 // ledger order, for a stable result
	var edges []ledger.Edge
	for _, e := range l.Edges {
		if e.Removing || e.Target.Dataset() != d.Name {
			continue
		}
		sum.bytes += e.StoredBytes
		in, seen := byGUID[e.Target.GUID]
		if !seen {
			in = &info{snap: e.Target, firstUpload: e.Uploaded}
			byGUID[e.Target.GUID] = in
			order = append(order, e.Target.GUID)
		}
		if e.Uploaded.Before(in.firstUpload) {
			in.firstUpload = e.Uploaded
		}
		if !broken[e.ID()] {
			in.ok = true
			edges = append(edges, e)
		}
	}
	var snaps []storedSnap
	for _, g := range order {
		in := byGUID[g]
		if !in.ok {
			sum.unrestorable++
			continue
		}
		s := storedSnap{snap: in.snap, time: snapshotTime(d, in.snap, here, in.firstUpload), known: true}
		if ls, ok := here[g]; ok {
			s.local = ls.Name
		}
		snaps = append(snaps, s)
	}
	sum.restorable = orderSnaps(snaps, edges)
	return sum
}

// health is the summary as package health takes it.
func (s storedSummary) health(dataset string) health.Stored {
	h := health.Stored{Dataset: dataset, Snapshots: len(s.restorable), Unrestorable: s.unrestorable, Bytes: s.bytes}
	if n := len(s.restorable); n > 0 {
		h.Newest, h.NewestTime = s.restorable[n-1].snap.Name, s.restorable[n-1].time
	}
	return h
}

// brokenIDs are the edges no chain restores, given the edges whose
// objects are missing (nil: the ledger alone).
func brokenIDs(l *ledger.Ledger, missing map[ledger.ID]bool) map[ledger.ID]bool {
	bad := map[ledger.ID]bool{}
	for _, be := range l.Broken(missing) {
		bad[be.Edge.ID()] = true
	}
	return bad
}

// Newest returns the newest restorable stored snapshot of dataset d (by
// snapshot time, and never one whose stored edges lead on to another),
// as restore without @SNAP restores it.
func (b *Backup) Newest(ctx context.Context, d config.Dataset) (ledger.Snapshot, time.Time, error) {
	l, err := b.readLedger(ctx)
	if err != nil {
		return ledger.Snapshot{}, time.Time{}, err
	}
	local, err := b.ZFS.Snapshots(ctx, d.Name)
	if err != nil && !errors.Is(err, zfs.ErrNotExist) {
		return ledger.Snapshot{}, time.Time{}, err
	}
	sum := summarize(l, brokenIDs(l, nil), d, local)
	n := len(sum.restorable)
	if n == 0 {
		if sum.unrestorable > 0 {
			return ledger.Snapshot{}, time.Time{}, fmt.Errorf("no stored snapshot of %s is restorable (%d are not: see zfs2s3 status %s)", d.Name, sum.unrestorable, d.Name)
		}
		return ledger.Snapshot{}, time.Time{}, usagef("nothing of %s is stored (see zfs2s3 status)", d.Name)
	}
	return sum.restorable[n-1].snap, sum.restorable[n-1].time, nil
}

// WriteMetrics records a backup or prune run (rep is its RunReport or
// PruneReport) in the metrics file at path, with what the ledger stores
// of each configured dataset after it. It holds the ledger lock, so that
// a backup and a prune ending at once do not lose each other's
// families, and it reads only this machine's ledger and zfs: no S3
// request. When the ledger cannot be read, the run is still recorded and
// the file's stored families are kept. Cancelling ctx does not stop it:
// an interrupted run is still recorded as one.
func (b *Backup) WriteMetrics(ctx context.Context, path string, configured []config.Dataset, rep any, finished time.Time) error {
	ctx = context.WithoutCancel(ctx)
	u := metrics.Update{Finished: finished}
	ran := map[string]bool{}
	switch r := rep.(type) {
	case RunReport:
		u.Command = metrics.Backup
		for _, d := range r.Datasets {
			m := metrics.DatasetRun{Dataset: d.Dataset, Success: len(d.Errors) == 0, Seconds: d.Seconds, UploadedEdges: len(d.Uploaded)}
			for _, e := range d.Uploaded {
				m.UploadedBytes += e.Bytes
			}
			u.Runs = append(u.Runs, m)
			ran[d.Dataset] = true
		}
	case PruneReport:
		u.Command = metrics.Prune
		for _, d := range r.Datasets {
			m := metrics.DatasetRun{Dataset: d.Dataset, Success: len(d.Errors) == 0, Seconds: d.Seconds, RemovedEdges: len(d.Removed), BypassEdges: len(d.Bypass)}
			for _, e := range d.Removed {
				m.FreedBytes += e.Bytes
			}
			u.Runs = append(u.Runs, m)
			ran[d.Dataset] = true
		}
	default:
		return fmt.Errorf("no metrics for a %T", rep)
	}
	for _, d := range configured {
		if !ran[d.Name] {
			u.Keep = append(u.Keep, d.Name)
		}
	}
	lock, err := b.store.Lock(ctx)
	if err != nil {
		return fmt.Errorf("write the metrics file %s: %w", path, lockedHint(err, "another zfs2s3"))
	}
	defer lock.Unlock()
	if l, err := b.store.Load(b.S3.Bucket(), b.Opt.Prefix); err != nil {
		slog.Warn("the ledger cannot be read for the metrics file; its stored figures are kept from before", "error", err)
	} else {
		broken := brokenIDs(l, nil)
		u.Stored = make([]health.Stored, 0, len(configured))
		for _, d := range configured {
			var local []zfs.Snapshot
			if needsCreation(l, d) {
				local, err = b.ZFS.Snapshots(ctx, d.Name)
				if err != nil && !errors.Is(err, zfs.ErrNotExist) {
					slog.Warn("local snapshots unknown for the metrics file; snapshot times fall back to upload times", "dataset", d.Name, "error", err)
				}
			}
			u.Stored = append(u.Stored, summarize(l, broken, d, local).health(d.Name))
		}
	}
	return metrics.Write(path, u)
}
