package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/plan"
	"github.com/zfs2s3/zfs2s3/transform"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// RunOptions are the options of a config-driven backup run.
type RunOptions struct {
	// DryRun prints the plan and changes nothing: no upload, no state
	// file, no ledger change.
	DryRun bool
}

// RunReport is what a backup run did, per dataset in config order. Its
// JSON shape is stable: fields may be added, none removed or renamed.
type RunReport struct {
	DryRun   bool            `json:"dry_run"`
	Datasets []DatasetReport `json:"datasets"`
}

// DatasetReport is what a run did for one dataset; a recursive dataset
// has one for itself and one for each child it backs up.
type DatasetReport struct {
	Dataset string `json:"dataset"`
	// Created is the snapshot the run took (create), WouldCreate the one
	// a dry run would take.
	Created     string `json:"created,omitempty"`
	WouldCreate string `json:"would_create,omitempty"`
	// DowntimeSeconds is the time from the pre hook's start to the post
	// hook's end, on the configured dataset's report (not its children's)
	// when it has hooks.
	DowntimeSeconds *float64 `json:"downtime_seconds,omitempty"`
	// Uploaded are the edges stored, pending ones finished first.
	Uploaded []UploadedEdge `json:"uploaded"`
	// Planned are the edges a dry run would upload.
	Planned []PlannedEdge `json:"planned,omitempty"`
	// Destroyed are the local snapshots keep_local destroyed,
	// WouldDestroy those a dry run would destroy.
	Destroyed    []string `json:"destroyed,omitempty"`
	WouldDestroy []string `json:"would_destroy,omitempty"`
	Errors       []string `json:"errors"`
	// Seconds is how long the dataset took, for the metrics file: its
	// pending uploads, uploads and keep_local; the snapshot and its hooks
	// count for the configured dataset of a recursive one.
	Seconds float64 `json:"seconds"`
}

