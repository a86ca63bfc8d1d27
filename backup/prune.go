package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/prune"
	"github.com/zfs2s3/zfs2s3/retention"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// PruneOptions are the options of prune and consolidate.
type PruneOptions struct {
	// DryRun prints the plan and changes nothing.
	DryRun bool
}

// PruneReport is what prune or consolidate did (or, in a dry run, would
// do), per dataset. Its JSON shape is stable: fields may be added, none
// removed or renamed.
type PruneReport struct {
	DryRun   bool            `json:"dry_run"`
	Datasets []DatasetPruned `json:"datasets"`
}

// DatasetPruned is what prune did for one dataset.
type DatasetPruned struct {
	Dataset string `json:"dataset"`
	// Note says why nothing was planned, e.g. no keep rule.
	Note string `json:"note,omitempty"`
	// Bypass are the edges uploaded so that kept snapshots stay restorable.
	Bypass []string `json:"bypass"`
	// Removed are the edges removed, each with why it could go.
	Removed []PrunedEdge `json:"removed"`
	// Stay are snapshots no rule keeps that stay stored for a kept one.
	Stay []StayingSnapshot `json:"stay"`
	// Locked are edges the plan would remove that stay for an object
	// lock (backup/lock.go).
	Locked []KeptEdge `json:"locked"`
	Errors []string   `json:"errors"`
	// Seconds is how long the dataset took, for the metrics file.
	Seconds float64 `json:"seconds"`
}

// PrunedEdge is one edge prune removes.
type PrunedEdge struct {
	Edge string `json:"edge"`
	Why  string `json:"why"`
	// Bytes is what the edge took in the bucket.
	Bytes int64 `json:"bytes"`
}

// StayingSnapshot is a snapshot no rule keeps whose edges stay, because
// the chain of the kept snapshot For runs through it and no bypass can be
// sent (a snapshot is gone locally).
type StayingSnapshot struct {
	Snapshot string `json:"snapshot"`
	For      string `json:"for"`
}

// storedSnap is a snapshot the ledger stores restorably.
type storedSnap struct {
	snap  ledger.Snapshot
	local string // its name here, "" when no local snapshot has its GUID
	time  time.Time
	known bool // time is known: from the local snapshot or the name
}

// pruneJob is one dataset's stored state and what is to be kept of it.
type pruneJob struct {
	dataset string
	edges   []ledger.Edge // restorable, not being removed
	order   []storedSnap  // oldest first
	keep    map[uint64]bool
	// dropWhy says why an edge into a snapshot that is not kept may go.
	dropWhy func(s storedSnap) string
	// extra are edges counted as stored for the plan (a dry run's
	// consolidation edge), never removed.
	extra []ledger.Edge
}

// Prune applies each selected dataset's keep rule to its stored snapshots:
// it uploads the bypass edges that keep the kept snapshots restorable, then
// removes every edge no kept snapshot needs, each through the ledger's
// guard. The plan is recomputed from the ledger on every run, so a run
// that was interrupted is finished by the next one. A recursive dataset
// is pruned with each dataset below it that it covers, here or stored. One
// dataset failing does not stop the others; the error is a *RunError
// naming each.
func (b *Backup) Prune(ctx context.Context, datasets []config.Dataset, opt PruneOptions) (PruneReport, error) {
	rep := PruneReport{DryRun: opt.DryRun, Datasets: []DatasetPruned{}}
	if opt.DryRun {
		b.readOnly = true
	} else if err := b.checkCanDelete(ctx, "prune"); err != nil {
		return rep, err
	} else if err := b.finishInterrupted(ctx); err != nil {
		return rep, err
	}
	datasets, err := b.withChildren(ctx, datasets)
	if err != nil {
		return rep, err
	}
	if datasets, err = b.centralKeep(ctx, datasets); err != nil {
		return rep, err
	}
	var failed []string
	for _, d := range datasets {
		dr := newDatasetPruned(d.Name)
		start := time.Now()
		if err := b.pruneDataset(ctx, d, opt, &dr); err != nil {
			dr.Errors = append(dr.Errors, err.Error())
			failed = append(failed, fmt.Sprintf("prune of %s failed: %s", d.Name, strings.Join(strings.Fields(err.Error()), " ")))
		}
		dr.Seconds = time.Since(start).Round(time.Millisecond).Seconds()
		rep.Datasets = append(rep.Datasets, dr)
		if ctx.Err() != nil {
			break
		}
	}
	if len(failed) > 0 {
		return rep, &RunError{Lines: failed}
	}
	return rep, nil
}

