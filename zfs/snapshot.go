package zfs

import "context"

// CreateSnapshotArgs is the argument vector of CreateSnapshot, for
// --dry-run output and tests.
func CreateSnapshotArgs(name string, recursive bool) []string {
	if recursive {
		return []string{"snapshot", "-r", name}
	}
	return []string{"snapshot", name}
}

// CreateSnapshot takes the snapshot name (DATASET@SNAP); with recursive,
// "zfs snapshot -r" takes it of every descendant too, all at one
// transaction, so the datasets are consistent with each other. A name
// taken already is ErrExist, a dataset that is gone ErrNotExist; zfs
// creates nothing then, for -r on none of the datasets.
func (r Runner) CreateSnapshot(ctx context.Context, name string, recursive bool) error {
	if err := CheckSnapshotName(name); err != nil {
		return err
	}
	_, err := r.output(ctx, CreateSnapshotArgs(name, recursive)...)
	return err
}
