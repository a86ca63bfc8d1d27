package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/statefile"
)

// The bucket keeps the ledger as one journal per dataset (see
// ledger/journal.go and README "What is in the bucket"): an upload adds a
// small delta entry to its own dataset's journal, never rewrites the
// whole ledger. One LIST of PREFIX.zfs2s3/ shows every entry with its
// ETag; the state dir records, per dataset, the entry this machine's
// ledger matches, so a command whose listing shows nothing new reads no
// entry at all, and one that shows new entries reads only those.
//
// Entries are written only where there was none (If-None-Match: *), so a
// machine that wrote SEQ N knows that no other machine wrote a different
// SEQ N. Before the journal, the bucket held one copy of the whole ledger
// at PREFIX.zfs2s3/ledger.yaml (bucketcopy.go); such a bucket is read as
// before, and its first change writes a full entry per dataset, then
// replaces ledger.yaml with a stub that older zfs2s3 refuse as a newer
// format.

// checkpointEvery bounds the deltas after a full: the next write of the
// dataset is a full once there are this many (or they outweigh the full).
const checkpointEvery = 32

// journalState is the state dir's record of the bucket's journals.
type journalState struct {
	Version  int                    `json:"version"`
	Datasets map[string]journalMark `json:"datasets"`
	// Stub is the ETag of the ledger.yaml stub this machine last saw or
	// wrote; Migrated the ETag of the whole copy it migrated from, so that
	// an older zfs2s3 writing that copy again afterwards is noticed.
	Stub     string `json:"stub,omitempty"`
	Migrated string `json:"migrated,omitempty"`
}

// journalMark is where this machine's ledger stands in a dataset's journal.
type journalMark struct {
	Seq    uint64 `json:"seq"`    // the newest entry applied
	ETag   string `json:"etag"`   // its ETag
	Digest string `json:"digest"` // ledger.Digest of the dataset's edges after it
	// Full is the newest full entry's SEQ, and Since the bytes of the
	// entries after it, FullBytes its own: when to write the next full.
	Full      uint64 `json:"full"`
	Since     int64  `json:"since_bytes"`
	FullBytes int64  `json:"full_bytes"`
}

const journalStateVersion = 1

// maxJournalStateBytes bounds the read of the state file: about 250 bytes
// per dataset.
const maxJournalStateBytes = 16 << 20

func (b *Backup) journalStatePath() string { return filepath.Join(b.store.Dir, "bucket-journal.json") }

// readJournalState reads the state file; a missing or unusable one is an
// empty record (every journal is then read and compared in full).
func (b *Backup) readJournalState() journalState {
	st := journalState{Version: journalStateVersion, Datasets: map[string]journalMark{}}
	data, err := statefile.ReadFile(b.journalStatePath(), maxJournalStateBytes)
	if errors.Is(err, os.ErrNotExist) {
		return st
	}
	var got journalState
	if err == nil {
		err = json.Unmarshal(data, &got)
	}
	if err == nil && got.Version != journalStateVersion {
		err = fmt.Errorf("version %d, this zfs2s3 reads %d", got.Version, journalStateVersion)
	}
	if err != nil {
		slog.Warn("ignoring the record of the bucket's ledger journal; the journals are compared in full", "file", b.journalStatePath(), "error", err)
		return st
	}
	if got.Datasets == nil {
		got.Datasets = map[string]journalMark{}
	}
	return got
}

// writeJournalState records st, except in a state dir that cannot be
// written (a read-only command), where the next command records it.
func (b *Backup) writeJournalState(st journalState) error {
	if b.readOnly {
		return nil
	}
	data, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return err
	}
	return statefile.WriteFile(b.journalStatePath(), append(data, '\n'))
}

// journalObj is one entry in the listing.
type journalObj struct {
	Seq  uint64
	Key  string
	ETag string
	Size int64
}

