package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
)

// Merging another machine's journal entries into this machine's ledger
// (README "When the machine is gone"). A fleet has hosts that add edges
// and an admin machine that prunes them, both writing the same dataset's
// journal; entries are written with If-None-Match, so neither overwrites
// the other, and the one that loses the race (or finds the journal moved
// on when it starts) merges instead of refusing:
//
//   - base is the dataset's edges as this machine last wrote or read them
//     in the journal, mine are its edges now (base plus its own change),
//     theirs are the journal's edges now (base plus the other machines'
//     changes);
//   - the merge is theirs with this machine's change applied: an edge
//     either side added is kept, one either side removed (dropped, or
//     marked as being removed) goes, and an edge both sides changed in
//     different ways is a conflict;
//   - then the guard: every edge, and every local pending upload, whose
//     base either side could restore must still have its base restorable
//     in the merge. Otherwise the merge is refused, naming what would
//     lose its chain, as a change that cannot be merged always was.

// mergeConflict is an edge both sides changed in different ways.
type mergeConflict struct{ edge string }

func (c *mergeConflict) Error() string {
	return fmt.Sprintf("%s was changed differently by this machine and by another one", c.edge)
}

// mergeEdges returns theirs with the change from base to mine applied.
// All three are one dataset's edges. Edges keep theirs' order, this
// machine's additions go last.
func mergeEdges(base, mine, theirs []ledger.Edge) ([]ledger.Edge, error) {
	put, dropped, changed := ledger.Delta(base, mine)
	if !changed {
		return append([]ledger.Edge(nil), theirs...), nil
	}
	inBase := map[ledger.ID]ledger.Edge{}
	for _, e := range base {
		inBase[e.ID()] = e
	}
	inTheirs := map[ledger.ID]ledger.Edge{}
	for _, e := range theirs {
		inTheirs[e.ID()] = e
	}
	drop := map[ledger.ID]bool{}
	for _, d := range dropped {
		drop[ledger.ID{BaseGUID: d.BaseGUID, TargetGUID: d.TargetGUID}] = true
	}
	var add []ledger.Edge
	repl := map[ledger.ID]ledger.Edge{}
	for _, e := range put {
		id := e.ID()
		old, wasBase := inBase[id]
		cur, isTheirs := inTheirs[id]
		switch {
		case isTheirs && edgeSame(cur, e):
			// Both sides made the same change.
		case !wasBase && !isTheirs:
			add = append(add, e) // this machine's addition
		case !wasBase:
			return nil, &mergeConflict{edge: e.String()} // both added it, differently
		case !isTheirs:
			// They dropped it (its objects are gone); this machine only
			// changed it: marking it as being removed agrees, anything
			// else would bring back an edge without objects.
			if !e.Removing {
				return nil, &mergeConflict{edge: e.String()}
			}
		case edgeSame(cur, old):
			repl[id] = e // only this machine changed it
		case cur.Removing && e.Removing:
			repl[id] = e
		default:
			return nil, &mergeConflict{edge: e.String()}
		}
	}
	out := make([]ledger.Edge, 0, len(theirs)+len(add))
	for _, e := range theirs {
		id := e.ID()
		if drop[id] {
			continue // this machine removed it (and deleted its objects)
		}
		if r, ok := repl[id]; ok {
			e = r
		}
		out = append(out, e)
	}
	return append(out, add...), nil
}

// edgeSame compares two edges whole (ledger.Delta's notion of a change).
func edgeSame(a, b ledger.Edge) bool {
	_, _, changed := ledger.Delta([]ledger.Edge{a}, []ledger.Edge{b})
	return !changed
}

// lostChains is the merge's guard: the edges of merged and the pending
// uploads whose base mine or theirs restores and merged does not. Each
// of mine, theirs and merged is a whole ledger's edges.
func lostChains(mine, theirs, merged, pending []ledger.Edge) []string {
	rm, rt, rg := ledger.RestorableGUIDs(mine), ledger.RestorableGUIDs(theirs), ledger.RestorableGUIDs(merged)
	inMine, inTheirs := map[ledger.ID]bool{}, map[ledger.ID]bool{}
	for _, e := range mine {
		inMine[e.ID()] = !e.Removing
	}
	for _, e := range theirs {
		inTheirs[e.ID()] = !e.Removing
	}
	var lost []string
	for _, e := range merged {
		id := e.ID()
		if e.Removing || rg[id.BaseGUID] {
			continue
		}
		if (inMine[id] && rm[id.BaseGUID]) || (inTheirs[id] && rt[id.BaseGUID]) {
			lost = append(lost, e.String())
		}
	}
	for _, p := range pending {
		b := p.ID().BaseGUID
		if !rg[b] && (rm[b] || rt[b]) {
			lost = append(lost, "pending upload "+p.String())
		}
	}
	sort.Strings(lost)
	return lost
}

