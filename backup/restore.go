package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
	"github.com/zfs2s3/zfs2s3/transform"
	"github.com/zfs2s3/zfs2s3/zfs"
)

// RestoreOptions says what to restore where.
type RestoreOptions struct {
	Target string // DATASET@SNAP as stored
	GUID   uint64 // picks among snapshots re-created under one name
	Into   string // destination dataset; empty: the original dataset
	Force  bool   // zfs receive -F
	DryRun bool
}

// Restore receives the cheapest chain of stored streams that rebuilds the
// target, starting from the destination's newest snapshot when the ledger
// knows it, else from a full stream. Every object of the chain is checked
// in the bucket before anything is received. A failed restore leaves the
// destination as it was: a dataset it created is destroyed, one it added
// snapshots to loses them and is rolled back to where the restore began
// (unless someone else took a snapshot since, which is kept), and one it
// overwrites (--force, no snapshots; never a pool's root) is replaced only
// once the whole chain has been received beside it.
func (b *Backup) Restore(ctx context.Context, o RestoreOptions) error {
	l, err := b.readLedger(ctx)
	if err != nil {
		return err
	}
	target, err := l.Snapshot(o.Target, o.GUID)
	if err != nil {
		return usagef("%v", err)
	}
	dest := o.Into
	if dest == "" {
		dest = target.Dataset()
	}
	existed, start, err := b.restoreStart(ctx, l, dest, target, o.Force)
	if err != nil || (existed && start.GUID == target.GUID) {
		return err
	}
	chain, err := b.intactChain(ctx, l, start.GUID, target)
	if err != nil {
		return err
	}
	// A forced restore over a dataset without snapshots receives beside it
	// and swaps. A pool's root dataset cannot be swapped, and receiving
	// into it directly would lose its contents on a failure: refused by
	// restoreStart.
	replace := existed && start.GUID == 0
	into := dest
	if replace {
		into = restoreTemp(dest)
		if err := b.tempFree(ctx, dest, into, restoreOld(dest)); err != nil {
			return err
		}
	}
	force := o.Force && !replace
	if o.DryRun && slices.ContainsFunc(chain, ledger.Edge.Transformed) {
		b.dryRunScript(chain, into, force)
		if replace {
			b.Out("# then zfs2s3 replaces %s with %s (zfs rename)", dest, into)
		}
		return nil
	}
	if !o.DryRun {
		if err := b.checkIdentity(chain); err != nil {
			return err
		}
	}
	if o.DryRun {
		for _, e := range chain {
			more := ""
			if n := len(e.Segments); n > 0 {
				more = fmt.Sprintf(" and .2 to .%d", n+1)
			}
			b.Out("%s: get s3://%s/%s%s (%d bytes) | zfs %s", e, b.S3.Bucket(), e.Key, more, e.StoredBytes, strings.Join(zfs.ReceiveArgs(into, force), " "))
		}
		if replace {
			b.Out("then replace %s with %s (zfs rename)", dest, into)
		}
		return nil
	}
	var received []string
	for _, e := range chain {
		before, err := b.ZFS.Snapshots(ctx, into)
		if err != nil && !errors.Is(err, zfs.ErrNotExist) {
			return b.failRestore(err, into, dest, existed, replace, start.Name, received)
		}
		fed, err := b.receiveEdge(ctx, e, into, force)
		if err == nil {
			received = append(received, into+"@"+e.Target.Short())
			b.Out("received %s into %s", e, into)
			continue
		}
		clean := context.WithoutCancel(ctx)
		if name, ok := b.committed(clean, into, fed, before); ok {
			// zfs receive committed a stream, and the restore failed:
			// undone with the rest.
			received = append(received, name)
			if errors.Is(err, errStreamCut) {
				// The objects did not verify: not what the restore asked for.
				err = fmt.Errorf("%w; zfs receive had already committed a whole stream from it (one ending early: forged?) as %s, which was destroyed", err, name)
			} else {
				err = fmt.Errorf("%w; zfs receive had committed %s, which was destroyed with the rest", err, name)
			}
		} else if errors.Is(err, errStreamCut) {
			err = fmt.Errorf("%w; nothing of it was received", err)
			if len(received) == 0 && (!existed || replace) {
				// zfs-fuse keeps the dataset a killed receive of a
				// full stream created: it is this restore's, and
				// goes too; only while it holds no snapshot, so
				// that a dataset someone else made meanwhile is
				// never destroyed.
				if snaps, xerr := b.ZFS.Snapshots(clean, into); xerr == nil && len(snaps) == 0 {
					received = append(received, into)
				}
			}
		}
		return b.failRestore(err, into, dest, existed, replace, start.Name, received)
	}
	if replace {
		if err := b.replaceDataset(ctx, into, dest); err != nil {
			return err
		}
	}
	b.Out("restored %s as %s@%s", target.Name, dest, target.Short())
	return nil
}

