package zfs

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseGet(t *testing.T) {
	out := "tank/my data@a\tguid\t9759326680514287802\ntank/my data@a\ttype\tsnapshot\n"
	got, err := parseGet([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"guid": "9759326680514287802", "type": "snapshot"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("parseGet (-want +got):\n%s", d)
	}
	if _, err := parseGet([]byte("a\tb\n")); err == nil {
		t.Error("parseGet accepted a line with two fields")
	}
}

func TestParseEstimate(t *testing.T) {
	out := "full\ttank/a@b\t1048576\nsize\t1049000\n"
	n, ok := parseEstimate([]byte(out))
	if !ok || n != 1049000 {
		t.Errorf("parseEstimate = %d, %v; want 1049000, true", n, ok)
	}
	if _, ok := parseEstimate([]byte("invalid option 'n'\n")); ok {
		t.Error("parseEstimate found a size in zfs-fuse's usage text")
	}
}

func TestClassify(t *testing.T) {
	exit := &exec.ExitError{}
	for stderr, want := range map[string]error{
		"cannot open 'tank/nope': dataset does not exist":                                                     ErrNotExist,
		"cannot open 'tank/x': permission denied":                                                             ErrPermission,
		"cannot send 'tank/x@a': insufficient privileges":                                                     ErrPermission,
		"cannot send 'tank/x@a': I/O error":                                                                   exit,
		"cannot create snapshot 'tank/x@a': dataset already exists":                                           ErrExist,
		"cannot receive new filesystem stream: destination 'tank/r' exists\nmust specify -F to overwrite it":  ErrExist,
		"cannot receive incremental stream: destination tank/r has been modified\nsince most recent snapshot": exit,
	} {
		if got := classify(stderr, exit); !errors.Is(got, want) {
			t.Errorf("classify(%q) = %v, want %v", stderr, got, want)
		}
	}
}

func TestCheckSnapshotName(t *testing.T) {
	long := "tank/" + strings.Repeat("x", MaxNameLen-len("tank/@a")) + "@a"
	for _, tt := range []struct {
		name string
		want string // "" when valid, else part of the error
	}{
		{"tank/data@a", ""},
		{"tank/my data@2026 01", ""},
		{"T_1-a.b:c/d@x.y_z-1:2", ""},
		{"tank@a", ""},
		{long, ""},
		{long + "b", "at most 255"},
		{"tank/" + strings.Repeat("x", 300) + "@a", "at most 255"},
		{"", "empty"},
		{"tank/data", "want DATASET@SNAPSHOT"},
		{"tank/data@", "empty component"},
		{"@a", "empty component"},
		{"tank/data@a@b", "more than one '@'"},
		{"tank/data@a/b", "after '@'"},
		{"tank//data@a", "empty component"},
		{"tank/data/@a", "empty component"},
		{"/tank/data@a", "begins with '/'"},
		{"tank/./data@a", `"."`},
		{"tank/../data@a", `".."`},
		{"tank/data@..", `".."`},
		{"-tank@a", "begins with '-'"},
		{"--help@a", "begins with '-'"},
		{"1tank/data@a", "pool name begins with a letter"},
		{"tank/dätä@ü", `'ä'`},
		{"tank/data@$(id)", `'$'`},
		{"tank/data@a\tb", `'\t'`},
		{"tank/data@a\nb", `'\n'`},
		{"tank/data@a\x00", `'\x00'`},
		{"tank/data@a%recv", `'%'`},
		{"tank/data#bm", `'#'`},
		{"tank/data@a;rm", `';'`},
	} {
		err := CheckSnapshotName(tt.name)
		if tt.want == "" && err != nil {
			t.Errorf("CheckSnapshotName(%q) = %v, want it valid", tt.name, err)
		}
		if tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("CheckSnapshotName(%q) = %v, want an error containing %q", tt.name, err, tt.want)
		}
		if err != nil && (strings.Contains(err.Error(), "\n") || len(err.Error()) > 250) {
			t.Errorf("CheckSnapshotName(%q): error %q is not one short line", tt.name, err)
		}
	}
}