// journal is what one command knows of the bucket's journals.
type journal struct {
	entries  map[string][]journalObj // per dataset, by SEQ
	copyETag string                  // of ledger.yaml, "" when there is none
	state    journalState
	// base holds, per dataset, the edges its journal holds as far as this
	// command knows them. A dataset whose journal exists is written only
	// when base has it (as a delta, or a full) or replace says its journal
	// is to be superseded by a full (damaged, or behind this machine's
	// last change); never a journal this command could not read, found in
	// a newer format, or found changed by another machine.
	base    map[string][]ledger.Edge
	replace map[string]bool
	// needStub: ledger.yaml is missing or not the stub; stubIfMatch is
	// the ETag to replace ("" for none).
	needStub    bool
	stubIfMatch string
	// legacy: the bucket holds only the whole copy of before the journal.
	legacy bool
	// unusable are the datasets whose journal a new machine could not
	// use (damaged, or in a newer format), with why and what to do: a
	// read-only command goes on without them, and nothing is saved
	// locally that would later pass for the whole ledger.
	unusable map[string]error
	// blocked are the datasets whose damaged journal this machine's
	// ledger cannot supersede (an edge's object is gone: another machine
	// removed it after this machine's entry). Their journal is left as it
	// is, and a change of their edges is refused (checkBlocked).
	blocked map[string]blockedJournal
	// deleteWarned is set once a superseded entry could not be deleted;
	// blockedWarned once the blocked journals were named.
	deleteWarned, blockedWarned bool
}

// head is the newest entry of ds in the listing.
func (j *journal) head(ds string) (journalObj, bool) {
	es := j.entries[ds]
	if len(es) == 0 {
		return journalObj{}, false
	}
	return es[len(es)-1], true
}

// listJournal lists PREFIX.zfs2s3/: the journals' entries and ledger.yaml.
func (b *Backup) listJournal(ctx context.Context) (*journal, error) {
	objs, err := b.S3.List(ctx, ledger.JournalDir(b.Opt.Prefix))
	if err != nil {
		return nil, err
	}
	j := &journal{entries: map[string][]journalObj{}, base: map[string][]ledger.Edge{}, replace: map[string]bool{},
		unusable: map[string]error{}, blocked: map[string]blockedJournal{}}
	for _, o := range objs {
		if o.Key == LedgerKey(b.Opt.Prefix) {
			j.copyETag = o.ETag
			continue
		}
		ds, seq, ok := ledger.ParseJournalKey(b.Opt.Prefix, o.Key)
		if !ok {
			continue
		}
		j.entries[ds] = append(j.entries[ds], journalObj{Seq: seq, Key: o.Key, ETag: o.ETag, Size: o.Size})
	}
	for _, es := range j.entries {
		sort.Slice(es, func(a, c int) bool { return es[a].Seq < es[c].Seq })
	}
	return j, nil
}

// readEntry reads and checks one journal entry.
func (b *Backup) readEntry(ctx context.Context, o journalObj) (*ledger.Entry, error) {
	data, _, err := b.S3.ReadAll(ctx, o.Key, ledger.MaxJournalEntryBytes)
	if errors.Is(err, s3up.ErrTooLarge) {
		err = fmt.Errorf("%w: %w", ledger.ErrDamaged, err)
	}
	if errors.Is(err, s3up.ErrNotFound) {
		return nil, fmt.Errorf("journal entry %s went away while it was read (another machine is writing the ledger): %w; try again", o.Key, err)
	}
	if err != nil {
		return nil, err
	}
	return ledger.ParseEntry(data, b.S3.Bucket(), b.Opt.Prefix, o.Key)
}

// readDataset reads ds's journal: from the newest entry back to a full,
// or to the entry mark names when from holds the edges after it. It
// returns the edges after the newest entry and the mark for them.
func (b *Backup) readDataset(ctx context.Context, j *journal, ds string, mark *journalMark, from []ledger.Edge) ([]ledger.Edge, journalMark, error) {
	edges, m, _, err := b.readDatasetFrom(ctx, j, ds, mark, from)
	return edges, m, err
}

