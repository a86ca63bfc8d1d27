package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/health"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// Status is what is stored, what is on its way and what the bucket holds
// that nothing knows about. Its JSON shape is documented in README.md and
// kept stable for scripts.
type Status struct {
	Datasets         []DatasetStatus      `json:"datasets"`
	Pending          []PendingStatus      `json:"pending_uploads"`
	UntrackedUploads []s3up.PendingUpload `json:"untracked_multipart_uploads"`
	UnknownObjects   []string             `json:"unknown_objects"`
	// Warnings say what is wrong with the bucket's ledger copy: damaged,
	// tampered with, rolled back, written by a newer zfs2s3.
	Warnings []string `json:"warnings"`
	// unusable is set when a new machine could not use the bucket's
	// journal of a dataset the status is about: the other datasets are
	// shown, and the command fails after (Err).
	unusable error
}

// Err is why the status is incomplete: a dataset journal in the bucket
// that this machine, without a ledger of its own, cannot use (named in
// Warnings too). Status prints the rest, then fails with it.
func (s Status) Err() error { return s.unusable }

// DatasetStatus lists one dataset's stored edges and unstored snapshots.
type DatasetStatus struct {
	Dataset   string       `json:"dataset"`
	Edges     []EdgeStatus `json:"edges"`
	NotStored []string     `json:"local_snapshots_not_stored"`
	// NewerNotStored are those of NotStored newer than every stored
	// snapshot of the dataset: what a backup has yet to upload, where the
	// older ones were pruned or never selected.
	NewerNotStored []string `json:"local_snapshots_newer_than_stored"`
	// Freshness is the --max-age check of the dataset, when asked for.
	Freshness *health.Verdict `json:"freshness,omitempty"`
}

// EdgeStatus is one stored edge.
type EdgeStatus struct {
	Snapshot   string `json:"snapshot"`
	GUID       uint64 `json:"guid"`
	Base       string `json:"base"` // "" for a full stream
	BaseGUID   uint64 `json:"base_guid"`
	Restorable bool   `json:"restorable"`
	Why        string `json:"why,omitempty"` // why not restorable
	Local      string `json:"local"`         // present, missing, different guid
	// Stays says why prune leaves an edge into a snapshot that no keep
	// rule keeps (only with a config that has keep rules).
	Stays        string    `json:"stays,omitempty"`
	StreamBytes  int64     `json:"stream_bytes"`
	StoredBytes  int64     `json:"stored_bytes"`
	Uploaded     time.Time `json:"uploaded"`
	StorageClass string    `json:"storage_class"`
	Key          string    `json:"key"`
}

// PendingStatus is an upload that was started and not yet recorded.
type PendingStatus struct {
	Edge       string    `json:"edge"`
	Key        string    `json:"key"`
	UploadID   string    `json:"upload_id"`
	Parts      int       `json:"parts_done"`
	Bytes      int64     `json:"bytes_done"`
	Started    time.Time `json:"started"`
	Completing bool      `json:"completing"`
}

// StatusOptions say what status shows and checks.
type StatusOptions struct {
	Dataset string // "" for all
	// Configured are the config's datasets: their time_format dates the
	// snapshots that MaxAge checks, and their keep rules say why prune
	// leaves chain links it would otherwise remove.
	Configured []config.Dataset
	// MaxAge, when set, checks the configured datasets (or Dataset
	// alone): each must have a restorable stored snapshot at most
	// MaxAge older than Now and none that is unrestorable.
	MaxAge time.Duration
	Now    time.Time
}

// Status gathers the status of every dataset in the ledger, or of one.
func (b *Backup) Status(ctx context.Context, dataset string) (Status, error) {
	return b.StatusOf(ctx, StatusOptions{Dataset: dataset})
}