// mergeDataset merges dataset ds of the whole ledger l (this machine's)
// with theirs, the journal's edges of ds now; base is what l's edges of
// ds were in the journal. It returns the whole merged ledger's edges, or
// why the merge is refused.
func mergeDataset(bucket, prefix string, l []ledger.Edge, ds string, base, theirs, pending []ledger.Edge) ([]ledger.Edge, error) {
	var mine, others []ledger.Edge
	for _, e := range l {
		if e.Target.Dataset() == ds {
			mine = append(mine, e)
		} else {
			others = append(others, e)
		}
	}
	m, err := mergeEdges(base, mine, theirs)
	if err != nil {
		return nil, err
	}
	merged := append(append([]ledger.Edge(nil), others...), m...)
	theirsAll := append(append([]ledger.Edge(nil), others...), theirs...)
	if lost := lostChains(l, theirsAll, merged, pending); len(lost) > 0 {
		return nil, &ledger.RefusedError{Edge: "merge of another machine's change to " + ds,
			Reason:  fmt.Sprintf("%d edge(s) or pending upload(s) would lose the chain to their base", len(lost)),
			Blocked: lost}
	}
	// The merge must pass the ledger's own checks (duplicates, cycles).
	if err := checkLedger(bucket, prefix, merged); err != nil {
		return nil, fmt.Errorf("merge of another machine's change to %s: %w", ds, err)
	}
	return merged, nil
}

// journalMerge is a dataset whose journal another machine moved on from
// the entry this machine's ledger matches.
type journalMerge struct {
	ds           string
	base, theirs []ledger.Edge
	mark         journalMark // of the journal's newest entry
	// reached: theirs was read back to this machine's entry; otherwise a
	// full entry written since superseded it.
	reached bool
}

// mergeJournals merges each dataset of merges into this machine's ledger
// l, saves the result locally and records the journals' entries it
// matches now. Any dataset that cannot be merged refuses the whole
// command, which changes nothing.
func (b *Backup) mergeJournals(ctx context.Context, j *journal, l *ledger.Ledger, merges []journalMerge) (*ledger.Ledger, error) {
	ps, err := b.loadPending()
	if err != nil {
		return nil, err
	}
	check := func(mg journalMerge) error {
		if mg.reached {
			return nil
		}
		return b.checkSuperseded(ctx, mg.ds, mg.base, mg.theirs)
	}
	edges, err := mergeAll(b.S3.Bucket(), b.Opt.Prefix, l.Edges, merges, pendingEdges(ps), check)
	if err != nil {
		return nil, err
	}
	for _, mg := range merges {
		slog.Info("merged another machine's change of the bucket's ledger journal", "dataset", mg.ds, "entry", mg.mark.Seq)
	}
	out := &ledger.Ledger{Version: l.Version, Bucket: l.Bucket, Prefix: l.Prefix, Generation: l.Generation + 1, Edges: edges}
	if err := b.store.Save(out); err != nil {
		return nil, err
	}
	for _, mg := range merges {
		j.base[mg.ds] = mg.theirs
		j.state.Datasets[mg.ds] = mg.mark
	}
	return out, nil
}

// mergeAll merges every dataset of merges (one entry per dataset) into l,
// the whole ledger's edges, calling check on each first. It merges all
// datasets' edges, then runs the guard and the ledger's checks once on
// the result: a dataset at a time (mergeDataset over the whole ledger for
// each) made a host with many datasets quadratic under the ledger lock.
// When a dataset conflicts or the result fails them, the merges are done
// again a dataset at a time, so that the refusal is the one (naming its
// dataset) that a dataset at a time always gave.
func mergeAll(bucket, prefix string, l []ledger.Edge, merges []journalMerge, pending []ledger.Edge, check func(journalMerge) error) ([]ledger.Edge, error) {
	refused := func(mg journalMerge, err error) error {
		return fmt.Errorf("the bucket's ledger journal of %s (entry %d) was changed by another machine, and the change cannot be merged: %w; run zfs2s3 ledger rebuild to merge both from the manifests", mg.ds, mg.mark.Seq, err)
	}
	oneByOne := func() ([]ledger.Edge, error) {
		edges := l
		for _, mg := range merges {
			var err error
			if edges, err = mergeDataset(bucket, prefix, edges, mg.ds, mg.base, mg.theirs, pending); err != nil {
				return nil, refused(mg, err)
			}
		}
		return edges, nil
	}
	byDS := ledger.ByDataset(l)
	mergedDS := make(map[string][]ledger.Edge, len(merges))
	for _, mg := range merges {
		if err := check(mg); err != nil {
			return nil, err
		}
		m, err := mergeEdges(mg.base, byDS[mg.ds], mg.theirs)
		if err != nil {
			return oneByOne() // an earlier dataset's refusal comes first
		}
		mergedDS[mg.ds] = m
	}
	// The order a dataset at a time gave: the other datasets' edges as in
	// l, then each merged dataset's in the order of merges.
	var merged, theirsAll []ledger.Edge
	for _, e := range l {
		if _, ok := mergedDS[e.Target.Dataset()]; !ok {
			merged = append(merged, e)
		}
	}
	theirsAll = append(theirsAll, merged...)
	for _, mg := range merges {
		merged = append(merged, mergedDS[mg.ds]...)
		theirsAll = append(theirsAll, mg.theirs...)
	}
	if len(lostChains(l, theirsAll, merged, pending)) == 0 && checkLedger(bucket, prefix, merged) == nil {
		return merged, nil
	}
	return oneByOne()
}