// failRestore undoes what a failed restore received (undoRestore) and
// says so after err.
func (b *Backup) failRestore(err error, into, dest string, existed, replace bool, start string, received []string) error {
	if undo := b.undoRestore(into, existed && !replace, start, received); undo != nil {
		return fmt.Errorf("%w; and undoing it failed: %w", err, undo)
	}
	switch {
	case replace:
		return fmt.Errorf("%w; %s was left as it was", err, dest)
	case existed && len(received) > 0:
		return fmt.Errorf("%w; %s was rolled back to %s", err, dest, start)
	}
	return err
}

// restoreStart finds where a restore into dest begins: dest's newest
// snapshot when a stored chain leads from it, or the zero Snapshot (a full
// stream) when dest does not exist or, with force, has no snapshots.
func (b *Backup) restoreStart(ctx context.Context, l *ledger.Ledger, dest string, target ledger.Snapshot, force bool) (existed bool, start zfs.Snapshot, err error) {
	snaps, err := b.ZFS.Snapshots(ctx, dest)
	if errors.Is(err, zfs.ErrNotExist) {
		return false, zfs.Snapshot{}, nil
	}
	if err != nil {
		return false, zfs.Snapshot{}, err
	}
	if len(snaps) == 0 {
		if !force {
			return true, zfs.Snapshot{}, usagef("%s exists and has no snapshots: restore --into a new dataset, or --force to overwrite it", dest)
		}
		children, err := b.ZFS.Children(ctx, dest)
		if err != nil {
			return true, zfs.Snapshot{}, err
		}
		if len(children) > 0 {
			return true, zfs.Snapshot{}, usagef("%s has child datasets (%s), which --force would have to replace along with it: restore --into a new dataset", dest, strings.Join(children, ", "))
		}
		if !strings.Contains(dest, "/") {
			return true, zfs.Snapshot{}, usagef("%s is a pool's root dataset without snapshots, which --force cannot replace safely (it cannot be renamed aside, and a failed restore would leave its contents gone): restore --into a new dataset", dest)
		}
		return true, zfs.Snapshot{}, nil
	}
	newest := snaps[len(snaps)-1]
	if newest.GUID == target.GUID {
		b.Out("%s already has %s (same GUID); nothing to restore", dest, target.Name)
		return true, newest, nil
	}
	if _, err := l.Chain(newest.GUID, target.GUID); err != nil {
		return true, zfs.Snapshot{}, usagef("%s exists and its newest snapshot %s has no stored chain to %s: restore --into a new dataset", dest, newest.Name, target.Name)
	}
	return true, newest, nil
}