// StatusOf gathers the status as opt says; with MaxAge, each checked
// dataset's Freshness says whether it is fresh (Status.Checked lists
// the verdicts).
func (b *Backup) StatusOf(ctx context.Context, opt StatusOptions) (Status, error) {
	in := statusInput{dataset: opt.Dataset, ledgerKey: LedgerKey(b.Opt.Prefix), local: map[string][]zfs.Snapshot{},
		maxAge: opt.MaxAge, now: opt.Now, configured: opt.Configured}
	if opt.MaxAge > 0 {
		in.check = opt.Configured
		if opt.Dataset != "" {
			d := config.Dataset{Name: opt.Dataset}
			if i := indexOf(opt.Configured, opt.Dataset); i >= 0 {
				d = opt.Configured[i]
			}
			in.check = []config.Dataset{d}
		}
		if len(in.check) == 0 {
			return Status{}, usagef("status --max-age checks the datasets of a config file, and none is configured: add them under datasets:, or name one (zfs2s3 status --max-age %s DATASET)", health.Age(opt.MaxAge))
		}
	}
	b.unusableLater = true // named in the warnings and by Err, not on stderr too
	l, err := b.readLedger(ctx)
	if err != nil {
		return Status{}, err
	}
	in.ledger = l
	need := map[string]bool{}
	for ds := range edgesByDataset(l, opt.Dataset) {
		need[ds] = true
	}
	for _, d := range in.check {
		need[d.Name] = true
	}
	for ds := range need {
		snaps, err := b.ZFS.Snapshots(ctx, ds)
		if err != nil && !errors.Is(err, zfs.ErrNotExist) {
			return Status{}, err
		}
		in.local[ds] = snaps
	}
	if in.pending, err = b.loadPending(); err != nil {
		return Status{}, err
	}
	objs, others, err := b.listObjects(ctx)
	if err != nil {
		return Status{}, err
	}
	in.objects = objs
	if in.uploads, err = b.listUploads(ctx, others); err != nil {
		return Status{}, err
	}
	st := in.report()
	st.Warnings = append(st.Warnings, b.notices...)
	if b.j != nil {
		st.unusable = unusableFor(b.j.unusable, opt.Dataset)
		for _, d := range st.Datasets {
			if err, ok := b.j.unusable[d.Dataset]; ok && d.Freshness != nil {
				// Not "nothing is stored": what is stored cannot be read.
				d.Freshness.Fresh = false
				d.Freshness.Problems = append([]string{err.Error()}, d.Freshness.Problems...)
			}
		}
	}
	if ps := b.unusableKeyPrefixes(); len(ps) > 0 {
		// Their objects are the unreadable journals' edges', not strays.
		st.UnknownObjects = slices.DeleteFunc(st.UnknownObjects, func(k string) bool { return inTree(k, ps) })
	}
	if len(l.Edges) == 0 {
		n := 0
		for _, k := range st.UnknownObjects {
			if _, ok := s3up.ManifestOf(k); ok {
				n++
			}
		}
		if n > 0 { // a new machine, and the bucket's ledger copy is lost
			st.Warnings = append(st.Warnings, fmt.Sprintf("the ledger is empty but the bucket holds %d manifests of stored streams: run zfs2s3 ledger rebuild to make the ledger from them", n))
		}
	}
	return st, nil
}

// statusInput is everything a status report is made from, gathered first
// so that the report itself does no I/O.
type statusInput struct {
	ledger    *ledger.Ledger
	dataset   string // "" for all
	ledgerKey string
	local     map[string][]zfs.Snapshot // by dataset
	pending   []*pending
	uploads   []s3up.PendingUpload
	objects   []s3up.ObjectInfo
	// check are the datasets whose freshness is checked against maxAge
	// at now.
	check  []config.Dataset
	maxAge time.Duration
	now    time.Time
	// configured are the config's datasets, for their keep rules.
	configured []config.Dataset
}

func edgesByDataset(l *ledger.Ledger, dataset string) map[string][]ledger.Edge {
	count := map[string]int{}
	for _, e := range l.Edges {
		count[e.Target.Dataset()]++
	}
	byDS := make(map[string][]ledger.Edge, len(count))
	for _, e := range l.Edges {
		ds := e.Target.Dataset()
		if byDS[ds] == nil {
			byDS[ds] = make([]ledger.Edge, 0, count[ds]) // no regrowing: ledgers reach 100,000 edges
		}
		byDS[ds] = append(byDS[ds], e)
	}
	if dataset != "" {
		byDS = map[string][]ledger.Edge{dataset: byDS[dataset]}
	}
	return byDS
}