func TestCheckDatasetName(t *testing.T) {
	for _, tt := range []struct {
		name string
		want string
	}{
		{"tank", ""},
		{"tank/restored", ""},
		{"tank/my data/x:y", ""},
		{"tank/" + strings.Repeat("x", MaxNameLen-5), ""},
		{"tank/" + strings.Repeat("x", MaxNameLen-4), "at most 255"},
		{"tank/x@snap", "'@' begins a snapshot name"},
		{"tank/x@", "'@' begins a snapshot name"},
		{"", "empty"},
		{"tank/", "empty component"},
		{"tank//x", "empty component"},
		{"/tank/x", "begins with '/'"},
		{"-F", "begins with '-'"},
		{"tank/..", `".."`},
		{".", `"."`},
		{"9tank", "pool name begins with a letter"},
		{"tank/typo\u00e9", `'é'`},
		{"tank/$(id)", `'$'`},
		{"tank/a`id`", "'`'"},
	} {
		err := CheckDatasetName(tt.name)
		if tt.want == "" && err != nil {
			t.Errorf("CheckDatasetName(%q) = %v, want it valid", tt.name, err)
		}
		if tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("CheckDatasetName(%q) = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestCreateSnapshotArgs(t *testing.T) {
	if d := cmp.Diff([]string{"snapshot", "-r", "tank/db@zfs2s3-1"}, CreateSnapshotArgs("tank/db@zfs2s3-1", true)); d != "" {
		t.Errorf("recursive (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"snapshot", "tank/my db@x"}, CreateSnapshotArgs("tank/my db@x", false)); d != "" {
		t.Errorf("one dataset (-want +got):\n%s", d)
	}
	// A name zfs would read as an option never reaches it.
	if err := (Runner{Cmd: "/nonexistent/zfs"}).CreateSnapshot(context.Background(), "-r@x", false); err == nil || !strings.Contains(err.Error(), "not a snapshot name") {
		t.Errorf("CreateSnapshot(-r@x) = %v", err)
	}
}

// TestParseSnapshots: of zfs get -d 1's lines, only the dataset's own
// snapshots count, oldest (by createtxg) first; the dataset itself must
// be there, else it does not exist.
func TestParseSnapshots(t *testing.T) {
	out := "tank/a b\ttype\tfilesystem\ntank/a b\tguid\t9\n" +
		"tank/a b@y\ttype\tsnapshot\ntank/a b@y\tguid\t2\ntank/a b@y\tcreatetxg\t20\ntank/a b@y\tcreation\t1700000000\n" +
		"tank/a b/child\ttype\tfilesystem\ntank/a b/child\tguid\t7\n" +
		"tank/a b@x\ttype\tsnapshot\ntank/a b@x\tguid\t1\ntank/a b@x\tcreatetxg\t10\ntank/a b@x\tcreation\t1600000000\n"
	got, err := parseSnapshots([]byte(out), "tank/a b")
	want := []Snapshot{
		{Name: "tank/a b@x", GUID: 1, CreateTXG: 10, Creation: time.Unix(1600000000, 0).UTC()},
		{Name: "tank/a b@y", GUID: 2, CreateTXG: 20, Creation: time.Unix(1700000000, 0).UTC()},
	}
	if d := cmp.Diff(want, got); d != "" || err != nil {
		t.Errorf("parseSnapshots (-want +got, err %v):\n%s", err, d)
	}
	if got, err := parseSnapshots([]byte("tank/a\ttype\tfilesystem\n"), "tank/a"); err != nil || got != nil {
		t.Errorf("a dataset without snapshots: %v, %v", got, err)
	}
	if _, err := parseSnapshots([]byte("tank/a b/child\ttype\tfilesystem\n"), "tank/a b"); !errors.Is(err, ErrNotExist) {
		t.Errorf("output without the dataset: %v, want ErrNotExist", err)
	}
}

// TestGroupSnapshots: one zfs get over several datasets gives each its own
// snapshots, oldest first, and tells which datasets were listed, so that a
// dataset zfs did not list is reported missing.
func TestGroupSnapshots(t *testing.T) {
	out := "tank/a\ttype\tfilesystem\ntank/a\tguid\t9\n" +
		"tank/a@y\ttype\tsnapshot\ntank/a@y\tguid\t2\ntank/a@y\tcreatetxg\t20\ntank/a@y\tcreation\t1700000000\n" +
		"tank/a/b\ttype\tfilesystem\n" +
		"tank/a/b@z\ttype\tsnapshot\ntank/a/b@z\tguid\t3\ntank/a/b@z\tcreatetxg\t15\n" +
		"tank/a@x\ttype\tsnapshot\ntank/a@x\tguid\t1\ntank/a@x\tcreatetxg\t10\n" +
		"tank/c\ttype\tvolume\n"
	snaps, found := groupSnapshots([]byte(out))
	want := map[string][]Snapshot{
		"tank/a":   {{Name: "tank/a@x", GUID: 1, CreateTXG: 10}, {Name: "tank/a@y", GUID: 2, CreateTXG: 20, Creation: time.Unix(1700000000, 0).UTC()}},
		"tank/a/b": {{Name: "tank/a/b@z", GUID: 3, CreateTXG: 15}},
	}
	if d := cmp.Diff(want, snaps); d != "" {
		t.Errorf("snapshots (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]bool{"tank/a": true, "tank/a/b": true, "tank/c": true}, found); d != "" {
		t.Errorf("found (-want +got):\n%s", d)
	}
}