// intactChain returns the cheapest stored chain from the snapshot from (0:
// a full stream) to target whose objects are all in the bucket at their
// recorded sizes, so that a restore never starts on a chain it cannot
// finish. An edge with a missing object is left out and the next cheapest
// chain tried, which finds a bypass where there is one.
func (b *Backup) intactChain(ctx context.Context, l *ledger.Ledger, from uint64, target ledger.Snapshot) ([]ledger.Edge, error) {
	usable := &ledger.Ledger{Edges: slices.Clone(l.Edges)}
	checked := map[ledger.ID]bool{}
	var lost []string
	for {
		chain, err := usable.Chain(from, target.GUID)
		if err != nil && len(lost) > 0 {
			return nil, fmt.Errorf("cannot restore %s: %s, and no other stored chain avoids it; nothing was received", target.Name, strings.Join(lost, "; "))
		}
		if err != nil {
			return nil, err
		}
		intact := true
		for _, e := range chain {
			if checked[e.ID()] {
				continue
			}
			err := b.checkObjects(ctx, e)
			var gone *lostObjectError
			if errors.As(err, &gone) {
				lost = append(lost, err.Error())
				usable.Drop(e.ID())
				intact = false
				break
			}
			if err != nil {
				return nil, fmt.Errorf("restore %s: %w; nothing was received", target.Name, err)
			}
			checked[e.ID()] = true
		}
		if intact {
			return chain, nil
		}
	}
}

// lostObjectError is an object of an edge that the bucket no longer holds
// as recorded.
type lostObjectError struct{ msg string }

func (e *lostObjectError) Error() string { return e.msg }

// checkObjects HEADs each object of e: a *lostObjectError when one is
// missing or has another size than the ledger recorded.
func (b *Backup) checkObjects(ctx context.Context, e ledger.Edge) error {
	for _, o := range e.Objects() {
		obj, err := b.S3.Head(ctx, o.Key)
		switch {
		case errors.Is(err, s3up.ErrNotFound):
			return &lostObjectError{fmt.Sprintf("object %s of %s is missing from the bucket", o.Key, e)}
		case err != nil:
			return err
		case obj.Size != o.Bytes:
			return &lostObjectError{fmt.Sprintf("object %s of %s has %d bytes, the ledger recorded %d", o.Key, e, obj.Size, o.Bytes)}
		}
	}
	return nil
}

// undoRestore removes what a failed restore received into dest: the whole
// dataset if the restore created it, else (existed) the snapshots it added
// and the data they brought, by rolling back to start, the snapshot the
// restore began from. It destroys only what this restore received: a
// dataset it did not create (made by someone else meanwhile, so that the
// first receive failed with "exists") stays, and so do snapshots taken
// since the restore began; then the plain rollback to start fails, and the
// error says so, rather than destroying them as zfs rollback -r would.
func (b *Backup) undoRestore(dest string, existed bool, start string, received []string) error {
	ctx := context.Background() // clean up even when the restore was cancelled
	if len(received) == 0 {
		return nil // zfs kept nothing of the stream; dest's own changes stay
	}
	if !existed {
		return b.ZFS.Destroy(ctx, dest, true) // our first receive created it
	}
	for _, s := range slices.Backward(received) {
		if err := b.ZFS.Destroy(ctx, s, false); err != nil {
			return err
		}
	}
	if err := b.ZFS.Rollback(ctx, start); err != nil {
		return fmt.Errorf("%w; the snapshots it received are destroyed, but %s was not rolled back to %s because a snapshot it did not receive was taken since (kept, with the data written since); roll back by hand if you want", err, dest, start)
	}
	return nil
}

// restoreTemp and restoreOld are the names a forced restore gives the
// dataset it receives beside dest and the one it replaces. They carry no
// PID: PIDs repeat (in containers above all), and a fixed name makes a
// leftover of a killed restore one that the next restore names.
func restoreTemp(dest string) string { return dest + ".zfs2s3-restore" }
func restoreOld(dest string) string  { return dest + ".zfs2s3-old" }

// tempFree refuses a forced restore into dest while one of its temporary
// names is taken: by a restore that was killed, or one still running. It
// never destroys them, as this restore did not create them.
func (b *Backup) tempFree(ctx context.Context, dest string, names ...string) error {
	for _, n := range names {
		ok, err := b.ZFS.Exists(ctx, n)
		if err != nil {
			return err
		}
		if ok {
			return fmt.Errorf("restore --force into %s: %s exists, left by a restore that was killed or still running; nothing was received: once no restore runs, look into it and destroy it (zfs destroy -r) or rename it", dest, n)
		}
	}
	return nil
}