func (in statusInput) report() Status {
	st := Status{Datasets: []DatasetStatus{}, Pending: []PendingStatus{}, UntrackedUploads: []s3up.PendingUpload{}, Warnings: []string{}}
	bad := unrestorable(in.ledger, missingEdges(in.ledger, in.objects), nil)
	var ledgerBroken map[ledger.ID]bool // as prune sees it, for why chain links stay
	for ds, edges := range edgesByDataset(in.ledger, in.dataset) {
		d := datasetStatus(ds, edges, in.local[ds], bad)
		if i := indexOf(in.configured, ds); i >= 0 && in.configured[i].Keep != nil {
			if ledgerBroken == nil {
				ledgerBroken = brokenIDs(in.ledger, nil)
			}
			d.explainStays(staying(in.ledger, ledgerBroken, in.configured[i], in.local[ds]))
		}
		st.Datasets = append(st.Datasets, d)
	}
	if len(in.check) > 0 {
		in.checkFreshness(&st, bad)
	}
	sort.Slice(st.Datasets, func(i, j int) bool { return st.Datasets[i].Dataset < st.Datasets[j].Dataset })
	tracked := map[string]bool{}
	known := []string{in.ledgerKey} // and the objects pending uploads completed
	for _, p := range in.pending {
		tracked[p.Upload.UploadID] = true
		for _, f := range p.Upload.Full {
			if f.UploadID != "" {
				tracked[f.UploadID] = true
			}
		}
		known = append(known, p.Upload.Keys()...)
		parts, done := p.Upload.Progress()
		st.Pending = append(st.Pending, PendingStatus{Edge: p.Edge.String(), Key: p.Edge.Key, UploadID: p.Upload.UploadID,
			Parts: parts, Bytes: done, Started: p.Started, Completing: p.Upload.Completing})
	}
	for _, u := range in.uploads {
		if !tracked[u.UploadID] {
			st.UntrackedUploads = append(st.UntrackedUploads, u)
		}
	}
	st.UnknownObjects = unknownObjects(in.ledger, in.objects, known...)
	return st
}

// checkFreshness adds each checked dataset's verdict to st, with an
// entry for a dataset that has nothing stored. Objects missing from the
// bucket listing count: an edge whose chain needs one is unrestorable.
func (in statusInput) checkFreshness(st *Status, bad map[ledger.ID]string) {
	broken := make(map[ledger.ID]bool, len(bad))
	for id := range bad {
		broken[id] = true
	}
	stored := make([]health.Stored, 0, len(in.check))
	for _, d := range in.check {
		stored = append(stored, summarize(in.ledger, broken, d, in.local[d.Name]).health(d.Name))
	}
	for _, v := range health.Check(stored, in.maxAge, in.now) {
		i := slices.IndexFunc(st.Datasets, func(ds DatasetStatus) bool { return ds.Dataset == v.Dataset })
		if i < 0 {
			st.Datasets = append(st.Datasets, datasetStatus(v.Dataset, nil, in.local[v.Dataset], bad))
			i = len(st.Datasets) - 1
		}
		st.Datasets[i].Freshness = &v
	}
}

// Checked returns the freshness verdicts of the datasets --max-age
// checked, in the order of st.Datasets (by name).
func (st Status) Checked() []health.Verdict {
	var vs []health.Verdict
	for _, d := range st.Datasets {
		if d.Freshness != nil {
			vs = append(vs, *d.Freshness)
		}
	}
	return vs
}