// readDatasetFrom is readDataset that also says whether the read went
// back to mark's entry (rather than to a full entry written after it):
// only then are the edges known to build on from's.
func (b *Backup) readDatasetFrom(ctx context.Context, j *journal, ds string, mark *journalMark, from []ledger.Edge) ([]ledger.Edge, journalMark, bool, error) {
	reached := false
	es := j.entries[ds]
	var read []*ledger.Entry
	var since int64
	start := []ledger.Edge(nil)
	full, fullBytes := uint64(0), int64(0)
	for i := len(es) - 1; ; i-- {
		if i < 0 {
			return nil, journalMark{}, false, fmt.Errorf("%w: the journal of %s has no full entry at or before entry %d", ledger.ErrDamaged, ds, es[0].Seq)
		}
		if i < len(es)-1 && es[i].Seq != es[i+1].Seq-1 {
			missing := es[i+1].Seq - 1
			return nil, journalMark{}, false, fmt.Errorf("%w: the journal of %s lacks entry %d (%s)", ledger.ErrDamaged, ds, missing, ledger.JournalKey(b.Opt.Prefix, ds, missing))
		}
		if mark != nil && es[i].Seq == mark.Seq && es[i].ETag == mark.ETag {
			start, full, fullBytes = from, mark.Full, mark.FullBytes
			since += mark.Since
			reached = true
			break
		}
		e, err := b.readEntry(ctx, es[i])
		if err != nil {
			return nil, journalMark{}, false, fmt.Errorf("the bucket's ledger journal of %s: %w", ds, err)
		}
		read = append(read, e)
		if e.Kind == ledger.EntryFull {
			full, fullBytes = e.Seq, es[i].Size
			break
		}
		since += es[i].Size
	}
	edges := start
	for k := len(read) - 1; k >= 0; k-- {
		edges = read[k].Apply(edges)
	}
	// The dataset's edges must make a ledger that passes the checks
	// (duplicates across entries, cycles), as the local one does.
	l := ledger.New(b.S3.Bucket(), b.Opt.Prefix)
	l.Edges = edges
	if data, err := ledger.Marshal(l); err != nil {
		return nil, journalMark{}, false, err
	} else if _, err := ledger.Parse(data); err != nil {
		return nil, journalMark{}, false, fmt.Errorf("the bucket's ledger journal of %s: %w", ds, err)
	}
	h := es[len(es)-1]
	if full == h.Seq {
		since = 0
	}
	return edges, journalMark{Seq: h.Seq, ETag: h.ETag, Digest: ledger.Digest(edges), Full: full, Since: since, FullBytes: fullBytes}, reached, nil
}