// withChildren expands each recursive dataset into itself and the
// datasets below it that it covers: those here and those the ledger
// stores, since the stored snapshots of a child destroyed locally are
// still under the parent's retention.
func (b *Backup) withChildren(ctx context.Context, datasets []config.Dataset) ([]config.Dataset, error) {
	var out []config.Dataset
	var l *ledger.Ledger
	for _, d := range datasets {
		if !d.Recursive {
			out = append(out, d)
			continue
		}
		below, err := b.ZFS.Children(ctx, d.Name)
		if err != nil && !errors.Is(err, zfs.ErrNotExist) {
			return nil, fmt.Errorf("list the datasets below %s: %w", d.Name, err)
		}
		if l == nil {
			if l, err = b.readLedger(ctx); err != nil {
				return nil, err
			}
		}
		out = append(out, expandRecursive(d, append(below, storedBelow(l, d.Name)...))...)
	}
	return out, nil
}

// storedBelow lists the datasets below dataset that the ledger stores
// edges of.
func storedBelow(l *ledger.Ledger, dataset string) []string {
	var out []string
	for _, e := range l.Edges {
		if ds := e.Target.Dataset(); strings.HasPrefix(ds, dataset+"/") {
			out = append(out, ds)
		}
	}
	return out
}

func newDatasetPruned(name string) DatasetPruned {
	return DatasetPruned{Dataset: name, Bypass: []string{}, Removed: []PrunedEdge{}, Stay: []StayingSnapshot{}, Locked: []KeptEdge{}, Errors: []string{}}
}

// finishInterrupted completes removals an earlier run left marked as
// going: a rerun whose plan is otherwise done must still finish them.
func (b *Backup) finishInterrupted(ctx context.Context) error {
	return b.withLedger(ctx, func(*ledger.Ledger) (bool, error) { return false, nil })
}

func (b *Backup) pruneDataset(ctx context.Context, d config.Dataset, opt PruneOptions, dr *DatasetPruned) error {
	if d.Keep == nil {
		dr.Note = "nothing to prune: no keep rule"
		b.Out("%s: %s", d.Name, dr.Note)
		return nil
	}
	if _, err := b.finishPending(ctx, d.Name, RunOptions{DryRun: opt.DryRun}, &DatasetReport{}); err != nil {
		return err
	}
	job, err := b.storedState(ctx, d)
	if err != nil {
		return err
	}
	if undated := job.applyKeep(*d.Keep); len(undated) > 0 {
		slog.Warn("stored snapshots kept: their time is unknown (not here, and no time_format reads it from the name)", "dataset", d.Name, "snapshots", strings.Join(undated, " "))
	}
	// A bypass is stored as the dataset's backups are: its own compress
	// and recipients, never plain where backup would encrypt.
	return b.withDatasetTransform(d, func() error { return b.carryOut(ctx, job, opt, dr) })
}

// applyKeep sets what the keep rule keeps, and why the rest may go. A
// snapshot whose time is unknown is kept (and returned): never prune
// what cannot be dated.
func (job *pruneJob) applyKeep(keep retention.Policy) (undated []string) {
	var snaps []retention.Snapshot
	byName := map[string]uint64{}
	job.keep = map[uint64]bool{}
	for _, s := range job.order {
		if !s.known {
			job.keep[s.snap.GUID] = true
			undated = append(undated, s.snap.Name)
			continue
		}
		name := s.snap.Name
		if _, dup := byName[name]; dup {
			name = fmt.Sprintf("%s#%d", name, s.snap.GUID)
		}
		byName[name] = s.snap.GUID
		snaps = append(snaps, retention.Snapshot{Name: name, Time: s.time})
	}
	for _, dec := range keep.Apply(snaps, time.Local) {
		if dec.Kept() {
			job.keep[byName[dec.Name]] = true
		}
	}
	rule := keepRule(keep)
	job.dropWhy = func(s storedSnap) string { return fmt.Sprintf("%s is kept by no rule of keep %s", s.snap.Name, rule) }
	return undated
}

