package backup

import (
	"context"
	"errors"
	"sort"
	"time"

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
}

// DatasetStatus lists one dataset's stored edges and unstored snapshots.
type DatasetStatus struct {
	Dataset   string       `json:"dataset"`
	Edges     []EdgeStatus `json:"edges"`
	NotStored []string     `json:"local_snapshots_not_stored"`
}

// EdgeStatus is one stored edge.
type EdgeStatus struct {
	Snapshot     string    `json:"snapshot"`
	GUID         uint64    `json:"guid"`
	Base         string    `json:"base"` // "" for a full stream
	BaseGUID     uint64    `json:"base_guid"`
	Restorable   bool      `json:"restorable"`
	Why          string    `json:"why,omitempty"` // why not restorable
	Local        string    `json:"local"`         // present, missing, different guid
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

// Status gathers the status of every dataset in the ledger, or of one.
func (b *Backup) Status(ctx context.Context, dataset string) (Status, error) {
	l, err := b.readLedger(ctx)
	if err != nil {
		return Status{}, err
	}
	st := Status{Datasets: []DatasetStatus{}, Pending: []PendingStatus{}}
	byDS := map[string][]ledger.Edge{}
	for _, e := range l.Edges {
		byDS[e.Target.Dataset()] = append(byDS[e.Target.Dataset()], e)
	}
	if dataset != "" {
		byDS = map[string][]ledger.Edge{dataset: byDS[dataset]}
	}
	bad := map[ledger.ID]bool{}
	for _, e := range l.Unrestorable() {
		bad[e.ID()] = true
	}
	for ds, edges := range byDS {
		d, err := b.datasetStatus(ctx, ds, edges, bad)
		if err != nil {
			return Status{}, err
		}
		st.Datasets = append(st.Datasets, d)
	}
	sort.Slice(st.Datasets, func(i, j int) bool { return st.Datasets[i].Dataset < st.Datasets[j].Dataset })
	ps, err := b.loadPending()
	if err != nil {
		return Status{}, err
	}
	tracked := map[string]bool{}
	for _, p := range ps {
		tracked[p.Upload.UploadID] = true
		var done int64
		for _, pt := range p.Upload.Parts {
			done += pt.Size
		}
		st.Pending = append(st.Pending, PendingStatus{Edge: p.Edge.String(), Key: p.Edge.Key, UploadID: p.Upload.UploadID,
			Parts: len(p.Upload.Parts), Bytes: done, Started: p.Started, Completing: p.Upload.Completing})
	}
	ups, err := b.S3.AllMultipartUploads(ctx, b.Opt.Prefix)
	if err != nil {
		return Status{}, err
	}
	st.UntrackedUploads = []s3up.PendingUpload{}
	for _, u := range ups {
		if !tracked[u.UploadID] {
			st.UntrackedUploads = append(st.UntrackedUploads, u)
		}
	}
	objs, err := b.S3.List(ctx, b.Opt.Prefix)
	if err != nil {
		return Status{}, err
	}
	st.UnknownObjects = b.unknownObjects(l, objs)
	return st, nil
}

// datasetStatus compares a dataset's stored edges with its local snapshots.
func (b *Backup) datasetStatus(ctx context.Context, ds string, edges []ledger.Edge, bad map[ledger.ID]bool) (DatasetStatus, error) {
	d := DatasetStatus{Dataset: ds, Edges: []EdgeStatus{}, NotStored: []string{}}
	local, err := b.ZFS.Snapshots(ctx, ds)
	if err != nil && !errors.Is(err, zfs.ErrNotExist) {
		return d, err
	}
	guidOf := map[string]uint64{}
	for _, s := range local {
		guidOf[s.Name] = s.GUID
	}
	stored := map[uint64]bool{}
	for _, e := range edges {
		stored[e.Target.GUID] = true
		es := EdgeStatus{Snapshot: e.Target.Name, GUID: e.Target.GUID, Restorable: !bad[e.ID()] && !e.Removing,
			StreamBytes: e.StreamBytes, StoredBytes: e.StoredBytes, Uploaded: e.Uploaded, StorageClass: e.StorageClass, Key: e.Key}
		if e.Base != nil {
			es.Base, es.BaseGUID = e.Base.Name, e.Base.GUID
		}
		switch {
		case e.Removing:
			es.Why = "being removed"
		case bad[e.ID()]:
			es.Why = "its base is not restorable"
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
	for _, s := range local {
		if !stored[s.GUID] {
			d.NotStored = append(d.NotStored, s.Name)
		}
	}
	return d, nil
}

// unknownObjects lists keys under the prefix that neither an edge nor the
// ledger copy accounts for.
func (b *Backup) unknownObjects(l *ledger.Ledger, objs []s3up.ObjectInfo) []string {
	known := map[string]bool{LedgerKey(b.Opt.Prefix): true}
	for _, e := range l.Edges {
		known[e.Key], known[s3up.ManifestKey(e.Key)] = true, true
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