// WriteFreshness prints the --max-age check: one line per dataset that
// is not fresh, saying why, or one line saying all are.
func (st Status) WriteFreshness(out io.Writer) error {
	vs := st.Checked()
	stale := health.Stale(vs)
	if len(stale) == 0 {
		_, err := fmt.Fprintf(out, "all %d datasets fresh\n", len(vs))
		return err
	}
	for _, v := range stale {
		if _, err := fmt.Fprintf(out, "%s: %s\n", v.Dataset, strings.Join(v.Problems, "; ")); err != nil {
			return err
		}
	}
	return nil
}

// explainStays notes on each edge that prune leaves as a chain link
// (stays, by edge) why it stays.
func (d *DatasetStatus) explainStays(stays map[ledger.ID]ledger.Snapshot) {
	if len(stays) == 0 {
		return
	}
	for i, e := range d.Edges {
		id := ledger.ID{BaseGUID: e.BaseGUID, TargetGUID: e.GUID}
		if kept, ok := stays[id]; ok {
			d.Edges[i].Stays = fmt.Sprintf("kept as a chain link of %s: the local snapshots for a bypass edge are gone", kept.Name)
		}
	}
}

// datasetStatus compares a dataset's stored edges with its local snapshots.
func datasetStatus(ds string, edges []ledger.Edge, local []zfs.Snapshot, bad map[ledger.ID]string) DatasetStatus {
	d := DatasetStatus{Dataset: ds, Edges: make([]EdgeStatus, 0, len(edges)), NotStored: []string{}, NewerNotStored: []string{}}
	guidOf := make(map[string]uint64, len(local))
	for _, s := range local {
		guidOf[s.Name] = s.GUID
	}
	stored := make(map[uint64]bool, len(edges))
	for _, e := range edges {
		stored[e.Target.GUID] = true
		why, broken := bad[e.ID()]
		es := EdgeStatus{Snapshot: e.Target.Name, GUID: e.Target.GUID, Restorable: !broken && !e.Removing,
			StreamBytes: e.StreamBytes, StoredBytes: e.StoredBytes, Uploaded: e.Uploaded, StorageClass: e.StorageClass, Key: e.Key}
		if e.Base != nil {
			es.Base, es.BaseGUID = e.Base.Name, e.Base.GUID
		}
		switch {
		case e.Removing:
			es.Why = "being removed"
		case broken:
			es.Why = why
		}
		switch g, ok := guidOf[e.Target.Name]; {
		case !ok:
			es.Local = "missing"
		case g != e.Target.GUID:
			es.Local = "different guid"
		default:
			es.Local = "present"
		}
		d.Edges = append(d.Edges, es)
	}
	sort.Slice(d.Edges, func(i, j int) bool { return d.Edges[i].Uploaded.Before(d.Edges[j].Uploaded) })
	newest := -1 // local snapshots come oldest first
	for i, s := range local {
		if stored[s.GUID] {
			newest = i
		}
	}
	for i, s := range local {
		if !stored[s.GUID] {
			d.NotStored = append(d.NotStored, s.Name)
			if i > newest {
				d.NewerNotStored = append(d.NewerNotStored, s.Name)
			}
		}
	}
	return d
}

// missingEdges returns the edges with an object absent from the bucket
// listing objs (edges being removed aside: their objects may be gone).
func missingEdges(l *ledger.Ledger, objs []s3up.ObjectInfo) map[ledger.ID]bool {
	listed := make(map[string]bool, len(objs))
	for _, o := range objs {
		listed[o.Key] = true
	}
	missing := map[ledger.ID]bool{}
	for _, e := range l.Edges {
		for _, k := range e.Keys() {
			if !listed[k] && !e.Removing {
				missing[e.ID()] = true
			}
		}
	}
	return missing
}

// unrestorable says why each edge that cannot be restored cannot, given
// the edges whose objects are missing or, when also in damaged, present
// but damaged: both break every chain through them.
func unrestorable(l *ledger.Ledger, missing, damaged map[ledger.ID]bool) map[ledger.ID]string {
	bad := map[ledger.ID]string{}
	for _, b := range l.Broken(missing) {
		bad[b.Edge.ID()] = whyBroken(b, damaged)
	}
	return bad
}