// keepRule prints a policy as it is written in the config.
func keepRule(p retention.Policy) string {
	var parts []string
	for _, r := range []struct {
		name string
		n    int
	}{{"last", p.Last}, {"hourly", p.Hourly}, {"daily", p.Daily}, {"weekly", p.Weekly}, {"monthly", p.Monthly}, {"yearly", p.Yearly}} {
		if r.n > 0 {
			parts = append(parts, fmt.Sprintf("%s: %d", r.name, r.n))
		}
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// storedState reads the dataset's restorable stored snapshots, their
// times and its local snapshots. Edges that no chain restores, or whose
// base is not stored restorably, are left out: prune leaves them alone.
func (b *Backup) storedState(ctx context.Context, d config.Dataset) (pruneJob, error) {
	local, err := b.ZFS.Snapshots(ctx, d.Name)
	if err != nil && !errors.Is(err, zfs.ErrNotExist) {
		return pruneJob{dataset: d.Name}, err
	}
	l, err := b.readLedger(ctx)
	if err != nil {
		return pruneJob{dataset: d.Name}, err
	}
	return jobOf(l, brokenIDs(l, nil), d, local), nil
}

// jobOf is storedState's pure part: dataset d's stored state in l, with
// its local snapshots; broken are the edges of l no chain restores.
func jobOf(l *ledger.Ledger, broken map[ledger.ID]bool, d config.Dataset, local []zfs.Snapshot) pruneJob {
	job := pruneJob{dataset: d.Name}
	stored := map[uint64]ledger.Snapshot{}
	for _, e := range l.Edges {
		if !e.Removing && !broken[e.ID()] && e.Target.Dataset() == d.Name {
			stored[e.Target.GUID] = e.Target
		}
	}
	for _, e := range l.Edges {
		if !e.Removing && !broken[e.ID()] && e.Target.Dataset() == d.Name {
			if _, ok := stored[e.ID().BaseGUID]; e.Base == nil || ok {
				job.edges = append(job.edges, e)
			}
		}
	}
	here := map[uint64]zfs.Snapshot{}
	for _, s := range local {
		here[s.GUID] = s
	}
	var snaps []storedSnap
	for g, s := range stored {
		ss := storedSnap{snap: s}
		if ls, ok := here[g]; ok {
			ss.local = ls.Name
			_, short, _ := strings.Cut(ls.Name, "@")
			ss.time, ss.known = d.SnapshotTime(short, ls.Creation)
		} else {
			ss.time, ss.known = d.NameTime(s.Short())
		}
		snaps = append(snaps, ss)
	}
	job.order = orderSnaps(snaps, job.edges)
	return job
}

// orderSnaps orders stored snapshots oldest first: by time, ties by name,
// but never a snapshot before the base of an edge into it. A snapshot
// whose time is unknown goes as early as its bases allow; it is kept
// anyway.
func orderSnaps(snaps []storedSnap, edges []ledger.Edge) []storedSnap {
	sort.Slice(snaps, func(i, j int) bool {
		a, b := snaps[i], snaps[j]
		if a.known != b.known {
			return !a.known
		}
		if !a.time.Equal(b.time) {
			return a.time.Before(b.time)
		}
		if a.snap.Name != b.snap.Name {
			return a.snap.Name < b.snap.Name
		}
		return a.snap.GUID < b.snap.GUID
	})
	bases := map[uint64][]uint64{}
	for _, e := range edges {
		if e.Base != nil {
			bases[e.Target.GUID] = append(bases[e.Target.GUID], e.Base.GUID)
		}
	}
	placed := map[uint64]bool{}
	out := make([]storedSnap, 0, len(snaps))
	for len(out) < len(snaps) {
		progress := false
		for _, s := range snaps {
			if placed[s.snap.GUID] {
				continue
			}
			ready := true
			for _, g := range bases[s.snap.GUID] {
				ready = ready && placed[g]
			}
			if ready {
				placed[s.snap.GUID] = true
				out = append(out, s)
				progress = true
				break // restart: the earliest ready snapshot goes first
			}
		}
		if !progress { // a cycle, which the ledger refuses: keep the sort
			return snaps
		}
	}
	return out
}

// carryOut plans the job with package prune and, unless it is a dry run,
// uploads the bypasses and then removes the edges, each through Remove and
// so through the ledger's guard.
func (b *Backup) carryOut(ctx context.Context, job pruneJob, opt PruneOptions, dr *DatasetPruned) error {
	in, snap := job.input()
	extra := map[ledger.ID]bool{}
	for _, e := range job.extra {
		extra[e.ID()] = true
	}
	p := prune.Make(in)
	var remove []ledger.Edge
	for _, e := range p.Remove {
		if !extra[e.ID()] {
			remove = append(remove, e)
		}
	}
	locked, err := b.lockedRemovals(ctx, remove)
	if err != nil {
		return err
	}
	remove, kept := skipLocked(in.Edges, remove, locked, time.Now())
	if len(p.Bypass) == 0 && len(remove) == 0 && len(p.Stay) == 0 && len(kept) == 0 {
		b.Out("%s: nothing to prune", job.dataset)
		return nil
	}
	var stay []uint64
	for g := range p.Stay {
		stay = append(stay, g)
	}
	sort.Slice(stay, func(i, j int) bool { return indexOfGUID(in.Order, stay[i]) < indexOfGUID(in.Order, stay[j]) })
	for _, g := range stay {
		s := StayingSnapshot{Snapshot: snap[g].snap.Name, For: p.Stay[g].Name}
		dr.Stay = append(dr.Stay, s)
		b.Out("%s: %s stays: kept %s needs it and no bypass can be sent (a snapshot is gone locally)", job.dataset, s.Snapshot, s.For)
	}
	for _, k := range kept {
		dr.Locked = append(dr.Locked, k)
		b.Out("%s: kept %s: %s", job.dataset, k.Edge, k.Why)
	}
	for _, by := range p.Bypass {
		target, base := snap[by.Target.GUID].local, ""
		if by.Base != nil {
			base = snap[by.Base.GUID].local
		}
		edge := target + " (full)"
		if base != "" {
			edge = base + " -> " + target
		}
		if opt.DryRun {
			dr.Bypass = append(dr.Bypass, edge)
			b.Out("%s: would upload bypass %s", job.dataset, edge)
			continue
		}
		if err := b.Upload(ctx, target, base); err != nil {
			return fmt.Errorf("upload bypass %s: %w", edge, err)
		}
		dr.Bypass = append(dr.Bypass, edge) // listed once done: the metrics count it
	}
	for _, e := range remove {
		why := "not needed: " + e.Target.Name + " stays restorable without it"
		if !job.keep[e.Target.GUID] && !isNewest(in.Order, e.Target.GUID) {
			why = job.dropWhy(snap[e.Target.GUID])
		}
		pe := PrunedEdge{Edge: e.String(), Why: why, Bytes: e.StoredBytes}
		if opt.DryRun {
			dr.Removed = append(dr.Removed, pe)
			b.Out("%s: would remove %s (%s)", job.dataset, e, why)
			continue
		}
		ref := EdgeRef{Target: e.Target.Name, Base: e.BaseName(), TargetGUID: e.Target.GUID}
		if e.Base != nil {
			ref.BaseGUID = e.Base.GUID
		}
		if err := b.Remove(ctx, ref); err != nil {
			return fmt.Errorf("remove %s: %w", e, err)
		}
		dr.Removed = append(dr.Removed, pe) // listed once done: freed bytes count only what went
	}
	return nil
}

// input is the job as package prune plans it, and its snapshots by GUID.
func (job pruneJob) input() (prune.Input, map[uint64]storedSnap) {
	in := prune.Input{Edges: append(append([]ledger.Edge{}, job.edges...), job.extra...), Keep: job.keep, Local: map[uint64]bool{}}
	snap := map[uint64]storedSnap{}
	for _, s := range job.order {
		in.Order = append(in.Order, s.snap.GUID)
		snap[s.snap.GUID] = s
		if s.local != "" {
			in.Local[s.snap.GUID] = true
		}
	}
	return in, snap
}

// staying returns the edges into snapshots that dataset d's keep rule
// does not keep but that prune leaves, because a kept snapshot's chain
// runs through them and the local snapshots for a bypass edge are gone:
// by edge, the kept snapshot. Status shows it, from the plan prune makes
// (broken as for jobOf: the ledger's own, as prune sees it).
func staying(l *ledger.Ledger, broken map[ledger.ID]bool, d config.Dataset, local []zfs.Snapshot) map[ledger.ID]ledger.Snapshot {
	if d.Keep == nil {
		return nil
	}
	job := jobOf(l, broken, d, local)
	job.applyKeep(*d.Keep)
	in, _ := job.input()
	p := prune.Make(in)
	removed := map[ledger.ID]bool{}
	for _, e := range p.Remove {
		removed[e.ID()] = true
	}
	out := map[ledger.ID]ledger.Snapshot{}
	for _, e := range job.edges {
		if kept, ok := p.Stay[e.Target.GUID]; ok && !removed[e.ID()] {
			out[e.ID()] = kept
		}
	}
	return out
}

func indexOfGUID(order []uint64, g uint64) int {
	for i, x := range order {
		if x == g {
			return i
		}
	}
	return -1
}

func isNewest(order []uint64, g uint64) bool { return len(order) > 0 && order[len(order)-1] == g }

// Consolidate stores the edge from -> to if it is missing, then removes the
// edges into the snapshots strictly between them that nothing else needs:
// prune's plan with every stored snapshot kept but those between. d gives
// the dataset's time_format (the zero Dataset but for its name when it is
// not configured).
func (b *Backup) Consolidate(ctx context.Context, d config.Dataset, from, to string, opt PruneOptions) (PruneReport, error) {
	rep := PruneReport{DryRun: opt.DryRun, Datasets: []DatasetPruned{}}
	if ds, _, _ := strings.Cut(from, "@"); ds != d.Name {
		return rep, usagef("consolidate: %s and %s are on different datasets; both must be on %s", from, to, d.Name)
	}
	if ds, _, _ := strings.Cut(to, "@"); ds != d.Name {
		return rep, usagef("consolidate: %s and %s are on different datasets; both must be on %s", from, to, d.Name)
	}
	if opt.DryRun {
		b.readOnly = true
	} else if err := b.checkCanDelete(ctx, "consolidate"); err != nil {
		return rep, err
	} else if err := b.finishInterrupted(ctx); err != nil {
		return rep, err
	}
	dr := newDatasetPruned(d.Name)
	err := b.withDatasetTransform(d, func() error { return b.consolidate(ctx, d, from, to, opt, &dr) })
	rep.Datasets = append(rep.Datasets, dr)
	return rep, err
}

func (b *Backup) consolidate(ctx context.Context, d config.Dataset, from, to string, opt PruneOptions, dr *DatasetPruned) error {
	if _, err := b.finishPending(ctx, d.Name, RunOptions{DryRun: opt.DryRun}, &DatasetReport{}); err != nil {
		return err
	}
	job, err := b.storedState(ctx, d)
	if err != nil {
		return err
	}
	fi, ti := -1, -1
	for i, s := range job.order {
		if s.snap.Name == from || s.local == from {
			fi = i
		}
		if s.snap.Name == to || s.local == to {
			ti = i
		}
	}
	switch {
	case fi < 0:
		return usagef("consolidate: %s is not stored restorably (see zfs2s3 status %s)", from, d.Name)
	case ti < 0:
		return usagef("consolidate: %s is not stored restorably (see zfs2s3 status %s)", to, d.Name)
	case fi >= ti:
		return usagef("consolidate: %s is not older than %s: give the older snapshot first", from, to)
	}
	f, t := job.order[fi], job.order[ti]
	// By GUID: the job is read again after the upload.
	between := map[uint64]bool{}
	for _, s := range job.order[fi+1 : ti] {
		between[s.snap.GUID] = true
	}
	have := false
	for _, e := range job.edges {
		if e.Base != nil && e.Base.GUID == f.snap.GUID && e.Target.GUID == t.snap.GUID {
			have = true
		}
	}
	if !have {
		if f.local == "" || t.local == "" {
			gone := from
			if t.local == "" {
				gone = to
			}
			return fmt.Errorf("consolidate: %s is gone locally, so %s -> %s cannot be sent", gone, from, to)
		}
		edge := f.local + " -> " + t.local
		dr.Bypass = append(dr.Bypass, edge)
		if opt.DryRun {
			b.Out("%s: would upload %s", d.Name, edge)
			base := f.snap
			job.extra = append(job.extra, ledger.Edge{Base: &base, Target: t.snap})
		} else {
			if err := b.Upload(ctx, t.local, f.local); err != nil {
				return fmt.Errorf("upload %s: %w", edge, err)
			}
			if job, err = b.storedState(ctx, d); err != nil {
				return err
			}
		}
	}
	job.keep = map[uint64]bool{}
	for _, s := range job.order {
		if !between[s.snap.GUID] {
			job.keep[s.snap.GUID] = true
		}
	}
	job.dropWhy = func(s storedSnap) string { return fmt.Sprintf("%s is between %s and %s", s.snap.Name, from, to) }
	return b.carryOut(ctx, job, opt, dr)
}