// checkLedger runs the ledger's own checks (duplicates, cycles) on edges.
func checkLedger(bucket, prefix string, edges []ledger.Edge) error {
	check := ledger.New(bucket, prefix)
	check.Edges = edges
	data, err := ledger.Marshal(check)
	if err == nil {
		_, err = ledger.Parse(data)
	}
	return err
}

// checkSuperseded refuses a full entry of ds, written by another machine
// over the entry this machine last matched, that lacks an edge this
// machine has whose objects are still in the bucket: the other machine
// did not know of it (it replaced a journal it found damaged), and
// dropping it would lose a stored edge. An edge whose objects are gone
// was removed.
func (b *Backup) checkSuperseded(ctx context.Context, ds string, mine, theirs []ledger.Edge) error {
	have := map[ledger.ID]bool{}
	for _, e := range theirs {
		have[e.ID()] = true
	}
	for _, e := range mine {
		if have[e.ID()] || e.Removing {
			continue
		}
		_, err := b.S3.Head(ctx, e.Key)
		switch {
		case errors.Is(err, s3up.ErrNotFound):
			continue
		case err != nil:
			return fmt.Errorf("cannot check that another machine's full entry of the bucket's ledger journal of %s left out only removed edges (%w); try again", ds, err)
		}
		return fmt.Errorf("the bucket's ledger journal of %s was replaced by another machine's full entry without %s, whose objects are still in the bucket; run zfs2s3 ledger rebuild to merge both from the manifests", ds, e)
	}
	return nil
}

// errJournalRace: another machine wrote the journal entry this machine
// was about to write.
var errJournalRace = errors.New("lost the race for a ledger journal entry")

// maxMergeTries bounds the merges of one dataset's write: each lost race
// means another machine wrote an entry meanwhile, so a write that loses
// this often is better tried again later than looped on.
const maxMergeTries = 5

// rebase merges the entries another machine wrote to ds's journal since
// this machine's last entry into l (saved locally), for the retry of the
// write pushDataset lost. It returns the dataset's merged edges, or nil
// when the write was no change on top of the journal (a full entry that
// supersedes it, or a rebuild), which is not merged.
func (b *Backup) rebase(ctx context.Context, j *journal, l *ledger.Ledger, ds string) ([]ledger.Edge, error) {
	base, known := j.base[ds]
	if !known || b.rebuilding {
		return nil, nil
	}
	fresh, err := b.listJournal(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot read the bucket's ledger journal of %s again to merge another machine's change (%w); the next zfs2s3 command writes it", ds, err)
	}
	j.entries[ds] = fresh.entries[ds]
	mark := j.state.Datasets[ds]
	theirs, m, reached, err := b.readDatasetFrom(ctx, j, ds, &mark, base)
	if err != nil {
		return nil, fmt.Errorf("cannot read another machine's change of the bucket's ledger journal of %s to merge it (%w); run zfs2s3 ledger rebuild to merge both from the manifests", ds, err)
	}
	if !reached {
		if err := b.checkSuperseded(ctx, ds, base, theirs); err != nil {
			return nil, err
		}
	}
	ps, err := b.loadPending()
	if err != nil {
		return nil, err
	}
	edges, err := mergeDataset(b.S3.Bucket(), b.Opt.Prefix, l.Edges, ds, base, theirs, pendingEdges(ps))
	if err != nil {
		return nil, fmt.Errorf("another machine changed the bucket's ledger journal of %s while this command ran, and the change cannot be merged: %w; %s", ds, err, b.localOnly())
	}
	l.Edges = edges
	l.Generation++
	if err := b.store.Save(l); err != nil {
		return nil, err
	}
	j.base[ds] = theirs
	j.state.Datasets[ds] = m
	// The journal record must match the saved ledger at once: a kill
	// before the end of the command would otherwise leave the old entry
	// recorded with the merged ledger, which the next run refuses as
	// changed by another machine. With the new record, it sees its own
	// unwritten change and writes it.
	if err := b.writeJournalState(j.state); err != nil {
		return nil, err
	}
	slog.Info("merged another machine's change of the bucket's ledger journal written meanwhile", "dataset", ds, "entry", m.Seq)
	out := ledger.ByDataset(edges)[ds]
	if out == nil {
		out = []ledger.Edge{}
	}
	return out, nil
}
