package zfs

import (
	"errors"
	"os/exec"
	"testing"

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
		"cannot open 'tank/nope': dataset does not exist": ErrNotExist,
		"cannot open 'tank/x': permission denied":         ErrPermission,
		"cannot send 'tank/x@a': insufficient privileges": ErrPermission,
		"cannot send 'tank/x@a': I/O error":               exit,
	} {
		if got := classify(stderr, exit); !errors.Is(got, want) {
			t.Errorf("classify(%q) = %v, want %v", stderr, got, want)
		}
	}
}

func TestCheckSnapshotName(t *testing.T) {
	for name, ok := range map[string]bool{
		"tank/data@a":          true,
		"tank/my data@2026 01": true,
		"tank/dätä@ü":          true,
		"tank/data":            false,
		"tank/data@":           false,
		"@a":                   false,
		"tank/data@a@b":        false,
		"tank/data@a/b":        false,
		"tank//data@a":         false,
		"tank/data@a\tb":       false,
	} {
		if err := CheckSnapshotName(name); (err == nil) != ok {
			t.Errorf("CheckSnapshotName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}