// loadLedger returns the local ledger, or the bucket's when there is no
// local one (a new machine). Where the bucket's journal of a dataset is
// not the one this machine last wrote or adopted and holds other edges,
// another machine has changed it: read-only commands use the newer one
// and mutating ones refuse rather than overwrite it. A dataset journal
// that cannot be used concerns that dataset alone (damagedjournal.go).
// Hold the ledger lock.
func (b *Backup) loadLedger(ctx context.Context, mutate bool) (*ledger.Ledger, error) {
	local, err := b.store.Load(b.S3.Bucket(), b.Opt.Prefix)
	if err != nil {
		return nil, err
	}
	j, err := b.listJournal(ctx)
	if err != nil {
		return b.copyUnreadable(err, mutate, local)
	}
	b.j = j
	j.state = b.readJournalState()
	if err := b.checkCopy(ctx, j, mutate); err != nil {
		return nil, err
	}
	if j.legacy {
		return b.loadLegacy(ctx, mutate, local)
	}
	exists := b.store.Exists()
	locals := ledger.ByDataset(local.Edges)
	names := map[string]bool{}
	for ds := range j.entries {
		names[ds] = true
	}
	for ds := range j.state.Datasets {
		names[ds] = true
	}
	for ds := range locals {
		names[ds] = true
	}
	sorted := make([]string, 0, len(names))
	for ds := range names {
		sorted = append(sorted, ds)
	}
	sort.Strings(sorted)
	stateChanged, repair := false, false
	shown := map[string][]ledger.Edge{} // datasets shown from the bucket instead of the local ledger
	var merges []journalMerge
	for _, ds := range sorted {
		loc := locals[ds]
		mark, marked := j.state.Datasets[ds]
		h, ok := j.head(ds)
		if !ok {
			// Never written (the first write failed) or deleted: written again.
			if len(loc) > 0 || marked {
				repair = true
			}
			if marked {
				delete(j.state.Datasets, ds)
				stateChanged = true
			}
			continue
		}
		inSync := marked && h.Seq == mark.Seq && h.ETag == mark.ETag
		locDigest := ledger.Digest(loc)
		if inSync && exists {
			if locDigest == mark.Digest {
				j.base[ds] = loc
			} else {
				repair = true // this machine's last write of the dataset failed
				j.replace[ds] = true
			}
			continue
		}
		var mp *journalMark
		var from []ledger.Edge
		if marked && exists && locDigest == mark.Digest {
			mp, from = &mark, loc // read only the entries after the one applied here
		}
		remote, m, reached, err := b.readDatasetFrom(ctx, j, ds, mp, from)
		switch {
		case errors.Is(err, ledger.ErrDamaged) && !exists && !mutate && (b.reading != nil || b.unusableLater):
			// A new machine: the other datasets are still read (and
			// restored) from the bucket; this one is named, not dropped.
			j.unusable[ds] = unusableJournal(err)
			continue
		case errors.Is(err, ledger.ErrNewerFormat) && mutate:
			return nil, fmt.Errorf("%w; this zfs2s3 changes nothing while the bucket holds a newer ledger", err)
		case errors.Is(err, ledger.ErrNewerFormat) && exists:
			b.notice("using this machine's ledger: %v", err)
			continue
		case errors.Is(err, ledger.ErrNewerFormat):
			return nil, err
		case errors.Is(err, ledger.ErrDamaged) && exists:
			if err := b.supersedeDamaged(ctx, j, ds, loc, marked, mutate, err); err != nil {
				return nil, err
			}
			continue
		case errors.Is(err, ledger.ErrDamaged):
			return nil, fmt.Errorf("%w; run zfs2s3 ledger rebuild to make a new one from the manifests", err)
		case errors.Is(err, s3up.ErrSetup):
			return nil, err
		case err != nil && mutate:
			return nil, fmt.Errorf("cannot read the bucket's ledger to check that no other machine changed it (%w); try again", err)
		case err != nil && exists:
			b.notice("the bucket's ledger journal of %s cannot be read (%v); using this machine's ledger", ds, err)
			continue
		case err != nil:
			return nil, err
		}
		if m.Digest == locDigest || !exists {
			// Its own write whose answer was lost, a new machine, or
			// another machine's change that this one already has.
			j.base[ds] = remote
			j.state.Datasets[ds] = m
			stateChanged = true
			if !exists {
				shown[ds] = remote
			}
			continue
		}
		how := "changed by another machine"
		rolledBack := marked && (h.Seq < mark.Seq || h.Seq == mark.Seq)
		if rolledBack {
			how = "changed by another machine or rolled back to an older version"
		}
		if mutate && !rolledBack && (mp != nil || (!marked && len(loc) == 0)) {
			// This machine's ledger of ds is the journal's entry mark.Seq,
			// or it never had ds (another machine's new dataset): the
			// other machines' entries are merged in (merge.go).
			merges = append(merges, journalMerge{ds: ds, base: loc, theirs: remote, mark: m, reached: reached || !marked})
			continue
		}
		if mutate {
			return nil, fmt.Errorf("the bucket's ledger journal of %s (entry %d) was %s since this machine's ledger (entry %d); move %s away to adopt the bucket's ledger, or run zfs2s3 ledger rebuild to merge both from the manifests",
				ds, h.Seq, how, mark.Seq, b.store.Path())
		}
		if !rolledBack {
			slog.Info("another machine changed the bucket's ledger journal; using it", "dataset", ds, "entry", h.Seq, "local_entry", mark.Seq)
			shown[ds] = remote
			continue
		}
		b.notice("the bucket's ledger journal of %s (entry %d) was %s; this machine's (entry %d) is shown; run zfs2s3 ledger rebuild to merge both from the manifests",
			ds, h.Seq, how, mark.Seq)
	}
	if !exists {
		l := ledger.New(b.S3.Bucket(), b.Opt.Prefix)
		for _, ds := range sorted {
			l.Edges = append(l.Edges, shown[ds]...)
		}
		if len(j.unusable) > 0 {
			// Not saved: a local ledger without these datasets would make
			// the next command take them for datasets never backed up,
			// and its next change would supersede their journals.
			if err := b.unusableJournals(j, sorted); err != nil {
				return nil, err
			}
			return l, nil
		}
		if len(l.Edges) == 0 {
			return local, nil // nothing anywhere: a first run
		}
		if b.readOnly {
			slog.Warn("no local ledger, and the state dir cannot be written; using the bucket's copy without saving it locally", "edges", len(l.Edges), "dir", b.store.Dir)
			return l, nil
		}
		slog.Info("no local ledger; using the bucket's copy", "edges", len(l.Edges))
		if err := b.store.Save(l); err != nil {
			return nil, err
		}
		return l, b.writeJournalState(j.state)
	}
	if len(merges) > 0 {
		merged, err := b.mergeJournals(ctx, j, local, merges)
		if err != nil {
			return nil, err
		}
		local, stateChanged = merged, true
	}
	if stateChanged {
		if err := b.writeJournalState(j.state); err != nil {
			return nil, err
		}
	}
	if repair && local.Generation > 0 {
		b.repairCopy(ctx, local)
	}
	if len(shown) == 0 {
		return local, nil
	}
	view := &ledger.Ledger{Version: local.Version, Bucket: local.Bucket, Prefix: local.Prefix, Generation: local.Generation}
	for _, e := range local.Edges {
		if _, ok := shown[e.Target.Dataset()]; !ok {
			view.Edges = append(view.Edges, e)
		}
	}
	for _, ds := range sorted {
		view.Edges = append(view.Edges, shown[ds]...)
	}
	return view, nil
}