// whyBroken is the reason status and verify give for a broken edge.
func whyBroken(b ledger.BrokenEdge, damaged map[ledger.ID]bool) string {
	lost := func(id ledger.ID) string {
		if damaged[id] {
			return "damaged"
		}
		return "missing"
	}
	switch {
	case b.Needs == nil:
		return "its base is not restorable"
	case b.Needs.ID() == b.Edge.ID():
		return "its object is " + lost(b.Edge.ID())
	}
	return fmt.Sprintf("its chain needs %s, whose object is %s", b.Needs, lost(b.Needs.ID()))
}

// unknownObjects lists keys under the prefix that neither an edge nor
// alsoKnown (the ledger copy's key, ...) accounts for.
func unknownObjects(l *ledger.Ledger, objs []s3up.ObjectInfo, alsoKnown ...string) []string {
	known := make(map[string]bool, 2*len(l.Edges)+len(alsoKnown))
	for _, k := range alsoKnown {
		known[k] = true
	}
	for _, e := range l.Edges {
		known[s3up.ManifestKey(e.Key)] = true
		for _, k := range e.Keys() {
			known[k] = true
		}
	}
	unknown := []string{}
	for _, o := range objs {
		if !known[o.Key] {
			unknown = append(unknown, o.Key)
		}
	}
	sort.Strings(unknown)
	return unknown
}

// WriteText prints the status as one table per dataset, then what is
// pending, untracked or unknown.
func (st Status) WriteText(out io.Writer) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, d := range st.Datasets {
		fmt.Fprintf(tw, "%s\nSNAPSHOT\tBASE\tRESTORABLE\tLOCAL\tSTREAM\tSTORED\tUPLOADED\tCLASS\n", d.Dataset)
		for _, e := range d.Edges {
			base, ok := "full", "yes"
			if e.Base != "" {
				base = "@" + ledger.Snapshot{Name: e.Base}.Short()
			}
			if !e.Restorable {
				ok = "no: " + e.Why
			}
			fmt.Fprintf(tw, "@%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", ledger.Snapshot{Name: e.Snapshot}.Short(), base, ok, e.Local,
				e.StreamBytes, e.StoredBytes, e.Uploaded.Format("2006-01-02 15:04"), e.StorageClass)
		}
		said := map[string]bool{}
		for _, e := range d.Edges {
			if e.Stays != "" && !said[e.Snapshot] {
				said[e.Snapshot] = true
				fmt.Fprintf(tw, "@%s stays: %s\n", ledger.Snapshot{Name: e.Snapshot}.Short(), e.Stays)
			}
		}
		if len(d.NewerNotStored) > 0 {
			fmt.Fprintf(tw, "not stored yet: %s\n", strings.Join(d.NewerNotStored, ", "))
		}
		if older := len(d.NotStored) - len(d.NewerNotStored); older > 0 {
			fmt.Fprintf(tw, "%d older local snapshot(s) not stored (pruned, or never selected): %s\n", older, span(d.NotStored[:older]))
		}
		fmt.Fprintln(tw)
	}
	for _, p := range st.Pending {
		fmt.Fprintf(tw, "pending upload\t%s\t%d parts, %d bytes done\tstarted %s\t(zfs2s3 resume_upload)\n", p.Edge, p.Parts, p.Bytes, p.Started.Format("2006-01-02 15:04"))
	}
	for _, u := range st.UntrackedUploads {
		fmt.Fprintf(tw, "untracked multipart upload\t%s\t%s\n", u.Key, u.UploadID)
	}
	for _, k := range st.UnknownObjects {
		fmt.Fprintf(tw, "unknown object\t%s\n", k)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, msg := range st.Warnings {
		fmt.Fprintf(out, "warning: %s\n", msg)
	}
	return nil
}

// span names a list of snapshots briefly: all of them when there are a
// few, else the first and the last.
func span(names []string) string {
	if len(names) <= 3 {
		return strings.Join(names, ", ")
	}
	return names[0] + " … " + names[len(names)-1]
}
