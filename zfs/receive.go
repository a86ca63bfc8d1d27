package zfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Snapshots lists the snapshots of one dataset (not of its children),
// oldest first. A dataset that does not exist is ErrNotExist. It is one
// zfs get of depth 1 (the dataset, its snapshots and its children), not a
// list and a get per snapshot: a backup run calls it for every dataset.
func (r Runner) Snapshots(ctx context.Context, dataset string) ([]Snapshot, error) {
	out, err := r.output(ctx, "get", "-H", "-p", "-o", "name,property,value", "type,guid,createtxg,creation", "-d", "1", dataset)
	if err != nil {
		return nil, err
	}
	return parseSnapshots(out, dataset)
}

// parseSnapshots picks dataset's snapshots out of zfs get's lines of
// name, property and value.
func parseSnapshots(out []byte, dataset string) ([]Snapshot, error) {
	snaps, found := groupSnapshots(out)
	if !found[dataset] {
		return nil, fmt.Errorf("zfs get %s: no such dataset in its output: %w", dataset, ErrNotExist)
	}
	return snaps[dataset], nil
}

// SnapshotsOf returns the snapshots of each of datasets, oldest first, in
// one zfs get, and those of datasets that do not exist: a backup run over
// hundreds of datasets starts one zfs process, not one per dataset.
func (r Runner) SnapshotsOf(ctx context.Context, datasets []string) (snaps map[string][]Snapshot, missing []string, err error) {
	if len(datasets) == 0 {
		return map[string][]Snapshot{}, nil, nil
	}
	args := append([]string{"get", "-H", "-p", "-o", "name,property,value", "type,guid,createtxg,creation", "-d", "1"}, datasets...)
	out, err := r.output(ctx, args...)
	if err != nil && !errors.Is(err, ErrNotExist) {
		return nil, nil, err
	}
	snaps, found := groupSnapshots(out)
	for _, d := range datasets {
		if !found[d] {
			missing = append(missing, d)
		}
	}
	if err != nil && len(missing) == 0 {
		return nil, nil, err // it said "does not exist" of something else
	}
	return snaps, missing, nil
}

// groupSnapshots reads zfs get's lines of name, property and value for
// datasets and their snapshots in one pass: the snapshots by dataset,
// oldest (by createtxg) first, and which datasets were listed.
func groupSnapshots(out []byte) (map[string][]Snapshot, map[string]bool) {
	found := map[string]bool{}
	byName := map[string]*Snapshot{}
	var order []string
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			continue
		}
		if !strings.Contains(f[0], "@") {
			found[f[0]] = true
			continue
		}
		s := byName[f[0]]
		if s == nil {
			s = &Snapshot{Name: f[0]}
			byName[f[0]] = s
			order = append(order, f[0])
		}
		n, _ := strconv.ParseUint(f[2], 10, 64)
		switch f[1] {
		case "guid":
			s.GUID = n
		case "createtxg":
			s.CreateTXG = n
		case "creation":
			s.Creation = time.Unix(int64(n), 0).UTC()
		}
	}
	snaps := map[string][]Snapshot{}
	for _, name := range order {
		s := byName[name]
		snaps[s.Dataset()] = append(snaps[s.Dataset()], *s)
	}
	for _, l := range snaps {
		sort.Slice(l, func(i, j int) bool { return l[i].CreateTXG < l[j].CreateTXG })
	}
	return snaps, found
}