// copyUnreadable handles a listing of the journals that failed.
func (b *Backup) copyUnreadable(err error, mutate bool, local *ledger.Ledger) (*ledger.Ledger, error) {
	switch {
	case errors.Is(err, s3up.ErrSetup):
		return nil, err // wrong credentials, bucket, region, clock: the rest would fail too
	case mutate:
		return nil, fmt.Errorf("cannot read the bucket's ledger to check that no other machine changed it (%w); try again", err)
	case b.store.Exists():
		b.notice("the bucket's ledger copy cannot be read (%v); using this machine's ledger", err)
		return local, nil
	}
	return nil, err
}

// checkCopy looks at ledger.yaml: the stub (nothing to do), missing (the
// stub is written with the next change), the whole copy of a bucket not
// migrated yet (j.legacy), or one written by an older zfs2s3 after this
// bucket moved to the journal (its changes are not in the journal:
// mutating commands refuse).
func (b *Backup) checkCopy(ctx context.Context, j *journal, mutate bool) error {
	switch {
	case j.copyETag == "":
		j.needStub = true
		return nil
	case j.copyETag == j.state.Stub:
		return nil
	case len(j.entries) == 0 && j.copyETag == b.syncedETag():
		j.legacy = true // the whole copy this machine wrote before the journal
		return nil
	}
	data, etag, err := b.S3.ReadAll(ctx, LedgerKey(b.Opt.Prefix), ledger.MaxFileBytes)
	if errors.Is(err, s3up.ErrNotFound) {
		j.copyETag, j.needStub = "", true
		return nil
	}
	if err != nil && !errors.Is(err, s3up.ErrTooLarge) {
		if len(j.entries) == 0 {
			j.legacy = true // loadLegacy reads it again and says what is wrong
			return nil
		}
		if mutate {
			return fmt.Errorf("cannot read the bucket's ledger.yaml (%w); try again", err)
		}
		return nil
	}
	if err == nil {
		j.copyETag = etag
		_, err = ledger.ParseCopy(data)
	}
	switch {
	case errors.Is(err, ledger.ErrStub):
		j.state.Stub = etag
		return b.writeJournalState(j.state)
	case len(j.entries) == 0:
		j.legacy = true
		return nil
	case errors.Is(err, ledger.ErrNewerFormat) && mutate:
		return fmt.Errorf("the bucket's ledger s3://%s/%s: %w; this zfs2s3 changes nothing while the bucket holds a newer ledger", b.S3.Bucket(), LedgerKey(b.Opt.Prefix), err)
	case errors.Is(err, ledger.ErrNewerFormat) && !b.store.Exists():
		return fmt.Errorf("the bucket's ledger s3://%s/%s: %w", b.S3.Bucket(), LedgerKey(b.Opt.Prefix), err) // a new machine: nothing to fall back on
	case errors.Is(err, ledger.ErrNewerFormat):
		b.notice("the bucket's ledger s3://%s/%s: %v", b.S3.Bucket(), LedgerKey(b.Opt.Prefix), err)
		return nil
	case err != nil:
		// Damaged: replaced by the stub, only over the copy read here.
		j.needStub, j.stubIfMatch = true, j.copyETag
		return nil
	case j.copyETag == j.state.Migrated || j.copyETag == b.syncedETag():
		// A migration (here or by another machine, from the copy this one
		// wrote last) wrote the journal but not the stub yet.
		j.needStub, j.stubIfMatch = true, j.copyETag
		return nil
	}
	msg := fmt.Sprintf("the bucket's ledger s3://%s/%s was written by a zfs2s3 older than the ledger journal after this bucket moved to it; its changes are not in the journal: upgrade zfs2s3 on every machine that writes this prefix, then run zfs2s3 ledger rebuild to merge everything from the manifests",
		b.S3.Bucket(), LedgerKey(b.Opt.Prefix))
	if mutate {
		return errors.New(msg)
	}
	b.notice("%s", msg)
	return nil
}

