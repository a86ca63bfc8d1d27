package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
)

// A dataset's journal in the bucket that cannot be used (an entry that is
// damaged or fails the ledger's checks, or one in a newer format) concerns
// that dataset alone (README "When the machine is gone"):
//
//   - on a new machine, read-only commands that are told what they read
//     (Reading, and status) go on with the other datasets and name it; a
//     command that reads it fails, saying what to do. No local ledger is
//     saved meanwhile: one without that dataset would make every later
//     command take it for a dataset never backed up, and supersede its
//     journal with an empty one;
//   - on a machine with its own ledger, a new full entry of that ledger
//     supersedes the damaged journal on the next change, but only while
//     the bucket holds exactly that ledger's edges of the dataset: each
//     still has its objects and manifest, and no other edge is there.
//     An edge whose object is gone was removed by another machine (an
//     admin's fleet prune) in the entries that are now damaged: writing it
//     back would make the safety rule count on a stream that no longer
//     exists; an edge this ledger lacks was stored by another machine, and
//     leaving it out would lose it. Such a journal is left as it is, and
//     changes of its dataset are refused until ledger rebuild makes its
//     ledger from the manifests.

// Reading tells the ledger read of a read-only command (restore, save,
// verify) which dataset it reads, "" for all of them. On a new machine, a
// dataset journal in the bucket that cannot be used then fails the command
// only when it reads that dataset; otherwise the command goes on with the
// other datasets and names the journal on stderr.
func (b *Backup) Reading(dataset string) { b.reading = &dataset }

// unusableJournal says what is wrong with a dataset journal a new machine
// cannot use, and what to do.
func unusableJournal(err error) error {
	if errors.Is(err, ledger.ErrNewerFormat) {
		return err // it says to upgrade zfs2s3
	}
	return fmt.Errorf("%w; run zfs2s3 ledger rebuild to make a new one from the manifests", err)
}

// unusableJournals handles the journals of j.unusable after a new
// machine read the others: the error of the first one the command reads,
// else each named as a notice (kept for status's report, and on stderr
// unless status reports it itself).
func (b *Backup) unusableJournals(j *journal, sorted []string) error {
	if b.reading != nil {
		if err := unusableFor(j.unusable, *b.reading); err != nil {
			return err
		}
	}
	for _, ds := range sorted {
		err, ok := j.unusable[ds]
		switch {
		case !ok:
		case b.unusableLater:
			b.notices = append(b.notices, err.Error())
		default:
			b.notice("skipping dataset %s: %v", ds, err)
		}
	}
	return nil
}

// unusableFor returns the error of the unusable journal of dataset, or of
// the first one when dataset is "" (all of them); nil when there is none.
func unusableFor(unusable map[string]error, dataset string) error {
	if dataset != "" {
		return unusable[dataset]
	}
	names := slices.Sorted(maps.Keys(unusable))
	switch len(names) {
	case 0:
		return nil
	case 1:
		return unusable[names[0]]
	}
	return fmt.Errorf("%w (the journals of %s cannot be used either)", unusable[names[0]], strings.Join(names[1:], ", "))
}

// unusableKeyPrefixes are the key prefixes of the datasets whose journal
// could not be used: their objects are not unknown, only not listed.
func (b *Backup) unusableKeyPrefixes() []string {
	if b.j == nil {
		return nil
	}
	var ps []string
	for ds := range b.j.unusable {
		ps = append(ps, b.keyPrefix(ds))
	}
	return ps
}

// keyPrefix is the key prefix of dataset ds's objects, PREFIX/DATASET/.
func (b *Backup) keyPrefix(ds string) string {
	return datasetKeyPrefix(ledger.ObjectKey(b.Opt.Prefix, ledger.Snapshot{Name: ds + "@x"}, nil))
}

// datasetKeyPrefix is the part of an edge's key before its snapshot's
// name: PREFIX/DATASET/ (snapshot names hold no '/' in keys).
func datasetKeyPrefix(key string) string { return key[:strings.LastIndex(key, "/")+1] }

// blockedJournal is a damaged journal that this machine's ledger may not
// supersede: digest is the dataset's edges when it was read, err the
// refusal of a change of them.
type blockedJournal struct {
	digest string
	err    error
}

