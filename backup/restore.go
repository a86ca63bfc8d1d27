package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/zfs2s3/zfs2s3/ledger"
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
// knows it, else from a full stream. A failed restore removes what it
// received, so no half-restored dataset is left behind.
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
	existed, from, err := b.restoreStart(ctx, l, dest, target, o.Force)
	if err != nil || (existed && from == target.GUID) {
		return err
	}
	chain, err := l.Chain(from, target.GUID)
	if err != nil {
		return err
	}
	if o.DryRun {
		for _, e := range chain {
			more := ""
			if n := len(e.Segments); n > 0 {
				more = fmt.Sprintf(" and .2 to .%d", n+1)
			}
			b.Out("%s: get s3://%s/%s%s (%d bytes) | zfs %s", e, b.S3.Bucket(), e.Key, more, e.StoredBytes, strings.Join(zfs.ReceiveArgs(dest, o.Force), " "))
		}
		return nil
	}
	var received []string
	for _, e := range chain {
		if err := b.receiveEdge(ctx, e, dest, o.Force); err != nil {
			b.undoRestore(dest, existed, received)
			return err
		}
		received = append(received, dest+"@"+e.Target.Short())
		b.Out("received %s into %s", e, dest)
	}
	b.Out("restored %s as %s@%s", target.Name, dest, target.Short())
	return nil
}

// restoreStart finds where a restore into dest begins: the GUID of dest's
// newest snapshot when a stored chain leads from it, or 0 (a full stream)
// when dest does not exist.
func (b *Backup) restoreStart(ctx context.Context, l *ledger.Ledger, dest string, target ledger.Snapshot, force bool) (existed bool, from uint64, err error) {
	snaps, err := b.ZFS.Snapshots(ctx, dest)
	if errors.Is(err, zfs.ErrNotExist) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, err
	}
	if len(snaps) == 0 {
		if !force {
			return true, 0, usagef("%s exists and has no snapshots: restore --into a new dataset, or --force to overwrite it", dest)
		}
		return true, 0, nil
	}
	newest := snaps[len(snaps)-1]
	if newest.GUID == target.GUID {
		b.Out("%s already has %s (same GUID); nothing to restore", dest, target.Name)
		return true, target.GUID, nil
	}
	if _, err := l.Chain(newest.GUID, target.GUID); err != nil {
		return true, 0, usagef("%s exists and its newest snapshot %s has no stored chain to %s: restore --into a new dataset", dest, newest.Name, target.Name)
	}
	return true, newest.GUID, nil
}

// undoRestore destroys what a failed restore received: the whole dataset
// if the restore created it, else the snapshots it added.
func (b *Backup) undoRestore(dest string, existed bool, received []string) {
	ctx := context.Background() // clean up even when the restore was cancelled
	if !existed {
		if ok, _ := b.ZFS.Exists(ctx, dest); ok {
			b.ZFS.Destroy(ctx, dest, true)
		}
		return
	}
	for i := len(received) - 1; i >= 0; i-- {
		b.ZFS.Destroy(ctx, received[i], false)
	}
}

// receiveEdge streams one edge's objects into zfs receive, verified on the way.
func (b *Backup) receiveEdge(ctx context.Context, e ledger.Edge, dest string, force bool) error {
	body := b.S3.OpenObjects(ctx, e.Objects(), b.Opt.Concurrency)
	defer body.Close()
	rc, err := b.ZFS.Receive(ctx, dest, force)
	if err != nil {
		return err
	}
	if err := copyVerified(rc, body, e); err != nil {
		rc.Abort()
		return fmt.Errorf("restore stopped at %s: %w; nothing of it was received", e, err)
	}
	if err := rc.Close(); err != nil {
		return fmt.Errorf("restore %s: %w", e, err)
	}
	return nil
}

// holdBack is how much of a stream's end is withheld until its hash is
// verified; a zfs stream ends with its END record, so a receiver that never
// gets the last bytes keeps nothing.
const holdBack = 1 << 20

// copyVerified copies e's object from r to w, checking its size and
// SHA-256 against the ledger before the last bytes are written.
func copyVerified(w io.Writer, r io.Reader, e ledger.Edge) error {
	h := sha256.New()
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
	if sum := hex.EncodeToString(h.Sum(nil)); sum != e.SHA256 {
		return fmt.Errorf("object %s has sha256 %s, the ledger recorded %s (damaged in the bucket?)", e.Key, sum, e.SHA256)
	}
	_, err = w.Write(tail)
	return err
}

// Save writes one stored stream to path ("-": stdout), verified.
func (b *Backup) Save(ctx context.Context, ref EdgeRef, path string, stdout io.Writer) error {
	l, err := b.readLedger(ctx)
	if err != nil {
		return err
	}
	e, err := l.Find(ref.Target, ref.Base, ref.TargetGUID, ref.BaseGUID)
	if err != nil {
		return usagef("%v", err)
	}
	body := b.S3.OpenObjects(ctx, e.Objects(), b.Opt.Concurrency)
	defer body.Close()
	if path == "-" {
		if err := copyVerified(stdout, body, e); err != nil {
			return fmt.Errorf("save %s: %w; the output is incomplete", e, err)
		}
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := copyVerified(f, body, e); err != nil {
		f.Close()
		return fmt.Errorf("save %s: %w; %s was not written", e, err, path)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	b.Out("saved %s to %s (%d bytes)", e, path, e.StoredBytes)
	return nil
}