// replaceDataset puts the fully received dataset tmp in dest's place, with
// dest's local properties (mountpoint, compression, ...) carried over, as
// zfs receive -F into dest would have kept them. Until dest is renamed
// aside nothing of it has changed; if tmp cannot take its name, dest gets
// it back.
func (b *Backup) replaceDataset(ctx context.Context, tmp, dest string) error {
	ctx = context.WithoutCancel(ctx) // a swap half done is worse than a late exit
	props, err := b.ZFS.LocalProperties(ctx, dest)
	if err == nil {
		old := restoreOld(dest)
		if err = b.ZFS.Rename(ctx, dest, old); err == nil {
			if err = b.ZFS.Rename(ctx, tmp, dest); err != nil {
				if back := b.ZFS.Rename(ctx, old, dest); back != nil {
					return fmt.Errorf("restore: %s could not take the place of %s (%w), and %s, moved aside as %s, could not be renamed back: %w; rename it by hand", tmp, dest, err, dest, old, back)
				}
			} else {
				return b.finishReplace(ctx, old, dest, props)
			}
		}
	}
	if undo := b.ZFS.Destroy(ctx, tmp, true); undo != nil {
		return fmt.Errorf("restore: replace %s: %w; %s was left as it was, destroy %s by hand: %w", dest, err, dest, tmp, undo)
	}
	return fmt.Errorf("restore: replace %s: %w; %s was left as it was", dest, err, dest)
}

// notCarried are the local properties a replaced dataset does not pass on:
// they describe its storage rather than how it is used (volsize would
// shrink a restored zvol, a reservation would be charged twice), or its
// encryption, or can be set only at creation.
var notCarried = []string{
	"volsize", "volblocksize", "reservation", "refreservation",
	"encryption", "encryptionroot", "pbkdf2iters", "pbkdf2salt",
	"casesensitivity", "normalization", "utf8only",
}

// carriedProperties is the part of a replaced dataset's local properties
// that replaceDataset sets on the restored one.
func carriedProperties(props map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range props {
		if !slices.Contains(notCarried, k) && !strings.HasPrefix(k, "key") {
			out[k] = v
		}
	}
	return out
}