// supersedeDamaged decides what becomes of ds's journal, found damaged
// (damaged says how), on a machine with a local ledger whose edges of ds
// are loc. It is superseded by a full entry of loc on the next change
// (j.replace) only when the bucket holds exactly loc's edges of ds (one
// LIST of ds's keys): each edge of loc still has its objects and its
// manifest, and every edge of ds there (by its manifest or first object)
// is one of loc's or of this machine's pending uploads. Otherwise another
// machine changed ds in the entries that are now damaged (its prune
// removed an edge, or it stored one), and a full entry of loc would undo
// that change: the journal is left as it is, and a mutating command
// refuses changes of ds (checkBlocked) until ledger rebuild. So is it when
// this machine has no edge of ds and no record of its journal: a full
// entry of nothing would drop every edge of ds.
//
// Only a failed listing in a mutating command is an error.
func (b *Backup) supersedeDamaged(ctx context.Context, j *journal, ds string, loc []ledger.Edge, marked, mutate bool, damaged error) error {
	why := ""
	if !marked && len(loc) == 0 {
		why = fmt.Sprintf("this machine's ledger has no edge of %s to replace it with", ds)
	} else {
		prefix := b.keyPrefix(ds)
		objs, err := b.S3.List(ctx, prefix)
		if err != nil {
			if mutate {
				return fmt.Errorf("%w; and the objects of %s cannot be listed to check that this machine's ledger may replace it (%w); try again", damaged, ds, err)
			}
			b.notice("%v; this machine's ledger is used", damaged)
			return nil
		}
		have := make(map[string]bool, len(objs))
		var stored []string // the first object keys of the edges of ds there
		for _, o := range objs {
			have[o.Key] = true
			if datasetKeyPrefix(o.Key) != prefix {
				continue // a child dataset's
			}
			if obj, ok := s3up.ManifestOf(o.Key); ok {
				stored = append(stored, obj)
			} else if strings.HasSuffix(o.Key, ".zfs") {
				stored = append(stored, o.Key) // its manifest may be lost
			}
		}
		if gone := goneObject(loc, have); gone != "" {
			why = fmt.Sprintf("this machine's ledger cannot replace it: %s (removed since this machine's last entry, as another machine's prune does)", gone)
		} else if extra := foreignEdge(stored, loc, b.pendingKeys()); extra != "" {
			why = fmt.Sprintf("this machine's ledger cannot replace it: the bucket holds %s, an edge it does not have (stored by another machine since this machine's last entry)", extra)
		}
	}
	if why == "" {
		b.notice("%v; this machine's ledger is used, and a new full entry supersedes it on the next change", damaged)
		j.replace[ds] = true
		return nil
	}
	refused := fmt.Errorf("%w; %s; changes of %s are refused until zfs2s3 ledger rebuild makes its ledger from the manifests", damaged, why, ds)
	if !mutate {
		b.notice("%v", refused)
		return nil
	}
	j.blocked[ds] = blockedJournal{digest: ledger.Digest(loc), err: refused}
	return nil
}

// goneObject describes the first edge of edges, not being removed, with
// an object or manifest that have (the keys in the bucket) lacks; "" when
// there is none. A removal deletes the manifest first, so an edge whose
// manifest alone is gone is being removed by another machine.
func goneObject(edges []ledger.Edge, have map[string]bool) string {
	for _, e := range edges {
		if e.Removing {
			continue // its objects go anyway
		}
		for _, key := range append(e.Keys(), s3up.ManifestKey(e.Key)) {
			if !have[key] {
				return fmt.Sprintf("its edge %s needs the object %s, which is gone from the bucket", e, key)
			}
		}
	}
	return ""
}

// foreignEdge is the first of stored (the first object keys of the
// dataset's edges in the bucket, known by their manifests or objects) that
// belongs neither to an edge of edges nor to a pending upload (pending, by
// object key); "" when there is none.
func foreignEdge(stored []string, edges []ledger.Edge, pending map[string]bool) string {
	own := make(map[string]bool, len(edges))
	for _, e := range edges {
		own[e.Key] = true
	}
	for _, key := range stored {
		if !own[key] && !pending[key] {
			return key
		}
	}
	return ""
}

// pendingKeys are the object keys of this machine's pending uploads; a
// manifest is written before its edge is recorded. An unreadable state
// dir gives none: then a pending upload's manifest blocks, the safe way.
func (b *Backup) pendingKeys() map[string]bool {
	ps, err := b.loadPending()
	if err != nil {
		return nil
	}
	keys := make(map[string]bool, len(ps))
	for _, e := range pendingEdges(ps) {
		keys[e.Key] = true
	}
	return keys
}

// blockedFor is the block on ds's journal, if it has one.
func (j *journal) blockedFor(ds string) (blockedJournal, bool) {
	if j == nil {
		return blockedJournal{}, false
	}
	bl, ok := j.blocked[ds]
	return bl, ok
}

// checkBlocked refuses, before anything is saved, a change of the edges
// of a dataset whose damaged journal this machine may not supersede.
func (b *Backup) checkBlocked(l *ledger.Ledger) error {
	if b.j == nil || len(b.j.blocked) == 0 || b.rebuilding {
		return nil
	}
	byDS := ledger.ByDataset(l.Edges)
	for _, ds := range slices.Sorted(maps.Keys(b.j.blocked)) {
		if bl := b.j.blocked[ds]; ledger.Digest(byDS[ds]) != bl.digest {
			return bl.err
		}
	}
	return nil
}

// warnBlocked names, once per command, the blocked journals that a write
// of the other datasets leaves as they are.
func (b *Backup) warnBlocked(j *journal) {
	if j.blockedWarned || b.rebuilding {
		return
	}
	for _, ds := range slices.Sorted(maps.Keys(j.blocked)) {
		j.blockedWarned = true
		slog.Warn(j.blocked[ds].err.Error() + "; its journal was left as it is")
	}
}
