package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/plan"
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

// DatasetReport is what a run did for one dataset.
type DatasetReport struct {
	Dataset string `json:"dataset"`
	// Uploaded are the edges stored, pending ones finished first.
	Uploaded []UploadedEdge `json:"uploaded"`
	// Planned are the edges a dry run would upload.
	Planned []PlannedEdge `json:"planned,omitempty"`
	Errors  []string      `json:"errors"`
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

// unsupported are the config keys this release reads but does not act
// on yet: a run that silently skipped a snapshot or a hook would look
// like a backup and not be one.
func unsupported(d config.Dataset) string {
	switch {
	case d.Recursive:
		return "recursive"
	case d.Create != "":
		return "create"
	case d.Pre != "":
		return "pre"
	case d.Post != "":
		return "post"
	}
	return ""
}

// SelectDatasets returns the datasets a run covers: all configured ones
// in config order, or the named ones, each of which must be configured.
// A config using a key that backup does not support yet is refused.
func SelectDatasets(cfg *config.Config, command string, names []string) ([]config.Dataset, error) {
	if len(cfg.Datasets) == 0 {
		if cfg.File == "" {
			return nil, usagef("%s needs a config file with datasets: see --config (default %s)", command, config.DefaultPath)
		}
		return nil, usagef("%s configures no datasets: add them under datasets:, e.g. tank/data: {}", cfg.File)
	}
	for _, d := range cfg.Datasets {
		if key := unsupported(d); key != "" {
			return nil, cfg.Errorf(d.Line, "datasets."+d.Name, "not supported yet: %s (%s works on existing snapshots only in this release)", key, command)
		}
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

// Run backs up each dataset in turn: it finishes the dataset's pending
// uploads, then uploads, oldest first, what package plan says is due. The
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
	missing, err := b.ZFS.Missing(ctx, names)
	if err != nil {
		return rep, fmt.Errorf("check the configured datasets: %w", err)
	}
	if len(missing) > 0 {
		d := datasets[indexOf(datasets, missing[0])]
		return rep, cfg.Errorf(d.Line, "datasets."+d.Name, "dataset %s does not exist (check it with: zfs list %s)", d.Name, d.Name)
	}
	var failed []string
	for _, d := range datasets {
		dr := DatasetReport{Dataset: d.Name, Uploaded: []UploadedEdge{}, Errors: []string{}}
		if err := b.runDataset(ctx, d, opt, &dr); err != nil {
			dr.Errors = append(dr.Errors, err.Error())
			failed = append(failed, fmt.Sprintf("backup of %s failed: %s", d.Name, strings.Join(strings.Fields(err.Error()), " ")))
		}
		rep.Datasets = append(rep.Datasets, dr)
		if ctx.Err() != nil {
			break // interrupted: the remaining datasets would fail the same way
		}
	}
	if len(failed) > 0 {
		return rep, &RunError{Lines: failed}
	}
	return rep, nil
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

// runDataset backs up one dataset, recording what it did in dr.
func (b *Backup) runDataset(ctx context.Context, d config.Dataset, opt RunOptions, dr *DatasetReport) error {
	pendingTargets, err := b.finishPending(ctx, d.Name, opt, dr)
	if err != nil {
		return err
	}
	snaps, err := b.ZFS.Snapshots(ctx, d.Name)
	if errors.Is(err, zfs.ErrNotExist) {
		return fmt.Errorf("dataset %s does not exist any more: %w", d.Name, err)
	}
	if err != nil {
		return err
	}
	rl, err := b.planLedger(ctx)
	if err != nil {
		return err
	}
	sel, fullTimes := planInput(d, snaps, rl.byDataset[d.Name], rl.broken)
	for i := range sel {
		if g, ok := pendingTargets[sel[i].GUID]; ok { // a dry run counts them as done
			sel[i].Stored = true
			sel[i].StoredFull = sel[i].StoredFull || g
		}
	}
	edges := plan.Make(sel, plan.Rules{ChainFull: d.Chain == config.ChainFull, FullEvery: d.FullEvery}, fullTimes)
	var copyBehind error // the last upload whose bucket ledger copy lags
	if len(edges) == 0 {
		b.Out("%s: nothing new to upload", d.Name)
		return nil
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
			est, err := b.estimate(ctx, le)
			if err != nil {
				return fmt.Errorf("estimate %s: %w", le, err)
			}
			dr.Planned = append(dr.Planned, PlannedEdge{Edge: le.String(), Base: base, Why: e.Why, Estimate: est})
			b.Out("%s: would upload %s (%s), about %d bytes", d.Name, le, e.Why, est)
			continue
		}
		start := time.Now()
		b.lastRecorded = nil
		err := b.Upload(ctx, e.Target.Name, base)
		if err != nil && !errors.Is(err, errCopyBehind) {
			return errors.Join(copyBehind, err) // the later edges build on this one
		}
		if err != nil {
			// Stored and recorded here; only the bucket's ledger copy lags,
			// and the next command writes it: go on, and say so at the end.
			copyBehind = err
		}
		dr.Uploaded = append(dr.Uploaded, b.uploaded(start))
	}
	return copyBehind
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
		if local[e.Target.GUID] || d.TimeFormat == "" {
			continue
		}
		if t, ok := d.SnapshotTime(e.Target.Short(), time.Time{}); ok {
			fullTimes = append(fullTimes, t)
		}
	}
	return sel, fullTimes
}