// notice reports something about the bucket's ledger copy that the user
// should know although the command goes on: logged, and kept for status.
func (b *Backup) notice(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	slog.Warn(msg)
	b.notices = append(b.notices, msg)
}

// repairCopy writes the local ledger to the bucket when a write after the
// last change failed, rather than leave the copy behind until the next
// change; a failure is only a warning, the command goes on.
func (b *Backup) repairCopy(ctx context.Context, l *ledger.Ledger) {
	if b.readOnly { // without the lock a write could race a concurrent change
		slog.Warn("the bucket's ledger copy is behind the local one; the next command that can write the state dir updates it")
		return
	}
	if err := b.pushLedger(ctx, l); err != nil {
		slog.Warn("the bucket's ledger copy is behind the local one and could not be updated", "error", err)
	}
}

// errCopyBehind means a change reached the local ledger but not the bucket's copy.
var errCopyBehind = errors.New("ledger saved locally but not to the bucket")

// saveLedger writes the next generation of the ledger locally, then to the
// bucket's journals. A failed bucket write is repaired by the next command
// (loadLedger); a conflicting one is reported and left to the user.
func (b *Backup) saveLedger(ctx context.Context, l *ledger.Ledger) error {
	if err := b.checkBlocked(l); err != nil {
		return err
	}
	l.Generation++
	b.saves++
	if err := b.store.Save(l); err != nil {
		return err
	}
	return b.pushLedger(ctx, l)
}

// pushLedger writes each dataset whose edges changed since its journal's
// newest entry: a delta, or a full when the journal is unknown, damaged,
// or long. Then the stub, where ledger.yaml is missing or still the whole
// copy. Every write adds an entry that was not there.
func (b *Backup) pushLedger(ctx context.Context, l *ledger.Ledger) error {
	j := b.j
	if j == nil {
		return fmt.Errorf("%w: the bucket's journals were not read", errCopyBehind)
	}
	if j.legacy && !b.rebuilding {
		// Migrating: checked like the whole copy was, then a full per dataset.
		if err := b.checkLegacyWrite(ctx, l); err != nil {
			return err
		}
		j.state.Migrated, j.needStub, j.stubIfMatch = b.remoteETag, true, b.remoteETag
	}
	b.warnBlocked(j)
	now := ledger.ByDataset(l.Edges)
	names := map[string]bool{}
	for ds := range now {
		names[ds] = true
	}
	for ds := range j.base {
		names[ds] = true
	}
	for ds := range j.entries {
		names[ds] = true
	}
	sorted := make([]string, 0, len(names))
	for ds := range names {
		sorted = append(sorted, ds)
	}
	sort.Strings(sorted)
	var err error
	for _, ds := range sorted {
		for try := 1; ; try++ {
			err = b.pushDataset(ctx, j, ds, now[ds])
			if !errors.Is(err, errJournalRace) || try > maxMergeTries {
				break
			}
			// Another machine wrote the entry first: merge its change
			// and write this one after it.
			edges, merr := b.rebase(ctx, j, l, ds)
			if merr != nil {
				err = fmt.Errorf("%w: %w", errCopyBehind, merr)
				break
			}
			if edges == nil {
				break // not mergeable: err says so
			}
			now[ds] = edges
		}
		if err != nil {
			break
		}
	}
	if err == nil && j.needStub {
		err = b.pushStub(ctx, j)
	}
	if serr := b.writeJournalState(j.state); err == nil {
		err = serr
	}
	if err == nil {
		j.legacy = false
	}
	return err
}