// Exists reports whether a dataset exists.
func (r Runner) Exists(ctx context.Context, dataset string) (bool, error) {
	_, err := r.get(ctx, dataset, "type")
	if errors.Is(err, ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Receiver is a running "zfs receive". Write the stream, then Close to wait
// for the result; Abort kills it so that nothing of the stream is kept.
type Receiver struct {
	io.WriteCloser
	cmd    *exec.Cmd
	stderr bytes.Buffer
	args   []string
}

// ReceiveArgs is the argument vector of Receive, for --dry-run output.
func ReceiveArgs(dataset string, force bool) []string {
	if force {
		return []string{"receive", "-F", dataset}
	}
	return []string{"receive", dataset}
}

// Receive starts "zfs receive [-F] dataset". Its stdin is a 1 MiB pipe
// (growPipe): restore keeps decoding while zfs receive drains it, which
// took a restore of 1 GiB from 4.4 to 4.2 s here.
func (r Runner) Receive(ctx context.Context, dataset string, force bool) (*Receiver, error) {
	args := ReceiveArgs(dataset, force)
	c := exec.CommandContext(ctx, r.cmd(), args...)
	rc := &Receiver{cmd: c, args: args}
	c.Stderr = &rc.stderr
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	growPipe(pw)
	c.Stdin = pr
	if err := c.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, &Error{Args: args, Err: err}
	}
	pr.Close() // the child holds its copy
	rc.WriteCloser = pw
	return rc, nil
}

// Close ends the stream and waits for zfs receive to finish.
func (rc *Receiver) Close() error {
	rc.WriteCloser.Close()
	if err := rc.cmd.Wait(); err != nil {
		return &Error{Args: rc.args, Stderr: rc.stderr.String(), Err: classify(rc.stderr.String(), err)}
	}
	return nil
}

// Abort kills zfs receive before it has the whole stream; ZFS then keeps
// nothing of it.
func (rc *Receiver) Abort() {
	rc.cmd.Process.Kill()
	rc.WriteCloser.Close()
	rc.cmd.Wait()
}

// Destroy destroys a dataset (recursively) or a snapshot. zfs-fuse reports
// "busy" right after writes, so it unmounts and retries a few times.
func (r Runner) Destroy(ctx context.Context, name string, recursive bool) error {
	args := []string{"destroy", name}
	if recursive {
		args = []string{"destroy", "-r", name}
	}
	var err error
	for i := 0; i < 5; i++ {
		if _, err = r.output(ctx, args...); err == nil || errors.Is(err, ErrNotExist) {
			return nil
		}
		if !strings.Contains(name, "@") {
			r.output(ctx, "unmount", "-f", name)
		}
		time.Sleep(time.Second)
	}
	return err
}

// Rename renames a dataset. zfs-fuse refuses to rename a mounted dataset
// ("dataset is busy"), and a just-received one for a moment, so it
// unmounts and retries a few times, and mounts the dataset again (under
// its new name, or its old one when the rename failed) if it unmounted it.
func (r Runner) Rename(ctx context.Context, from, to string) error {
	var err error
	unmounted := false
	for i := 0; i < 10; i++ {
		if _, err = r.output(ctx, "rename", from, to); err == nil {
			break
		}
		if !strings.Contains(err.Error(), "busy") {
			break
		}
		if _, uerr := r.output(ctx, "unmount", "-f", from); uerr == nil {
			unmounted = true
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		if unmounted {
			if _, merr := r.output(ctx, "mount", from); merr != nil {
				return fmt.Errorf("%w; and %s, unmounted to retry, could not be mounted again: %w", err, from, merr)
			}
		}
		return err
	}
	if unmounted {
		if _, err := r.output(ctx, "mount", to); err != nil {
			return fmt.Errorf("renamed %s to %s, but: %w", from, to, err)
		}
	}
	return nil
}

// Rollback rolls a dataset back to its newest snapshot ("zfs rollback",
// without -r): it fails, destroying nothing, when a later snapshot exists.
func (r Runner) Rollback(ctx context.Context, snapshot string) error {
	var err error
	for i := 0; i < 5; i++ { // zfs-fuse: busy right after a receive
		if _, err = r.output(ctx, "rollback", snapshot); err == nil || !strings.Contains(err.Error(), "busy") {
			return err
		}
		time.Sleep(time.Second)
	}
	return err
}

// Children lists the datasets below dataset (not dataset itself).
func (r Runner) Children(ctx context.Context, dataset string) ([]string, error) {
	out, err := r.output(ctx, "list", "-H", "-o", "name", "-t", "filesystem,volume", "-r", dataset)
	if err != nil {
		return nil, err
	}
	var children []string
	for _, n := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.HasPrefix(n, dataset+"/") {
			children = append(children, n)
		}
	}
	return children, nil
}

// LocalProperties returns the properties set on dataset itself (source
// "local"), as exact values.
func (r Runner) LocalProperties(ctx context.Context, dataset string) (map[string]string, error) {
	out, err := r.output(ctx, "get", "-H", "-p", "-s", "local", "-o", "name,property,value", "all", dataset)
	if err != nil {
		return nil, err
	}
	return parseGet(out)
}

// SetProperty sets one property of a dataset.
func (r Runner) SetProperty(ctx context.Context, dataset, property, value string) error {
	_, err := r.output(ctx, "set", property+"="+value, dataset)
	return err
}