// finishReplace destroys the replaced dataset, now named old, and sets its
// local properties (those carriedProperties keeps) on dest.
func (b *Backup) finishReplace(ctx context.Context, old, dest string, props map[string]string) error {
	if err := b.ZFS.Destroy(ctx, old, true); err != nil {
		return fmt.Errorf("restored %s, but its former contents are still in %s: %w; destroy it with zfs destroy -r", dest, old, err)
	}
	props = carriedProperties(props)
	var failed []string
	for _, k := range slices.Sorted(maps.Keys(props)) {
		if err := b.ZFS.SetProperty(ctx, dest, k, props[k]); err != nil {
			failed = append(failed, err.Error())
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("restored %s, but could not set its former properties again: %s", dest, strings.Join(failed, "; "))
	}
	return nil
}

// receiveEdge streams one edge's objects into zfs receive, verified on the
// way. fed is what zfs receive was given (nil: nothing): on a failure, the
// snapshot its BEGIN record names may have been committed, and the caller
// undoes it (see committed).
//
// The digests are known only at the end of each object, and zfs receive
// commits a stream as soon as it reads an END record. zfs2s3 holds back
// the last MiB of an edge until it is verified, so a damaged genuine
// stream never completes; but a forged or damaged object can hold a
// complete stream of its own (whoever can write the bucket can make one:
// age encrypts to a public key) with its END anywhere, early in any
// segment, and no hold-back short of the whole edge keeps that from zfs
// receive. Two things keep such a stream from staying received: zfs
// receive gets nothing but a stream of the edge's own GUIDs (its BEGIN
// record is checked first), and what it committed of a stream that then
// failed verification is destroyed by the caller. The second is the real
// guard: a forger can copy the GUIDs, which are in the object's key.
func (b *Backup) receiveEdge(ctx context.Context, e ledger.Edge, dest string, force bool) (fed *fedStream, err error) {
	rc, err := b.ZFS.Receive(ctx, dest, force)
	if err != nil {
		return nil, err
	}
	s := &receiveSink{rc: rc, edge: e}
	cerr := b.copyEdge(ctx, s, e)
	if cerr == nil && s.fed == nil && s.refused == nil {
		cerr = fmt.Errorf("its stream has %d bytes, less than a zfs send stream's BEGIN record", len(s.head))
	}
	switch {
	case s.refused != nil:
		rc.Abort()
		return nil, fmt.Errorf("restore stopped at %s: %w%w", e, s.refused, errStreamCut)
	case s.zerr != nil && ctx.Err() == nil:
		// zfs receive stopped reading: its own reason is the one to show.
		return fedUnlessRefused(s.fed, s.zerr), receiveFailed(e, dest, force, s.zerr)
	case cerr != nil:
		switch {
		case s.exited:
		case ctx.Err() != nil || s.fed == nil:
			rc.Abort()
		default:
			// End the stream rather than kill zfs receive: it then
			// refuses a cut stream, or has committed a whole one it
			// read before (a forged END), and either way is done
			// with it when the caller looks at what it left.
			s.fed.Took = rc.Close() == nil
		}
		return s.fed, fmt.Errorf("restore stopped at %s: %w%w", e, cerr, errStreamCut)
	case s.early:
		return s.fed, fmt.Errorf("restore stopped at %s: zfs receive took a whole stream from its objects before their end, though they match the ledger's digests: the stream is not one zfs send wrote%s%w", e, forgedHint, errStreamCut)
	}
	if err := rc.Close(); err != nil {
		return fedUnlessRefused(s.fed, err), receiveFailed(e, dest, force, err)
	}
	s.fed.Took = true
	name := dest + "@" + e.Target.Short()
	got, err := b.ZFS.Snapshot(context.WithoutCancel(ctx), name)
	switch {
	case err != nil:
		return s.fed, fmt.Errorf("restore %s into %s: zfs receive succeeded, but %w%w", e, dest, err, errStreamCut)
	case got.GUID != e.Target.GUID:
		return s.fed, fmt.Errorf("restore %s into %s: zfs receive made %s with guid %d, the ledger recorded %d%w", e, dest, name, got.GUID, e.Target.GUID, errStreamCut)
	}
	return s.fed, nil
}

// fedUnlessRefused is what a zfs receive that failed with zerr may have
// committed. One that refused the destination as existing committed
// nothing, and a snapshot of the edge's GUID there is another restore's
// (into the same new dataset, finished meanwhile): nil, so it is never
// undone. Any other failure may come after the commit (a new dataset
// that cannot be mounted): fed, so the caller finds what it committed.
func fedUnlessRefused(fed *fedStream, zerr error) *fedStream {
	if errors.Is(zerr, zfs.ErrExist) {
		return nil
	}
	return fed
}

// errStreamCut marks a restore that stopped feeding zfs receive (a
// download failed, the data was damaged or not the edge's) and ended it.
// Its text is empty: it only marks the error.
var errStreamCut = errors.New("")

// receiveFailed is the error for a zfs receive that failed: zfs's reason,
// and the --force hint where that is the way out.
func receiveFailed(e ledger.Edge, dest string, force bool, err error) error {
	hint := ""
	if !force && strings.Contains(err.Error(), "modified") {
		hint = fmt.Sprintf("; restore with --force to roll %s back to its newest snapshot, discarding the changes made since", dest)
	}
	return fmt.Errorf("restore %s into %s: %w%s", e, dest, err, hint)
}

// receiveSink writes an edge's stream into zfs receive. It holds the first
// zfs.BeginSize bytes until their BEGIN record is the edge's (its GUIDs,
// one snapshot): a stream of anything else is refused before zfs receive
// gets a byte. When zfs receive stops reading, it waits for it: a failure
// is zfs's reason to show (zerr); a success (early) means zfs receive took
// a whole stream before the objects' end, which no stream zfs send wrote
// does, and the rest is read on, unwritten, so that the object whose
// digest is wrong is found and named.
type receiveSink struct {
	rc      *zfs.Receiver
	edge    ledger.Edge
	head    []byte
	fed     *fedStream // what zfs receive was given
	refused error
	exited  bool  // zfs receive exited (and was waited for)
	zerr    error // its failure
	early   bool  // it exited 0 before the end
}

func (s *receiveSink) Write(p []byte) (int, error) {
	switch {
	case s.early:
		return len(p), nil
	case s.exited:
		return 0, s.zerr
	case s.refused != nil:
		return 0, s.refused
	case s.fed != nil:
		return s.write(p)
	}
	n := min(len(p), zfs.BeginSize-len(s.head))
	s.head = append(s.head, p[:n]...)
	if len(s.head) < zfs.BeginSize {
		return len(p), nil
	}
	begin, err := checkBegin(s.head, s.edge)
	if err != nil {
		s.refused = err
		return 0, err
	}
	s.fed = &fedStream{Begin: begin}
	if _, err := s.write(s.head); err != nil {
		return 0, err
	}
	if _, err := s.write(p[n:]); err != nil {
		return n, err
	}
	return len(p), nil
}

// write passes p to zfs receive; once it stopped reading, it waits for it.
func (s *receiveSink) write(p []byte) (int, error) {
	if s.early {
		return len(p), nil
	}
	n, err := s.rc.Write(p)
	if err == nil {
		return n, nil
	}
	s.exited = true
	if s.zerr = s.rc.Close(); s.zerr != nil {
		return n, s.zerr
	}
	s.early = true
	s.fed.Took = true
	return len(p), nil
}

// fedStream is what a zfs receive was given: a stream that begins with the
// BEGIN record Begin. Took: zfs receive exited 0, so it committed a whole
// stream (of what it was given, perhaps not all of it).
type fedStream struct {
	zfs.Begin
	Took bool
}

// checkBegin reads the BEGIN record of e's stream and refuses one that is
// not e's: another snapshot's stream, or a compound one (zfs send -R or -I,
// several snapshots).
func checkBegin(head []byte, e ledger.Edge) (zfs.Begin, error) {
	key := e.Objects()[0].Key
	b, err := zfs.ParseBegin(head)
	if err != nil {
		return b, fmt.Errorf("object %s does not begin a zfs send stream (%w) (damaged or forged)%s", key, err, forgedHint)
	}
	var from uint64
	if e.Base != nil {
		from = e.Base.GUID
	}
	switch {
	case b.Compound:
		return b, fmt.Errorf("object %s holds a compound stream (%s, several snapshots), not the stream of %s alone (forged?)%s", key, b.ToName, e.Target.Name, forgedHint)
	case b.ToGUID != e.Target.GUID || b.FromGUID != from:
		return b, fmt.Errorf("object %s holds the stream of %s (guid %d from guid %d), the ledger recorded guid %d from %d (forged?)%s", key, b.ToName, b.ToGUID, b.FromGUID, e.Target.GUID, from, forgedHint)
	}
	return b, nil
}

// forgedHint is what to do about an object that is not the edge's stream.
const forgedHint = "; check who can write the bucket, and run zfs2s3 verify --read-data, which names every object that fails"

// committed finds what a failed receive into dest committed of the stream
// fed: the snapshot its BEGIN record names, if it was not in dest before
// the receive (before, as listed by zfs.Runner.Snapshots) and either zfs
// receive succeeded (then it made that name: one taken meanwhile would have
// failed it) or it has the GUID the record gave it. A snapshot someone
// else took meanwhile has another GUID and is never taken for it.
func (b *Backup) committed(ctx context.Context, dest string, fed *fedStream, before []zfs.Snapshot) (string, bool) {
	if fed == nil || fed.ToShort() == "" {
		return "", false
	}
	name := dest + "@" + fed.ToShort()
	if slices.ContainsFunc(before, func(s zfs.Snapshot) bool { return s.Name == name }) {
		return "", false
	}
	s, err := b.ZFS.Snapshot(ctx, name)
	return name, err == nil && (fed.Took || s.GUID == fed.ToGUID)
}

// holdBack is how much of a stream's end is withheld until its hash is
// verified; a zfs stream ends with its END record, so a receiver that never
// gets the last bytes keeps nothing.
const holdBack = 1 << 20

// copyVerified copies e's object from r to w, checking its size and
// digest against the ledger before the last bytes are written: the SHA-256
// of the whole stream, or with a part digest (ledger format 4), the
// composite of its parts' SHA-256s.
func copyVerified(w io.Writer, r io.Reader, e ledger.Edge) error {
	var h streamHash = wholeHash{sha256.New()}
	if e.PartDigest() {
		h = transform.NewStoredHash(e.PartSize)
	}
	head := max(e.StoredBytes-holdBack, 0)
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(r, head))
	if err != nil {
		return fmt.Errorf("read s3 object %s: %w", e.Key, err)
	}
	tail, err := io.ReadAll(io.LimitReader(r, e.StoredBytes-head+1))
	if err != nil {
		return fmt.Errorf("read s3 object %s: %w", e.Key, err)
	}
	if got := n + int64(len(tail)); got != e.StoredBytes {
		return fmt.Errorf("object %s has %d bytes or more, the ledger recorded %d", e.Key, got, e.StoredBytes)
	}
	h.Write(tail)
	if sum := h.Sum(); sum != e.SHA256 {
		return fmt.Errorf("object %s has sha256 %s, the ledger recorded %s (damaged in the bucket?)", e.Key, sum, e.SHA256)
	}
	_, err = w.Write(tail)
	return err
}

