// Package prune plans how a dataset's stored edges shrink to what a
// retention decision keeps, as a pure function of the ledger's edges, so
// that the plan can be tested on random histories and shown by --dry-run
// before anything is uploaded or removed. Carrying a plan out is the
// backup package's job, and every removal still passes the ledger's
// guard (ledger.CheckRemove).
package prune

import (
	"sort"

	"github.com/zfs2s3/zfs2s3/ledger"
)

// Input is one dataset's stored state.
type Input struct {
	// Edges are the dataset's stored edges.
	Edges []ledger.Edge
	// Order lists the stored snapshots' GUIDs, oldest first (by creation).
	Order []uint64
	// Keep holds the snapshots retention keeps. The newest stored snapshot
	// is kept whatever it says.
	Keep map[uint64]bool
	// Local holds the snapshots present on this machine with the same
	// GUID: only between those can a bypass edge be sent.
	Local map[uint64]bool
}

// Bypass is an edge to upload before the removals: from the previous kept
// snapshot (nil: a full stream) to a kept one whose stored chain runs
// through snapshots that go.
type Bypass struct {
	Base   *ledger.Snapshot
	Target ledger.Snapshot
}

// Plan is what prune does, in order: upload the bypasses, then remove the
// edges, dependents first, so that each removal passes the ledger's guard.
type Plan struct {
	Bypass []Bypass
	Remove []ledger.Edge
	// Stay names snapshots that are not kept but stay stored, because a
	// kept snapshot's chain runs through them and no bypass can be sent
	// (a snapshot is gone locally); the value is the kept snapshot.
	Stay map[uint64]ledger.Snapshot
}

// Make plans the prune of one dataset.
func Make(in Input) Plan {
	pos := make(map[uint64]int, len(in.Order))
	for i, g := range in.Order {
		pos[g] = i
	}
	keep := map[uint64]bool{}
	for g, k := range in.Keep {
		if k {
			keep[g] = true
		}
	}
	if n := len(in.Order); n > 0 {
		keep[in.Order[n-1]] = true // the newest stored snapshot is never pruned
	}
	into := map[uint64][]ledger.Edge{}
	names := map[uint64]ledger.Snapshot{}
	for _, e := range in.Edges {
		if e.Removing {
			continue
		}
		into[e.Target.GUID] = append(into[e.Target.GUID], e)
		names[e.Target.GUID] = e.Target
	}

	// chain[k] is the chain kept for kept snapshot k: edges (nil entries
	// for planned bypasses) whose ends are kept snapshots, or the stored
	// chain through snapshots that go when no bypass can be sent.
	type chain struct {
		edges []ledger.ID
		cost  int64
	}
	chains := map[uint64]chain{}
	p := Plan{Stay: map[uint64]ledger.Snapshot{}}
	prev := uint64(0) // the previous kept snapshot with a chain; 0: none yet
	for _, k := range in.Order {
		if !keep[k] {
			continue
		}
		// Cheapest stored edge into k from a full stream or a kept
		// snapshot that has its chain.
		best, found := chain{}, false
		for _, e := range into[k] {
			base := e.ID().BaseGUID
			bc, ok := chains[base]
			if base != 0 && !ok {
				continue
			}
			c := chain{edges: append(append([]ledger.ID{}, bc.edges...), e.ID()), cost: bc.cost + e.StoredBytes}
			if !found || c.cost < best.cost {
				best, found = c, true
			}
		}
		switch {
		case found:
		case in.Local[k] && (prev == 0 || in.Local[prev]):
			b := Bypass{Target: names[k]}
			if prev != 0 {
				s := names[prev]
				b.Base = &s
			}
			p.Bypass = append(p.Bypass, b)
			best, found = chains[prev], true // the bypass itself is not stored yet
		default:
			// No bypass possible: keep the stored chain, snapshots that go
			// included.
			if c, ok := storedChain(k, into, pos); ok {
				best, found = chain{edges: c}, true
				for _, id := range c {
					if b := id.BaseGUID; b != 0 && !keep[b] {
						p.Stay[b] = names[k]
					}
				}
			}
		}
		if !found {
			continue // unrestorable already (a damaged ledger): left alone
		}
		chains[k] = best
		prev = k
	}

	needed := map[ledger.ID]bool{}
	for _, c := range chains {
		for _, id := range c.edges {
			needed[id] = true
		}
	}
	for k, kept := range keep {
		if _, ok := chains[k]; kept && !ok { // unrestorable: touch nothing into it
			for _, e := range into[k] {
				needed[e.ID()] = true
			}
		}
	}
	for _, e := range in.Edges {
		if !e.Removing && !needed[e.ID()] {
			p.Remove = append(p.Remove, e)
		}
	}
	// Dependents first: newest target first, then newest base.
	sort.SliceStable(p.Remove, func(i, j int) bool {
		a, b := p.Remove[i].ID(), p.Remove[j].ID()
		if pos[a.TargetGUID] != pos[b.TargetGUID] {
			return pos[a.TargetGUID] > pos[b.TargetGUID]
		}
		return basePos(a, pos) > basePos(b, pos)
	})
	return p
}

func basePos(id ledger.ID, pos map[uint64]int) int {
	if id.BaseGUID == 0 {
		return -1
	}
	return pos[id.BaseGUID]
}

// storedChain returns the stored edges from a full stream to k that go
// back as few snapshots as possible, through any stored snapshots.
func storedChain(k uint64, into map[uint64][]ledger.Edge, pos map[uint64]int) ([]ledger.ID, bool) {
	// Walk back from k: the edges' bases are older, so this ends.
	memo := map[uint64][]ledger.ID{}
	var walk func(g uint64) ([]ledger.ID, bool)
	walk = func(g uint64) ([]ledger.ID, bool) {
		if c, ok := memo[g]; ok {
			return c, c != nil
		}
		memo[g] = nil
		var best []ledger.ID
		for _, e := range into[g] {
			id := e.ID()
			if id.BaseGUID == 0 {
				best = []ledger.ID{id}
				break
			}
			if pos[id.BaseGUID] >= pos[g] {
				continue
			}
			if c, ok := walk(id.BaseGUID); ok && (best == nil || len(c)+1 < len(best)) {
				best = append(append([]ledger.ID{}, c...), id)
			}
		}
		memo[g] = best
		return best, best != nil
	}
	return walk(k)
}
