package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/zfs2s3/zfs2s3/central"
	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
)

// The admin side of a fleet (README "Running a fleet"): fleet status and
// fleet prune work on every host prefix under the fleet's root, from the
// bucket alone. The admin machine has none of the hosts' pools and keeps
// no state of them: each command reads each host's ledger from its
// journal into a state dir of its own that it deletes when done, so the
// next command starts from the bucket again, and writes the journal with
// the merge rule (merge.go) like any other machine.

// staleUpload is how old an unfinished multipart upload is before fleet
// status names it as a problem: a backup host's upload that ran this long
// was killed, and its parts cost storage until resumed or aborted.
const staleUpload = 24 * time.Hour

// FleetStatus is what fleet status reports. Its JSON shape is stable:
// fields may be added, none removed or renamed.
type FleetStatus struct {
	// Root is the part of the prefix before its first placeholder, under
	// which the hosts' prefixes were looked for.
	Root  string      `json:"root"`
	Hosts []FleetHost `json:"hosts"`
}

// FleetHost is one host prefix's stored state.
type FleetHost struct {
	Prefix      string         `json:"prefix"`
	Datasets    []FleetDataset `json:"datasets"`
	StoredBytes int64          `json:"stored_bytes"`
	// Problems are what needs the admin's attention: unrestorable
	// snapshots, a damaged or newer journal, stale multipart uploads.
	Problems []string `json:"problems"`
}

// FleetDataset is one dataset of a host.
type FleetDataset struct {
	Dataset string `json:"dataset"`
	// Newest is the newest restorable stored snapshot ("" when none),
	// NewestTime its time: from its name with the config's time_format,
	// else when it was uploaded.
	Newest       string    `json:"newest"`
	NewestTime   time.Time `json:"newest_time,omitzero"`
	Restorable   int       `json:"restorable_snapshots"`
	Unrestorable int       `json:"unrestorable_snapshots"`
	StoredBytes  int64     `json:"stored_bytes"`
}

// FleetRules returns the config's rules for dataset ds of any host: its
// own entry (or a recursive one that covers it) when the config names
// it, else the defaults.
func FleetRules(cfg *config.Config) func(ds string) config.Dataset {
	return func(ds string) config.Dataset {
		for _, d := range cfg.Datasets {
			if d.Name == ds {
				return d
			}
		}
		for _, d := range cfg.Datasets {
			if d.Recursive && d.Covers(ds) {
				d.Name = ds
				return d
			}
		}
		d := cfg.Defaults
		d.Name = ds
		return d
	}
}

// FleetHosts lists the host prefixes under root: every prefix whose
// PREFIX.zfs2s3/ledger/ journal or PREFIX.zfs2s3/ledger.yaml (a tree of
// before the journal) is in the bucket, found with one LIST.
func (b *Backup) FleetHosts(ctx context.Context, root string) ([]string, error) {
	objs, err := b.S3.List(ctx, root)
	if err != nil {
		return nil, fmt.Errorf("list the fleet's host prefixes under s3://%s/%s: %w", b.S3.Bucket(), root, err)
	}
	return hostPrefixes(root, objs), nil
}

