// Package plan decides what a backup run uploads for one dataset: which
// snapshots, each as its own edge, from which base. It is a pure function
// of the local snapshots and what the ledger stores, so that `backup
// --dry-run` prints exactly what a run would do, and the rules are tested
// on their own.
//
// The rules are z3's: every selected snapshot newer than the newest stored
// one is uploaded, oldest first, each as its own edge. The base is the
// snapshot before it (chain "previous") or the newest full (chain "full");
// a base that is gone locally, or whose GUID changed, is passed over for
// the newest usable one, and with none left the edge is a full stream. A
// new full is also due once full_every of snapshot time has passed since
// the last one.
package plan

import (
	"strconv"
	"time"
)

// Snapshot is a local snapshot the dataset's rules select, with what the
// ledger says of it.
type Snapshot struct {
	Name string // DATASET@SNAP
	GUID uint64
	Time time.Time // from its name (time_format) or its creation
	// Stored is true when a restorable stored edge leads to this GUID;
	// StoredFull when one of them is a full stream.
	Stored, StoredFull bool
}

// Rules are the dataset's chain rules (see package config).
type Rules struct {
	ChainFull bool          // incrementals from the newest full instead of the previous snapshot
	FullEvery time.Duration // 0: only when no base is usable
}

// Edge is one planned upload; Base is nil for a full stream.
type Edge struct {
	Target Snapshot
	Base   *Snapshot
	Why    string // why this base, or why a full
}

// Make plans the uploads. snaps are the dataset's selected local
// snapshots, oldest first (by creation). fullTimes are the snapshot times
// of stored fulls whose snapshots are gone locally, for full_every.
func Make(snaps []Snapshot, r Rules, fullTimes []time.Time) []Edge {
	newest := -1
	for i, s := range snaps {
		if s.Stored {
			newest = i
		}
	}
	var lastFull time.Time
	for _, t := range fullTimes {
		if t.After(lastFull) {
			lastFull = t
		}
	}
	// usable are the snapshots an incremental can start from: stored (or
	// planned in this run) and here with the GUID the ledger knows.
	var usable []Snapshot
	var fulls []Snapshot
	for _, s := range snaps[:newest+1] {
		if s.Stored {
			usable = append(usable, s)
		}
		if s.StoredFull {
			fulls = append(fulls, s)
			if s.Time.After(lastFull) {
				lastFull = s.Time
			}
		}
	}
	var out []Edge
	for _, t := range snaps[newest+1:] {
		e := Edge{Target: t}
		switch {
		case len(usable) == 0:
			e.Why = "full: nothing stored to start from"
		case r.FullEvery > 0 && !lastFull.IsZero() && t.Time.Sub(lastFull) >= r.FullEvery:
			e.Why = "full: " + days(r.FullEvery) + " since the last full"
		case r.FullEvery > 0 && lastFull.IsZero():
			e.Why = "full: no full stored"
		case r.ChainFull && len(fulls) == 0:
			e.Why = "full: chain full, and no full stream here to start from"
		case r.ChainFull:
			b := fulls[len(fulls)-1]
			e.Base, e.Why = &b, "incremental from the newest full"
		default:
			b := usable[len(usable)-1]
			e.Base, e.Why = &b, "incremental from the newest stored snapshot here"
		}
		out = append(out, e)
		t.Stored = true
		usable = append(usable, t)
		if e.Base == nil {
			t.StoredFull = true
			fulls = append(fulls, t)
			lastFull = t.Time
		}
	}
	return out
}

// days writes a duration as configured (30d) when it is whole days, for
// the reason a dry run prints; "720h0m0s" would not read as full_every.
func days(d time.Duration) string {
	const day = 24 * time.Hour
	if d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}