// streamHash is a stream's digest as the ledger records it.
type streamHash interface {
	io.Writer
	Sum() string
}

// wholeHash is the hex SHA-256 of everything written.
type wholeHash struct{ h hash.Hash }

func (w wholeHash) Write(p []byte) (int, error) { return w.h.Write(p) }
func (w wholeHash) Sum() string                 { return hex.EncodeToString(w.h.Sum(nil)) }

// Save writes one stored stream to path ("-": stdout), verified. A regular
// file (or a new one) is written beside path and renamed into place only
// once verified, so path never holds a partial stream; anything else (a
// device, a FIFO, /dev/fd/N) is written directly, as a shell redirection
// would. The path is checked before the download starts.
func (b *Backup) Save(ctx context.Context, ref EdgeRef, path string, stdout io.Writer) error {
	direct, err := saveMode(path)
	if err != nil {
		return err
	}
	l, err := b.readLedger(ctx)
	if err != nil {
		return err
	}
	e, err := l.Find(ref.Target, ref.Base, ref.TargetGUID, ref.BaseGUID)
	if err != nil {
		return usagef("%v", err)
	}
	if err := b.checkIdentity([]ledger.Edge{e}); err != nil {
		return err
	}
	if path == "-" {
		if err := b.copyEdge(ctx, stdout, e); err != nil {
			return fmt.Errorf("save %s: %w; the output is incomplete", e, err)
		}
		return nil
	}
	if direct {
		return b.saveDirect(ctx, e, path, stdout)
	}
	return b.saveReplace(ctx, e, path)
}