// hostPrefixes is FleetHosts' pure part.
func hostPrefixes(root string, objs []s3up.ObjectInfo) []string {
	seen := map[string]bool{}
	var out []string
	for _, o := range objs {
		p, ok := strings.CutSuffix(o.Key, ledgerSuffix)
		if !ok {
			if i := strings.Index(o.Key, ".zfs2s3/ledger/"); i >= 0 {
				p, ok = o.Key[:i], true
			}
		}
		if ok && strings.HasPrefix(p, root) && (p == "" || strings.HasSuffix(p, "/")) && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// forHost returns a Backup for host prefix prefix with a state dir of its
// own, and the function that deletes that dir.
func (b *Backup) forHost(prefix string) (*Backup, func(), error) {
	dir, err := os.MkdirTemp("", "zfs2s3-fleet-")
	if err != nil {
		return nil, nil, fmt.Errorf("a state dir for host prefix %s: %w", prefix, err)
	}
	opt := b.Opt
	opt.Prefix, opt.StateDir = prefix, dir
	hb := New(b.ZFS, b.S3, opt, b.Out)
	hb.fleet = true
	hb.Progress, hb.ProgressDone = nil, nil
	return hb, func() { os.RemoveAll(dir) }, nil
}

// FleetStatus reports every host prefix under root. It only reads.
func (b *Backup) FleetStatus(ctx context.Context, root string, rules func(ds string) config.Dataset, now time.Time) (FleetStatus, error) {
	st := FleetStatus{Root: root, Hosts: []FleetHost{}}
	hosts, err := b.FleetHosts(ctx, root)
	if err != nil {
		return st, err
	}
	for _, p := range hosts {
		h, err := b.hostStatus(ctx, p, rules, now)
		if err != nil {
			if errors.Is(err, s3up.ErrSetup) {
				return st, err // wrong credentials or bucket: every host would say so
			}
			h.Problems = append(h.Problems, err.Error())
		}
		st.Hosts = append(st.Hosts, h)
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
	}
	return st, nil
}

func (b *Backup) hostStatus(ctx context.Context, prefix string, rules func(ds string) config.Dataset, now time.Time) (FleetHost, error) {
	h := FleetHost{Prefix: prefix, Datasets: []FleetDataset{}, Problems: []string{}}
	hb, done, err := b.forHost(prefix)
	if err != nil {
		return h, err
	}
	defer done()
	hb.readOnly = true // nothing of the host is kept here
	// A dataset journal this (new) machine cannot use is one of the
	// host's problems, not a reason to show none of its datasets.
	hb.unusableLater = true
	if old, err := hb.oldCopyOnly(ctx); err != nil {
		return h, fmt.Errorf("cannot read the ledger: %w", err)
	} else if old {
		h.Problems = append(h.Problems, oldCopyAdvice(prefix)+"; fleet prune skips it until then")
	}
	l, err := hb.loadLedger(ctx, false)
	h.Problems = append(h.Problems, hb.notices...)
	if err != nil {
		return h, fmt.Errorf("cannot read the ledger: %w", err)
	}
	objs, others, err := hb.listObjects(ctx)
	if err != nil {
		return h, err
	}
	broken := brokenIDs(l, missingEdges(l, objs))
	byDS := edgesByDataset(l, "")
	names := make([]string, 0, len(byDS))
	for ds := range byDS {
		names = append(names, ds)
	}
	sort.Strings(names)
	for _, ds := range names {
		s := summarize(l, broken, rules(ds), nil).health(ds)
		h.Datasets = append(h.Datasets, FleetDataset{Dataset: ds, Newest: s.Newest, NewestTime: s.NewestTime,
			Restorable: s.Snapshots, Unrestorable: s.Unrestorable, StoredBytes: s.Bytes})
		h.StoredBytes += s.Bytes
		switch {
		case s.Unrestorable > 0:
			h.Problems = append(h.Problems, fmt.Sprintf("%s: %d stored snapshot(s) cannot be restored (zfs2s3 status on the host, or verify, names them)", ds, s.Unrestorable))
		case s.Snapshots == 0:
			h.Problems = append(h.Problems, fmt.Sprintf("%s: no restorable snapshot stored", ds))
		}
	}
	ups, err := hb.listUploads(ctx, others)
	if err != nil {
		return h, err
	}
	for _, u := range ups {
		if !u.Initiated.IsZero() && now.Sub(u.Initiated) > staleUpload {
			h.Problems = append(h.Problems, fmt.Sprintf("multipart upload of %s started %s and not finished: resume_upload or abort_upload on the host", u.Key, u.Initiated.UTC().Format(time.RFC3339)))
		}
	}
	return h, nil
}

// oldCopyOnly reports whether the host's tree still has only the single
// ledger.yaml copy of the releases before the journal (no journal entry,
// and ledger.yaml a whole ledger, not the stub).
func (b *Backup) oldCopyOnly(ctx context.Context) (bool, error) {
	j, err := b.listJournal(ctx)
	if err != nil {
		return false, fmt.Errorf("list the bucket's ledger journal: %w", err)
	}
	if len(j.entries) > 0 || j.copyETag == "" {
		return false, nil
	}
	data, _, err := b.S3.ReadAll(ctx, LedgerKey(b.Opt.Prefix), ledger.MaxFileBytes)
	if errors.Is(err, s3up.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read the bucket's ledger.yaml: %w", err)
	}
	_, err = ledger.ParseCopy(data)
	return err == nil, nil
}

// oldCopyAdvice says what to do about a host tree of before the journal.
func oldCopyAdvice(prefix string) string {
	return fmt.Sprintf("host prefix %s still keeps the old single ledger copy: run any zfs2s3 command that changes the ledger on that host with this release first (e.g. its next backup)", prefix)
}

// FleetPruneReport is what fleet prune did (or, in a dry run, would do),
// per host. Its JSON shape is stable: fields may be added, none removed
// or renamed.
type FleetPruneReport struct {
	DryRun bool              `json:"dry_run"`
	Root   string            `json:"root"`
	Hosts  []FleetHostPruned `json:"hosts"`
}

// FleetHostPruned is what fleet prune did to one host prefix.
type FleetHostPruned struct {
	Prefix   string          `json:"prefix"`
	Datasets []DatasetPruned `json:"datasets"`
	Errors   []string        `json:"errors"`
}

// FleetPrune applies the config's keep rules to every dataset of every
// host prefix under root, from the hosts' journals alone: no host's pool
// is here, so no bypass edge can be sent; chain links a kept snapshot
// needs stay (and are reported), and each removal goes through the
// ledger's guard and the lock checks as prune's do. The newest stored
// snapshot of a dataset is never removed. A host or dataset that fails
// does not stop the others; the error is a *RunError naming each.
//
// pol, the fleet's central policy (nil: none), sets the keep rules of the
// hosts it names over rules; a host's name is its prefix's first folder
// under root.
func (b *Backup) FleetPrune(ctx context.Context, root string, rules func(ds string) config.Dataset, pol *central.Policy, opt PruneOptions) (FleetPruneReport, error) {
	rep := FleetPruneReport{DryRun: opt.DryRun, Root: root, Hosts: []FleetHostPruned{}}
	hosts, err := b.FleetHosts(ctx, root)
	if err != nil {
		return rep, err
	}
	var failed []string
	for _, p := range hosts {
		hr := FleetHostPruned{Prefix: p, Datasets: []DatasetPruned{}, Errors: []string{}}
		hostRules := rules
		if pol != nil {
			host, _, _ := strings.Cut(strings.TrimPrefix(p, root), "/")
			settings := pol.For(host)
			hostRules = func(ds string) config.Dataset {
				return EffectiveKeep([]config.Dataset{rules(ds)}, settings, host)[0]
			}
		}
		if err := b.pruneHost(ctx, p, hostRules, opt, &hr); err != nil {
			if errors.Is(err, s3up.ErrSetup) {
				return rep, err
			}
			hr.Errors = append(hr.Errors, err.Error())
		}
		for _, d := range hr.Datasets {
			for _, e := range d.Errors {
				failed = append(failed, fmt.Sprintf("fleet prune of %s%s failed: %s", p, d.Dataset, oneLine(e)))
			}
		}
		for _, e := range hr.Errors {
			failed = append(failed, fmt.Sprintf("fleet prune of %s failed: %s", p, oneLine(e)))
		}
		rep.Hosts = append(rep.Hosts, hr)
		if ctx.Err() != nil {
			break
		}
	}
	if len(failed) > 0 {
		return rep, &RunError{Lines: failed}
	}
	return rep, nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (b *Backup) pruneHost(ctx context.Context, prefix string, rules func(ds string) config.Dataset, opt PruneOptions, hr *FleetHostPruned) error {
	hb, done, err := b.forHost(prefix)
	if err != nil {
		return err
	}
	defer done()
	if old, err := hb.oldCopyOnly(ctx); err != nil {
		return err
	} else if old {
		// Migrating it here would leave the host refused until ledger
		// rebuild: its state dir records the old copy, not the journal.
		return errors.New(oldCopyAdvice(prefix) + ", then fleet prune again")
	}
	if opt.DryRun {
		hb.readOnly = true
	} else if err := hb.checkCanDelete(ctx, "fleet prune"); err != nil {
		return err
	} else if err := hb.finishInterrupted(ctx); err != nil {
		return err // removals another admin run left marked are finished first
	}
	l, err := hb.loadLedgerFor(ctx, opt.DryRun)
	if err != nil {
		return err
	}
	if hb.hostUploads, err = hb.uploadsInFlight(ctx, time.Now()); err != nil {
		return err
	}
	byDS := edgesByDataset(l, "")
	names := make([]string, 0, len(byDS))
	for ds := range byDS {
		names = append(names, ds)
	}
	sort.Strings(names)
	hb.Out("%s:", prefix)
	for _, ds := range names {
		d := rules(ds)
		dr := newDatasetPruned(ds)
		start := time.Now()
		var read *ledger.Ledger
		if opt.DryRun {
			read = l // nothing changes it: read once per host, not per dataset
		}
		if err := hb.pruneStored(ctx, d, opt, &dr, read); err != nil {
			dr.Errors = append(dr.Errors, err.Error())
		}
		dr.Seconds = time.Since(start).Round(time.Millisecond).Seconds()
		hr.Datasets = append(hr.Datasets, dr)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// loadLedgerFor reads the host's ledger into its state dir (or, in a dry
// run, only reads it).
func (b *Backup) loadLedgerFor(ctx context.Context, dryRun bool) (*ledger.Ledger, error) {
	if dryRun {
		return b.loadLedger(ctx, false)
	}
	return b.readLedger(ctx)
}

// pruneStored is pruneDataset without the pool: the dataset's stored
// snapshots, dated by their names (time_format) or upload times, planned
// with no local snapshot, so that no bypass is planned. A dry run passes
// the host's ledger it read (a dry run changes nothing, and reading it
// from the bucket again for every dataset made a large host's dry run
// quadratic); otherwise l is nil and the ledger is read again under its
// lock, as the removals of the datasets before changed it.
func (b *Backup) pruneStored(ctx context.Context, d config.Dataset, opt PruneOptions, dr *DatasetPruned, l *ledger.Ledger) error {
	if d.Keep == nil {
		dr.Note = "nothing to prune: no keep rule"
		b.Out("%s: %s", d.Name, dr.Note)
		return nil
	}
	if l == nil {
		var err error
		if l, err = b.loadLedgerFor(ctx, opt.DryRun); err != nil {
			return err
		}
	}
	job := jobOf(l, brokenIDs(l, nil), d, nil)
	uploaded := map[uint64]time.Time{}
	for _, e := range l.Edges {
		if t, ok := uploaded[e.Target.GUID]; e.Target.Dataset() == d.Name && (!ok || e.Uploaded.Before(t)) {
			uploaded[e.Target.GUID] = e.Uploaded
		}
	}
	for i, s := range job.order {
		if !s.known {
			// No time_format reads it: the time of its first upload.
			if t := uploaded[s.snap.GUID]; !t.IsZero() {
				job.order[i].time, job.order[i].known = t, true
			}
		}
	}
	job.order = orderSnaps(job.order, job.edges)
	job.applyKeep(*d.Keep)
	return b.carryOut(ctx, job, opt, dr)
}

// uploadsInFlight are the host's unfinished multipart uploads under the
// prefix that began less than a day ago (or whose start the store does
// not say), as edges for the guard: the admin has no record of the
// host's pending uploads, and removing the base of one would leave the
// host's new edge without its chain (the host would then refuse to
// record it). Older ones are what fleet status reports as problems, and
// protect nothing.
func (b *Backup) uploadsInFlight(ctx context.Context, now time.Time) ([]ledger.Edge, error) {
	ups, err := b.S3.AllMultipartUploads(ctx, b.Opt.Prefix)
	if err != nil {
		return nil, err
	}
	var out []ledger.Edge
	for _, u := range ups {
		if !u.Initiated.IsZero() && now.Sub(u.Initiated) > staleUpload {
			continue
		}
		if e, ok := uploadEdge(u.Key); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// uploadEdge reads the GUIDs of the edge a stream object's key is of
// (ledger.ObjectKey's rule: SNAP@TARGETGUID.full.zfs or
// SNAP@TARGETGUID.from.BASESNAP@BASEGUID.zfs, a segment's .N after it);
// names are the key, for messages.
func uploadEdge(key string) (ledger.Edge, bool) {
	name := key[strings.LastIndex(key, "/")+1:]
	parts := strings.Split(name, "@")
	guid := func(s string) (uint64, bool) {
		if len(s) < 16 {
			return 0, false
		}
		g, err := strconv.ParseUint(s[:16], 16, 64)
		return g, err == nil && g != 0
	}
	if len(parts) < 2 {
		return ledger.Edge{}, false
	}
	tg, ok := guid(parts[1])
	if !ok {
		return ledger.Edge{}, false
	}
	e := ledger.Edge{Target: ledger.Snapshot{Name: key, GUID: tg}, Key: key}
	if len(parts) == 3 && strings.HasPrefix(parts[1][16:], ".from.") {
		bg, ok := guid(parts[2])
		if !ok {
			return ledger.Edge{}, false
		}
		e.Base = &ledger.Snapshot{Name: fmt.Sprintf("guid %d", bg), GUID: bg}
	}
	return e, true
}
