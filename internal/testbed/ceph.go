package testbed

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// CephPackages are the Debian packages make test-compat installs (Ceph 16.2
// on Debian 12), with --no-install-recommends.
var CephPackages = []string{"radosgw", "ceph-mon", "ceph-osd", "ceph-common"}

// Ceph is a one-node Ceph cluster with a RADOS Gateway on 127.0.0.1: one
// monitor, one OSD keeping its data in memory (memstore), no cephx, pools
// of size 1. Each daemon runs in the foreground as a child of the test, so
// Stop ends exactly what StartCeph started.
type Ceph struct {
	S3
	dir   string
	conf  string
	procs []*child // in start order
}

// Name is the server's name in ZFS2S3_SERVERS.
func (c *Ceph) Name() string { return "ceph" }

// Stop kills the daemons, newest first, and deletes the cluster's files.
func (c *Ceph) Stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop()
	}
	c.procs = nil
	os.RemoveAll(c.dir)
}

// cephConf is the whole cluster's configuration. radosgw needs the
// ms_*_client_mode lines even with auth none, or it loops on
// "get_initial_auth_request returned -13".
const cephConf = `[global]
fsid = {{fsid}}
mon host = v2:{{mon}}
mon initial members = a
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
ms_mon_client_mode = crc secure
ms_client_mode = crc secure
keyring = /dev/null
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
osd objectstore = memstore
memstore device bytes = 2147483648
run dir = {{dir}}/run
admin socket = {{dir}}/run/$name.asok
log file = {{dir}}/log/$name.log
pid file = {{dir}}/run/$name.pid
mon data = {{dir}}/mon/$id
osd data = {{dir}}/osd/$id

[client.rgw.a]
rgw frontends = beast endpoint={{rgw}}
rgw data = {{dir}}/rgw
`

// StartCeph brings the cluster up (about 15 seconds) from the Debian
// packages' binaries on PATH.
func StartCeph() (_ Server, err error) {
	for _, b := range []string{"monmaptool", "ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph"} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("ceph: %w (make test-compat installs Debian's %s)", err, strings.Join(CephPackages, " "))
		}
	}
	dir, err := os.MkdirTemp("", "zfs2s3-ceph-")
	if err != nil {
		return nil, err
	}
	mon, err := freeAddr()
	if err != nil {
		return nil, err
	}
	rgw, err := freeAddr()
	if err != nil {
		return nil, err
	}
	c := &Ceph{S3: newS3(rgw), dir: dir, conf: filepath.Join(dir, "ceph.conf")}
	defer func() {
		if err != nil {
			c.Stop()
			err = fmt.Errorf("ceph: %w", err)
		}
	}()
	for _, d := range []string{"run", "log", "mon/a", "osd/0", "rgw"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	fsid, osdUUID := uuid(), uuid()
	conf := strings.NewReplacer("{{fsid}}", fsid, "{{mon}}", mon, "{{rgw}}", rgw, "{{dir}}", dir).Replace(cephConf)
	if err := os.WriteFile(c.conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	monmap := filepath.Join(dir, "monmap")
	if _, err := c.run("monmaptool", "--create", "--addv", "a", "[v2:"+mon+"]", "--fsid", fsid, monmap); err != nil {
		return nil, err
	}
	if _, err := c.run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap); err != nil {
		return nil, err
	}
	if err := c.daemon("mon", "ceph-mon", "-i", "a"); err != nil {
		return nil, err
	}
	// The monitor answers once it has formed its quorum of one.
	id, err := c.run("ceph", "--connect-timeout", "30", "osd", "new", osdUUID)
	if err != nil {
		return nil, err
	}
	if _, err := c.run("ceph-osd", "-i", id, "--mkfs", "--osd-uuid", osdUUID); err != nil {
		return nil, err
	}
	if err := c.daemon("osd", "ceph-osd", "-i", id); err != nil {
		return nil, err
	}
	if err := c.daemon("rgw", "radosgw", "-n", "client.rgw.a"); err != nil {
		return nil, err
	}
	// radosgw-admin waits for the OSD and creates RGW's pools if needed.
	if _, err := c.run("radosgw-admin", "user", "create", "--uid", c.User, "--display-name", c.User,
		"--access-key", c.User, "--secret", c.Password); err != nil {
		return nil, err
	}
	if err := c.waitReady(c.procs[len(c.procs)-1], filepath.Join(dir, "log", "rgw.out"), 2*time.Minute); err != nil {
		return nil, err
	}
	return c, nil
}

// run runs a Ceph tool against the cluster and returns its trimmed stdout.
func (c *Ceph) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, append([]string{"-c", c.conf}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// daemon starts a Ceph daemon in the foreground, its output in log/NAME.out.
func (c *Ceph) daemon(name, bin string, args ...string) error {
	cmd := exec.Command(bin, append([]string{"-c", c.conf, "-f"}, args...)...)
	proc, err := startChild(cmd, filepath.Join(c.dir, "log", name+".out"))
	if err != nil {
		return err
	}
	c.procs = append(c.procs, proc)
	return nil
}

func uuid() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
