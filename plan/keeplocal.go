package plan

import (
	"time"

	"github.com/zfs2s3/zfs2s3/retention"
)

// LocalSnapshot is one local snapshot of a dataset as keep_local sees it.
type LocalSnapshot struct {
	Name string
	Time time.Time // as the dataset's rules read it (see config.Dataset.SnapshotTime)
	// Created is true when zfs2s3 took it: its name is what the
	// dataset's create pattern writes. No other snapshot is destroyed.
	Created bool
	// Stored is true when a restorable stored edge leads to it;
	// StoredFull when one of them is a full stream.
	Stored, StoredFull bool
	// Pending is true when an upload not yet finished sends it or from it.
	Pending bool
	// Undated is true when its time is unknown (a name that does not fit
	// time_format): prune keeps such a snapshot and leaves it out of the
	// stored retention's count, and so does KeepLocal. Never a created one.
	Undated bool
}

// LocalRules are what keep_local must respect besides its own policy.
type LocalRules struct {
	KeepLocal retention.Policy // which created snapshots stay
	// Keep is the retention of stored snapshots (nil: prune keeps all).
	// A snapshot it keeps stays here: prune may have to send a bypass
	// edge from or to it.
	Keep *retention.Policy
	// ChainFull and FullEvery are the dataset's chain rules: when either
	// is set, the next upload needs the newest stored full here (as its
	// base, or to date the last full).
	ChainFull bool
	FullEvery time.Duration
	Loc       *time.Location // the zone the calendar rules count in
}

// KeepLocal returns the local snapshots to destroy, oldest first. snaps
// are the dataset's local snapshots, oldest first. A snapshot goes only
// when zfs2s3 created it, keep_local does not keep it, and it is stored
// and no longer needed here: it is not the newest stored snapshot (the
// next incremental's base), not one a pending upload reads, not one the
// stored retention keeps, and not the newest stored full when the chain
// rules need it. A snapshot not yet stored never goes: it would be lost.
func KeepLocal(snaps []LocalSnapshot, r LocalRules) []string {
	newestStored, newestFull := -1, -1
	for i, s := range snaps {
		if s.Stored {
			newestStored = i
		}
		if s.StoredFull {
			newestFull = i
		}
	}
	if !r.ChainFull && r.FullEvery == 0 {
		newestFull = -1
	}
	var created, stored []retention.Snapshot
	for _, s := range snaps {
		if s.Created {
			created = append(created, retention.Snapshot{Name: s.Name, Time: s.Time})
		}
		if s.Stored && !s.Undated {
			stored = append(stored, retention.Snapshot{Name: s.Name, Time: s.Time})
		}
	}
	kept := map[string]bool{}
	for _, d := range r.KeepLocal.Apply(created, r.Loc) {
		kept[d.Name] = kept[d.Name] || d.Kept()
	}
	if r.Keep != nil {
		// Over the stored snapshots here only: a snapshot the rules keep
		// among all stored ones is the newest of its period among these
		// too, and its period ranks no lower, so it is kept here as well.
		for _, d := range r.Keep.Apply(stored, r.Loc) {
			kept[d.Name] = kept[d.Name] || d.Kept()
		}
	}
	var out []string
	for i, s := range snaps {
		if s.Created && !s.Undated && s.Stored && !s.Pending && !kept[s.Name] && i != newestStored && i != newestFull {
			out = append(out, s.Name)
		}
	}
	return out
}
