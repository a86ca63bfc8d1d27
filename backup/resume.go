package backup

import (
	"context"
	"errors"
	"fmt"

	"github.com/zfs2s3/zfs2s3/ledger"
)

// Resume continues the pending uploads to target (all when empty).
// Each is attempted; the first failure is returned after the others ran.
func (b *Backup) Resume(ctx context.Context, target string) error {
	sel, err := b.pendingFor(target)
	if err != nil || len(sel) == 0 {
		return err
	}
	var errs []error
	for _, p := range sel {
		p, ok, err := b.relock(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue // finished by another process meanwhile
		}
		if err := b.run(ctx, p); err != nil {
			p.lock.Unlock()
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Abort discards the pending uploads to target (all when empty): their
// multipart uploads, any object a completed-but-unrecorded upload left, and
// their state files.
func (b *Backup) Abort(ctx context.Context, target string) error {
	sel, err := b.pendingFor(target)
	if err != nil {
		return err
	}
	for _, p := range sel {
		p, ok, err := b.relock(p)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := b.abort(ctx, p); err != nil {
			p.lock.Unlock()
			return fmt.Errorf("abort upload of %s: %w", p.Edge, err)
		}
		b.Out("aborted upload of %s", p.Edge)
	}
	return nil
}

func (b *Backup) abort(ctx context.Context, p *pending) error {
	u := p.Upload
	keys := u.Keys()
	if err := b.S3.AbortUpload(ctx, &u); err != nil {
		return err
	}
	if u.Completing || len(u.Full) > 0 || len(u.Done) > 0 || u.Finishing != nil {
		// Completed objects may exist without a ledger edge: delete them,
		// unless a run that crashed before cleaning up had recorded the edge.
		err := b.withLedger(ctx, func(l *ledger.Ledger) (bool, error) {
			if l.Stored(p.Edge) {
				return false, nil
			}
			return false, tolerateDenied(b.deleteObjects(ctx, keys), fmt.Sprintf("the object(s) %s completed by the aborted upload of %s", keys[0], p.Edge))
		})
		if err != nil {
			return err
		}
	}
	return p.release()
}

// pendingFor lists pending uploads to target, or all; naming a target with
// none pending is an error.
func (b *Backup) pendingFor(target string) ([]*pending, error) {
	ps, err := b.loadPending()
	if err != nil {
		return nil, err
	}
	sel := selectPending(ps, target)
	if len(sel) == 0 {
		if target != "" {
			return nil, usagef("no pending upload of %s", target)
		}
		b.Out("no pending uploads")
	}
	return sel, nil
}
