package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/zfs2s3/zfs2s3/s3up"
)

// A fleet's backup hosts hold credentials that cannot delete (zfs2s3
// policy host), so that whoever takes a host cannot take its backups too.
// Commands that only add (backup, upload, resume_upload, abort_upload)
// must work with them; commands whose point is deleting (remove, prune,
// consolidate) must say so before they change anything.

// ErrCannotDelete means the credentials may not delete under the prefix.
var ErrCannotDelete = errors.New("these credentials cannot delete objects")

// deleteProbeKey is the key the probe deletes: inside the ledger's folder,
// which zfs2s3 never writes an object of this name to, so it never exists
// and deleting it changes nothing (on a versioned bucket it leaves a
// delete marker, which listings do not show).
const deleteProbeKey = ".zfs2s3/delete-permission-probe"

// checkCanDelete asks the store whether these credentials may delete under
// the prefix, by deleting a key that does not exist there: S3 answers 204
// when deleting is allowed and 403 AccessDenied when it is not, whether or
// not the key exists. Only an AccessDenied fails; other errors are left
// for the real work to meet and report.
func (b *Backup) checkCanDelete(ctx context.Context, command string) error {
	if b.deleteChecked {
		return nil
	}
	err := b.S3.Delete(ctx, b.Opt.Prefix+deleteProbeKey)
	if !s3up.IsAccessDenied(err) {
		b.deleteChecked = true
		if err != nil {
			slog.Info("the delete permission probe failed; going on", "error", err)
		}
		return nil
	}
	return fmt.Errorf("%w under s3://%s/%s (AccessDenied): run %s from the admin side with credentials that may delete (see zfs2s3 policy admin); nothing was changed",
		ErrCannotDelete, b.S3.Bucket(), b.Opt.Prefix, command)
}

// tolerateDenied turns an AccessDenied from a delete done on the way (not
// the point of the command) into a warning: host credentials cannot
// delete, and what stays behind is only clutter the admin side can clear.
func tolerateDenied(err error, what string) error {
	if err != nil && s3up.IsAccessDenied(err) {
		slog.Warn(what+": these credentials cannot delete (AccessDenied), so it stays in the bucket; remove it from the admin side (see zfs2s3 policy admin)", "error", err)
		return nil
	}
	return err
}