// pushDataset writes ds's next journal entry if its edges changed.
func (b *Backup) pushDataset(ctx context.Context, j *journal, ds string, edges []ledger.Edge) error {
	base, known := j.base[ds]
	h, hasJournal := j.head(ds)
	mark := j.state.Datasets[ds]
	if !hasJournal && len(edges) == 0 && !known {
		return nil
	}
	if hasJournal && !known && !j.replace[ds] && !b.rebuilding {
		return nil // not read, newer, or another machine's: left as it is
	}
	if known && !b.rebuilding {
		if _, _, changed := ledger.Delta(base, edges); !changed {
			return nil
		}
	}
	e := &ledger.Entry{Kind: ledger.EntryFull, Bucket: b.S3.Bucket(), Prefix: b.Opt.Prefix, Dataset: ds, Seq: h.Seq + 1, Edges: edges}
	if known && hasJournal && !b.rebuilding && mark.Seq == h.Seq && h.Seq-mark.Full < checkpointEvery {
		put, dropped, _ := ledger.Delta(base, edges)
		delta := &ledger.Entry{Kind: ledger.EntryDelta, Bucket: e.Bucket, Prefix: e.Prefix, Dataset: ds, Seq: e.Seq, Edges: put, Dropped: dropped}
		if data, err := ledger.MarshalEntry(delta); err == nil && mark.Since+int64(len(data)) <= max(mark.FullBytes, 4096) {
			e = delta
		}
	}
	if e.Edges == nil {
		e.Edges = []ledger.Edge{}
	}
	data, err := ledger.MarshalEntry(e)
	if err != nil {
		return err
	}
	key := ledger.JournalKey(b.Opt.Prefix, ds, e.Seq)
	etag, err := b.putNew(ctx, key, data)
	if err != nil {
		return err
	}
	j.entries[ds] = append(j.entries[ds], journalObj{Seq: e.Seq, Key: key, ETag: etag, Size: int64(len(data))})
	j.base[ds] = append([]ledger.Edge(nil), edges...)
	delete(j.replace, ds)
	m := journalMark{Seq: e.Seq, ETag: etag, Digest: ledger.Digest(edges), Full: mark.Full, Since: mark.Since + int64(len(data)), FullBytes: mark.FullBytes}
	if e.Kind == ledger.EntryFull {
		m.Full, m.Since, m.FullBytes = e.Seq, 0, int64(len(data))
	}
	j.state.Datasets[ds] = m
	if e.Kind == ledger.EntryFull && known && hasJournal && mark.Seq == h.Seq && mark.ETag == h.ETag && mark.Full > 0 {
		// mark.Full is the full entry before this one, read with the
		// journal up to its head: the entries older than it go.
		b.dropSuperseded(ctx, j, ds, mark.Full)
	}
	return nil
}