// saveMode checks path before anything is downloaded and says whether it
// is to be written directly (it exists and is not a regular file).
func saveMode(path string) (direct bool, err error) {
	switch path {
	case "":
		return false, usagef("save: the output path is empty; give a file name, or - for stdout")
	case "-":
		return true, nil
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("save to %s: %w", path, err)
	case fi.IsDir():
		return false, usagef("save: %s is a directory; give a file name", path)
	}
	return !fi.Mode().IsRegular(), nil
}

// saveDirect writes e into an existing non-regular file (one a symbolic
// link at path points to, as with a shell redirection). The "saved" line
// is left out when path is stdout itself, where it would join the stream.
func (b *Backup) saveDirect(ctx context.Context, e ledger.Edge, path string, stdout io.Writer) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("save %s: %w", e, err)
	}
	defer f.Close()
	// A regular file swapped in after saveMode's check would be
	// overwritten in place: refuse it. (No O_NOFOLLOW: /dev/fd/N and
	// /dev/stdout are symbolic links.)
	if fi, err := f.Stat(); err != nil {
		return fmt.Errorf("save %s: %w", e, err)
	} else if fi.Mode().IsRegular() {
		return fmt.Errorf("save %s: %s became a regular file after it was checked (replaced meanwhile?); nothing was written", e, path)
	}
	if err := b.copyEdge(ctx, f, e); err != nil {
		return fmt.Errorf("save %s: %w; the output in %s is incomplete", e, err, path)
	}
	toStdout := sameFile(f, stdout)
	if err := f.Close(); err != nil {
		return fmt.Errorf("save %s: %w", e, err)
	}
	if !toStdout {
		b.Out("saved %s to %s (%d bytes)", e, path, e.StoredBytes)
	}
	return nil
}