// UploadedEdge is one edge a run stored.
type UploadedEdge struct {
	Edge    string  `json:"edge"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// PlannedEdge is one edge a dry run would upload.
type PlannedEdge struct {
	Edge     string `json:"edge"`
	Base     string `json:"base,omitempty"` // empty for a full stream
	Why      string `json:"why"`
	Estimate int64  `json:"estimate_bytes"`
}

// RunError names every dataset a run could not back up, one line each.
type RunError struct{ Lines []string }

func (e *RunError) Error() string { return strings.Join(e.Lines, "\n") }

// SelectDatasets returns the datasets a run covers: all configured ones
// in config order, or the named ones, each of which must be configured.
// A recursive one stands for its children too (see expandRecursive).
func SelectDatasets(cfg *config.Config, command string, names []string) ([]config.Dataset, error) {
	if len(cfg.Datasets) == 0 {
		if cfg.File == "" {
			return nil, usagef("%s needs a config file with datasets: see --config (default %s)", command, config.DefaultPath)
		}
		return nil, usagef("%s configures no datasets: add them under datasets:, e.g. tank/data: {}", cfg.File)
	}
	if len(names) == 0 {
		return cfg.Datasets, nil
	}
	var sel []config.Dataset
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		i := indexOf(cfg.Datasets, n)
		if i < 0 {
			return nil, usagef("dataset %s is not configured in %s; %s runs only configured datasets", n, cfg.File, command)
		}
		sel = append(sel, cfg.Datasets[i])
	}
	return sel, nil
}

func indexOf(ds []config.Dataset, name string) int {
	for i, d := range ds {
		if d.Name == name {
			return i
		}
	}
	return -1
}

// expandRecursive returns d followed, when it is recursive, by each of
// the datasets below (in name order, once each) that d covers, each with
// d's rules as a dataset of its own: its own snapshots, edges and chains.
func expandRecursive(d config.Dataset, below []string) []config.Dataset {
	out := []config.Dataset{d}
	if !d.Recursive {
		return out
	}
	below = slices.Clone(below)
	slices.Sort(below)
	for _, name := range slices.Compact(below) {
		if d.Covers(name) {
			c := d
			c.Name, c.Recursive, c.OwnEntries = name, false, nil
			out = append(out, c)
		}
	}
	return out
}

// Run backs up each dataset in turn: it finishes the dataset's pending
// uploads, takes its snapshot (create, with the pre and post hooks around
// it), uploads, oldest first, what package plan says is due, and then
// destroys what keep_local lets go. A recursive dataset does this for
// itself and each child it covers, with one "zfs snapshot -r". The
// datasets are checked to exist before anything is done (a missing one is
// a config error); after that one dataset failing does not stop the
// others, and the error is a *RunError naming each failed dataset.
func (b *Backup) Run(ctx context.Context, cfg *config.Config, datasets []config.Dataset, opt RunOptions) (RunReport, error) {
	rep := RunReport{DryRun: opt.DryRun, Datasets: []DatasetReport{}}
	if opt.DryRun {
		// Reading the ledger writes nothing then: no bucket copy adopted
		// into the state dir, no repair of a lagging copy in the bucket.
		b.readOnly = true
	}
	names := make([]string, len(datasets))
	for i, d := range datasets {
		names[i] = d.Name
	}
	snaps, missing, err := b.ZFS.SnapshotsOf(ctx, names)
	if err != nil {
		return rep, fmt.Errorf("check the configured datasets: %w", err)
	}
	b.runSnaps = map[string][]zfs.Snapshot{}
	for _, n := range names {
		b.runSnaps[n] = snaps[n]
	}
	if len(missing) > 0 {
		d := datasets[indexOf(datasets, missing[0])]
		return rep, cfg.Errorf(d.Line, "datasets."+d.Name, "dataset %s does not exist (check it with: zfs list %s)", d.Name, d.Name)
	}
	if !opt.DryRun {
		if err := b.checkLockBucket(ctx); err != nil {
			return rep, err
		}
	}
	var failed []string
	for _, d := range datasets {
		for _, dr := range b.runConfigured(ctx, d, opt) {
			if len(dr.Errors) > 0 {
				failed = append(failed, fmt.Sprintf("backup of %s failed: %s", dr.Dataset, strings.Join(strings.Fields(strings.Join(dr.Errors, "; ")), " ")))
			}
			rep.Datasets = append(rep.Datasets, dr)
		}
		if ctx.Err() != nil {
			break // interrupted: the remaining datasets would fail the same way
		}
	}
	if len(failed) > 0 {
		return rep, &RunError{Lines: failed}
	}
	return rep, nil
}

func newDatasetReport(name string) DatasetReport {
	return DatasetReport{Dataset: name, Uploaded: []UploadedEdge{}, Errors: []string{}}
}

// runConfigured backs up one configured dataset, and its children when it
// is recursive, returning a report for each. The snapshot's hooks and
// errors are on the configured dataset's report. A dataset whose pending
// uploads cannot be finished uploads nothing new (its edges would be out
// of order) but is still snapshotted; keep_local runs only for a dataset
// whose run had no error.
func (b *Backup) runConfigured(ctx context.Context, d config.Dataset, opt RunOptions) []DatasetReport {
	members := []config.Dataset{d}
	if d.Recursive {
		children, err := b.ZFS.Children(ctx, d.Name)
		if err != nil {
			dr := newDatasetReport(d.Name)
			dr.Errors = append(dr.Errors, fmt.Sprintf("list the datasets below %s: %v", d.Name, err))
			return []DatasetReport{dr}
		}
		members = expandRecursive(d, children)
	}
	reps := make([]DatasetReport, len(members))
	pending := make([]map[uint64]bool, len(members))
	// took adds the time since start to a report's seconds.
	took := func(dr *DatasetReport, start time.Time) {
		dr.Seconds = (time.Duration(dr.Seconds*float64(time.Second)) + time.Since(start)).Round(time.Millisecond).Seconds()
	}
	for i, m := range members {
		start := time.Now()
		reps[i] = newDatasetReport(m.Name)
		var err error
		if pending[i], err = b.finishPending(ctx, m.Name, opt, &reps[i]); err != nil {
			reps[i].Errors = append(reps[i].Errors, err.Error())
		}
		took(&reps[i], start)
	}
	var created *plan.Snapshot // the snapshot taken (or, in a dry run, the one that would be)
	if d.Create != "" && ctx.Err() == nil {
		now := time.Now()
		for _, m := range members {
			delete(b.runSnaps, m.Name) // listed before the snapshot
		}
		short, err := b.takeSnapshot(ctx, d, members, now, opt, &reps[0])
		took(&reps[0], now)
		if err != nil {
			reps[0].Errors = append(reps[0].Errors, err.Error())
		}
		if short != "" {
			created = &plan.Snapshot{Name: short, Time: now}
			for i, m := range members {
				if opt.DryRun {
					reps[i].WouldCreate = m.Name + "@" + short
				} else {
					reps[i].Created = m.Name + "@" + short
				}
			}
			if !d.Selects(short) {
				reps[0].Errors = append(reps[0].Errors, fmt.Sprintf("created %s@%s, but it does not match the snapshots glob %q: it is not uploaded; fix create or snapshots", d.Name, short, d.Snapshots))
			}
		}
	}
	for i, m := range members {
		if pending[i] == nil {
			continue // its pending uploads failed: said above
		}
		if ctx.Err() != nil {
			reps[i].Errors = append(reps[i].Errors, fmt.Sprintf("not uploaded: %v", context.Cause(ctx)))
			continue
		}
		start := time.Now()
		var virtual *plan.Snapshot
		if created != nil && opt.DryRun {
			virtual = &plan.Snapshot{Name: m.Name + "@" + created.Name, Time: created.Time}
		}
		planned, err := b.runDataset(ctx, m, opt, pending[i], virtual, &reps[i])
		if err != nil {
			reps[i].Errors = append(reps[i].Errors, err.Error())
		} else if m.KeepLocal != nil && len(reps[i].Errors) == 0 {
			if err := b.keepLocal(ctx, m, opt, planned, virtual, &reps[i]); err != nil {
				reps[i].Errors = append(reps[i].Errors, err.Error())
			}
		}
		took(&reps[i], start)
	}
	return reps
}

// runLedger is the ledger a run plans from: read once, and again only when
// it changed, by this run's own saves or on disk (another zfs2s3 on this
// machine). Read and checked per dataset, a ledger of 200 datasets with
// 100 edges each took seconds per run; the bucket's journals are checked
// again anyway by every change (withLedger), which refuses another
// machine's changes.
type runLedger struct {
	byDataset map[string][]ledger.Edge
	broken    map[ledger.ID]bool
	saves     int
	file      os.FileInfo // the local ledger file when it was read; nil if none
}

// planLedger returns the ledger to plan the next dataset from.
func (b *Backup) planLedger(ctx context.Context) (*runLedger, error) {
	fi, _ := os.Lstat(b.store.Path())
	if c := b.runCache; c != nil && c.saves == b.saves && sameFileVersion(c.file, fi) {
		return c, nil
	}
	l, err := b.readLedger(ctx)
	if err != nil {
		return nil, err
	}
	rl := &runLedger{byDataset: ledger.ByDataset(l.Edges), broken: map[ledger.ID]bool{}, saves: b.saves, file: fi}
	for _, be := range l.Broken(nil) {
		rl.broken[be.Edge.ID()] = true
	}
	b.runCache = rl
	return rl, nil
}

// sameFileVersion reports whether a and b are the same version of a file
// that is replaced by rename when written: same inode, size and time.
func sameFileVersion(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// runDataset uploads what is due for one dataset, after its pending
// uploads, recording what it did in dr. In a dry run, virtual is the
// snapshot create would take, planned like one that exists; the GUIDs of
// the targets a dry run plans are returned, which it counts as stored.
func (b *Backup) runDataset(ctx context.Context, d config.Dataset, opt RunOptions, pendingTargets map[uint64]bool, virtual *plan.Snapshot, dr *DatasetReport) (planned map[uint64]bool, err error) {
	snaps, listed := b.runSnaps[d.Name] // listed with the others when the run began
	delete(b.runSnaps, d.Name)
	if !listed {
		snaps, err = b.ZFS.Snapshots(ctx, d.Name)
	}
	if errors.Is(err, zfs.ErrNotExist) {
		return nil, fmt.Errorf("dataset %s does not exist any more: %w", d.Name, err)
	}
	if err != nil {
		return nil, err
	}
	rl, err := b.planLedger(ctx)
	if err != nil {
		return nil, err
	}
	sel, fullTimes := planInput(d, snaps, rl.byDataset[d.Name], rl.broken)
	if virtual != nil {
		if _, short, _ := strings.Cut(virtual.Name, "@"); d.Selects(short) {
			sel = append(sel, *virtual)
		}
	}
	for i := range sel {
		if g, ok := pendingTargets[sel[i].GUID]; ok { // a dry run counts them as done
			sel[i].Stored = true
			sel[i].StoredFull = sel[i].StoredFull || g
		}
	}
	planned = map[uint64]bool{}
	edges := plan.Make(sel, plan.Rules{ChainFull: d.Chain == config.ChainFull, FullEvery: d.FullEvery}, fullTimes)
	var copyBehind error // the last upload whose bucket ledger copy lags
	if len(edges) == 0 {
		b.Out("%s: nothing new to upload", d.Name)
		return planned, nil
	}
	for _, e := range edges {
		base := ""
		if e.Base != nil {
			base = e.Base.Name
		}
		if opt.DryRun {
			le := ledger.Edge{Target: ledger.Snapshot{Name: e.Target.Name, GUID: e.Target.GUID}}
			if e.Base != nil {
				le.Base = &ledger.Snapshot{Name: e.Base.Name, GUID: e.Base.GUID}
			}
			var est int64
			if virtual != nil && e.Target.Name == virtual.Name {
				// Not taken: the dataset's size now bounds its stream.
				est, err = b.ZFS.LogicalSize(ctx, d.Name)
			} else {
				est, err = b.estimate(ctx, le)
			}
			if err != nil {
				return nil, fmt.Errorf("estimate %s: %w", le, err)
			}
			planned[e.Target.GUID] = planned[e.Target.GUID] || e.Base == nil
			dr.Planned = append(dr.Planned, PlannedEdge{Edge: le.String(), Base: base, Why: e.Why, Estimate: est})
			b.Out("%s: would upload %s (%s), about %d bytes", d.Name, le, e.Why, est)
			continue
		}
		start := time.Now()
		b.lastRecorded = nil
		err := b.withDatasetTransform(d, func() error { return b.Upload(ctx, e.Target.Name, base) })
		if err != nil && !errors.Is(err, errCopyBehind) {
			return nil, errors.Join(copyBehind, err) // the later edges build on this one
		}
		if err != nil {
			// Stored and recorded here; only the bucket's ledger copy lags,
			// and the next command writes it: go on, and say so at the end.
			copyBehind = err
		}
		dr.Uploaded = append(dr.Uploaded, b.uploaded(start))
	}
	return planned, copyBehind
}

// finishPending finishes the dataset's pending uploads, or in a dry run
// lists them and returns their targets' GUIDs (true for a full stream),
// which the plan then counts as stored.
func (b *Backup) finishPending(ctx context.Context, dataset string, opt RunOptions, dr *DatasetReport) (map[uint64]bool, error) {
	ps, err := b.loadPending()
	if err != nil {
		return nil, err
	}
	targets := map[uint64]bool{}
	for _, p := range ps {
		if p.Edge.Target.Dataset() != dataset {
			continue
		}
		if opt.DryRun {
			b.Out("%s: would first finish the pending upload of %s", dataset, p.Edge)
			targets[p.Edge.Target.GUID] = targets[p.Edge.Target.GUID] || p.Edge.IsFull()
			continue
		}
		p, ok, err := b.relock(p)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue // finished by another process meanwhile
		}
		start := time.Now()
		b.lastRecorded = nil
		if err := b.run(ctx, p); err != nil && !errors.Is(err, errCopyBehind) {
			p.lock.Unlock()
			return nil, fmt.Errorf("finish the pending upload first: %w", err)
		}
		dr.Uploaded = append(dr.Uploaded, b.uploaded(start))
	}
	return targets, nil
}

// uploaded reports the edge the last upload recorded.
func (b *Backup) uploaded(start time.Time) UploadedEdge {
	u := UploadedEdge{Seconds: time.Since(start).Round(time.Millisecond).Seconds()}
	if e := b.lastRecorded; e != nil {
		u.Edge, u.Bytes = e.String(), e.StoredBytes
	}
	return u
}

// planInput selects the dataset's snapshots by its glob, reads their times
// and marks those the ledger stores restorably (by GUID, edges being
// removed not counted). fullTimes are the times of stored fulls whose
// snapshots are gone locally, readable only from names (time_format).
func planInput(d config.Dataset, snaps []zfs.Snapshot, edges []ledger.Edge, broken map[ledger.ID]bool) (sel []plan.Snapshot, fullTimes []time.Time) {
	stored, full := map[uint64]bool{}, map[uint64]bool{}
	var fulls []ledger.Edge
	for _, e := range edges {
		if e.Removing || broken[e.ID()] || e.Target.Dataset() != d.Name {
			continue
		}
		stored[e.Target.GUID] = true
		if e.IsFull() {
			full[e.Target.GUID] = true
			fulls = append(fulls, e)
		}
	}
	local := map[uint64]bool{}
	for _, s := range snaps {
		local[s.GUID] = true
		_, short, _ := strings.Cut(s.Name, "@")
		if !d.Selects(short) {
			continue
		}
		t, ok := d.SnapshotTime(short, s.Creation)
		if !ok {
			slog.Warn("snapshot skipped: its name does not fit time_format", "snapshot", s.Name, "time_format", d.TimeFormat)
			continue
		}
		sel = append(sel, plan.Snapshot{Name: s.Name, GUID: s.GUID, Time: t, Stored: stored[s.GUID], StoredFull: full[s.GUID]})
	}
	for _, e := range fulls {
		if local[e.Target.GUID] {
			continue
		}
		if t, ok := d.NameTime(e.Target.Short()); ok {
			fullTimes = append(fullTimes, t)
		}
	}
	return sel, fullTimes
}

// withDatasetTransform runs fn with the dataset's own compress and
// recipients, where its config entry (or defaults) sets them, in place of
// the global ones. The config was checked when it was loaded.
func (b *Backup) withDatasetTransform(d config.Dataset, fn func() error) error {
	saved := b.Opt.Transform
	defer func() { b.Opt.Transform = saved }()
	if d.Compress != nil {
		spec, err := transform.ParseCompress(*d.Compress)
		if err != nil {
			return usagef("dataset %s: compress: %v", d.Name, err)
		}
		b.Opt.Transform.Compress = spec
	}
	if d.Recipients != nil {
		b.Opt.Transform.Recipients = nil
		for _, r := range *d.Recipients {
			rec, err := transform.ParseRecipient(r)
			if err != nil {
				return usagef("dataset %s: recipients: %v", d.Name, err)
			}
			b.Opt.Transform.Recipients = append(b.Opt.Transform.Recipients, rec)
		}
	}
	return fn()
}