// putNew writes an object that must not exist yet: with If-None-Match,
// or with --conditional-writes off after a HEAD that finds none.
func (b *Backup) putNew(ctx context.Context, key string, data []byte) (string, error) {
	ifNone := ""
	if b.Opt.ConditionalWrites == "off" {
		_, err := b.S3.Head(ctx, key)
		switch {
		case err == nil:
			return "", fmt.Errorf("%w: %w: another machine wrote the bucket's ledger entry %s while this command ran; %s", errCopyBehind, errJournalRace, key, b.localOnly())
		case !errors.Is(err, s3up.ErrNotFound):
			return "", fmt.Errorf("%w: cannot check the bucket's ledger entry %s (%w); the next zfs2s3 command writes it again", errCopyBehind, key, err)
		}
		ifNone = s3up.AnyVersion
	}
	etag, err := b.S3.PutIf(ctx, key, data, nil, ifNone)
	if errors.Is(err, s3up.ErrChanged) {
		// A retry of our own write that had landed looks the same: look.
		if raw, cur, rerr := b.S3.ReadAll(ctx, key, ledger.MaxJournalEntryBytes); rerr == nil && bytes.Equal(raw, data) {
			return cur, nil
		}
		return "", fmt.Errorf("%w: %w: another machine changed the bucket's ledger while this command ran (it wrote %s first); %s", errCopyBehind, errJournalRace, key, b.localOnly())
	}
	if errors.Is(err, s3up.ErrNoConditionalWrites) {
		return "", fmt.Errorf("%w: %w; this change is in the local ledger %s only: for this store, run zfs2s3 with --conditional-writes off (or ZFS2S3_CONDITIONAL_WRITES=off), and the next command writes the copy", errCopyBehind, err, b.store.Path())
	}
	if err != nil {
		return "", fmt.Errorf("%w (%w); the next zfs2s3 command writes it again", errCopyBehind, err)
	}
	return etag, nil
}

// dropSuperseded deletes ds's entries before the full entry at seq, which
// is the full entry before the newest: deletion lags one checkpoint. Its
// entries and those after it stay, so that their numbers are not free:
// a writer whose listing is a little stale (its head below the newest
// full) fails to write the next number with If-None-Match rather than
// succeeding below the newest full, where readers would ignore its change
// while it believes it applied. Readers ignore the entries before the
// newest full anyway; a host whose credentials cannot delete leaves them,
// with one warning.
func (b *Backup) dropSuperseded(ctx context.Context, j *journal, ds string, seq uint64) {
	var kept []journalObj
	for _, o := range j.entries[ds] {
		if o.Seq >= seq {
			kept = append(kept, o)
			continue
		}
		if err := b.S3.Delete(ctx, o.Key); err != nil {
			kept = append(kept, o)
			if !j.deleteWarned {
				j.deleteWarned = true
				slog.Warn("cannot delete superseded entries of the bucket's ledger journal; they stay, and are ignored", "key", o.Key, "error", err)
			}
		}
	}
	j.entries[ds] = kept
}

// pushStub writes the ledger.yaml stub over what was read there.
func (b *Backup) pushStub(ctx context.Context, j *journal) error {
	data, err := ledger.MarshalStub(b.S3.Bucket(), b.Opt.Prefix)
	if err != nil {
		return err
	}
	ifMatch := j.stubIfMatch
	if b.Opt.ConditionalWrites == "off" || b.rebuilding {
		ifMatch = s3up.AnyVersion
	}
	etag, err := b.S3.PutIf(ctx, LedgerKey(b.Opt.Prefix), data, nil, ifMatch)
	if errors.Is(err, s3up.ErrChanged) {
		if raw, cur, rerr := b.S3.ReadAll(ctx, LedgerKey(b.Opt.Prefix), ledger.MaxFileBytes); rerr == nil && bytes.Equal(raw, data) {
			etag, err = cur, nil
		} else {
			return fmt.Errorf("%w: another machine changed the bucket's ledger.yaml while this command ran (a zfs2s3 older than the ledger journal?); run zfs2s3 ledger rebuild to merge both from the manifests", errCopyBehind)
		}
	}
	if err != nil {
		return fmt.Errorf("%w: write the ledger.yaml stub (%w); the next zfs2s3 command writes it again", errCopyBehind, err)
	}
	j.state.Stub, j.needStub, j.copyETag = etag, false, etag
	return nil
}

// journalKnown reports whether key is the tree's ledger.yaml or a journal entry.
func (b *Backup) journalKnown(key string) bool {
	return strings.HasPrefix(key, ledger.JournalDir(b.Opt.Prefix))
}