// sameFile reports whether f and w (when a file) are the same file.
func sameFile(f *os.File, w io.Writer) bool {
	o, ok := w.(*os.File)
	if !ok {
		return false
	}
	a, err1 := f.Stat()
	c, err2 := o.Stat()
	return err1 == nil && err2 == nil && os.SameFile(a, c)
}

// saveTemp is the name prefix of save's temporary files beside the file
// NAME: ".NAME.zfs2s3-tmp-PID-", so that a later save to NAME can tell
// them and their owner apart.
func saveTemp(name string) string { return "." + name + ".zfs2s3-tmp-" }

// saveReplace writes e to a temporary file beside path, then renames it
// over path. A symbolic link at path is itself replaced, never the file it
// points to: following it would let whoever can write path's directory
// (a shared /tmp) point root's save at /etc/shadow. The temporary file is
// removed on any failure, cancellation included; those of a save that was
// killed are removed by a later save to path.
func (b *Backup) saveReplace(ctx context.Context, e ledger.Edge, path string) error {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	removeStaleTemps(dir, name)
	f, err := os.CreateTemp(dir, saveTemp(name)+strconv.Itoa(os.Getpid())+"-*")
	if err != nil {
		return fmt.Errorf("save %s: %w", e, err)
	}
	defer os.Remove(f.Name()) // fails harmlessly once renamed
	defer f.Close()
	if err := b.copyEdge(ctx, f, e); err != nil {
		return fmt.Errorf("save %s: %w; %s was not written", e, err, path)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("save %s: %w", e, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save %s: %w", e, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("save %s: %w", e, err)
	}
	b.Out("saved %s to %s (%d bytes)", e, path, e.StoredBytes)
	return nil
}

// staleAge is how long a temporary file must have been left unchanged
// before a later save removes it; a save that is still writing touches its
// file far more often.
const staleAge = 10 * time.Minute

// removeStaleTemps removes the temporary files that earlier saves to name
// in dir left behind when they were killed. "No such process" alone does
// not prove a file's owner dead (another PID namespace, another machine on
// NFS), so a file must also be unchanged for staleAge, and be the current
// user's: root sweeping a shared directory leaves other users' files be.
func removeStaleTemps(dir, name string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	prefix := saveTemp(name)
	for _, de := range entries {
		rest, ok := strings.CutPrefix(de.Name(), prefix)
		if !ok || !de.Type().IsRegular() {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		fi, err := de.Info()
		if err != nil || time.Since(fi.ModTime()) < staleAge {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			os.Remove(filepath.Join(dir, de.Name()))
		}
	}
}
