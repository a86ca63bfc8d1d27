package main

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/zfs2s3/zfs2s3/backup"
	"github.com/zfs2s3/zfs2s3/ledger"
)

func TestParsePartSize(t *testing.T) {
	for in, want := range map[string]int64{
		"": 0, "8MiB": 8 << 20, "64M": 64 << 20, "64MB": 64 << 20, "1G": 1 << 30, "1GiB": 1 << 30,
		"16mib": 16 << 20, "5242880": 5 << 20, "5120K": 5 << 20,
	} {
		if got, err := parsePartSize(in); err != nil || got != want {
			t.Errorf("parsePartSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"lots", "4MiB", "6GiB", "-8M", "8T", "M", "5121M",
		"17592186044432M", "8796093022224G", "9223372036854775807K", "9223372036854775807"} { // 17592186044432M wrapped to 16 MiB
		if _, err := parsePartSize(in); err == nil {
			t.Errorf("parsePartSize(%q) accepted", in)
		}
	}
}

func TestReorderArgsPutsFlagsFirst(t *testing.T) {
	app := newApp()
	tests := []struct{ in, want []string }{
		{[]string{"zfs2s3", "upload", "tank/data@b", "-i", "tank/data@a"},
			[]string{"zfs2s3", "upload", "-i", "tank/data@a", "--", "tank/data@b"}},
		{[]string{"zfs2s3", "upload", "--verbose", "tank/my data@b", "--part-size=8M"},
			[]string{"zfs2s3", "upload", "--verbose", "--part-size=8M", "--", "tank/my data@b"}},
		{[]string{"zfs2s3", "remove", "t@x", "--guid", "42"},
			[]string{"zfs2s3", "remove", "--guid", "42", "--", "t@x"}},
		{[]string{"zfs2s3", "--help"}, []string{"zfs2s3", "--help"}},
	}
	for _, tt := range tests {
		if d := cmp.Diff(tt.want, reorderArgs(app, tt.in)); d != "" {
			t.Errorf("reorderArgs(%q) (-want +got):\n%s", tt.in, d)
		}
	}
}

func TestExitCodes(t *testing.T) {
	for err, want := range map[error]int{
		&ledger.RefusedError{Edge: "x"}:            exitRefused,
		fmt.Errorf("wrapped: %w", backup.ErrUsage): exitUsage,
		usageErr{fmt.Errorf("no bucket")}:          exitUsage,
		fmt.Errorf("network down"):                 exitFailed,
	} {
		if got := exitCode(err); got != want {
			t.Errorf("exitCode(%v) = %d, want %d", err, got, want)
		}
	}
}

func TestHoistCommonFlags(t *testing.T) {
	app := newApp()
	tests := []struct{ in, want []string }{
		{[]string{"zfs2s3", "-v", "upload", "t@b"}, []string{"zfs2s3", "upload", "-v", "t@b"}},
		{[]string{"zfs2s3", "--bucket", "b", "-q", "--prefix=h1", "remove", "t@b", "-i", "t@a"},
			[]string{"zfs2s3", "remove", "--bucket", "b", "-q", "--prefix=h1", "t@b", "-i", "t@a"}},
		{[]string{"zfs2s3", "-v", "ledger", "rebuild", "--prefix", "x"},
			[]string{"zfs2s3", "ledger", "rebuild", "-v", "--prefix", "x"}},
		// Left alone: nothing before the command, app flags, flags only
		// commands have, and a value with no command after it.
		{[]string{"zfs2s3", "upload", "-v", "t@b"}, []string{"zfs2s3", "upload", "-v", "t@b"}},
		{[]string{"zfs2s3", "--help"}, []string{"zfs2s3", "--help"}},
		{[]string{"zfs2s3", "-i", "t@a", "upload", "t@b"}, []string{"zfs2s3", "-i", "t@a", "upload", "t@b"}},
		{[]string{"zfs2s3", "--bucket", "b"}, []string{"zfs2s3", "--bucket", "b"}},
		{[]string{"zfs2s3", "-v", "--help"}, []string{"zfs2s3", "-v", "--help"}},
	}
	for _, tt := range tests {
		if d := cmp.Diff(tt.want, hoistCommonFlags(app, tt.in)); d != "" {
			t.Errorf("hoistCommonFlags(%q) (-want +got):\n%s", tt.in, d)
		}
	}
}

func TestInterruptedMessage(t *testing.T) {
	for in, want := range map[string]string{
		"upload of t@a (full) interrupted: part 3: context canceled; run zfs2s3 resume_upload to continue": "upload of t@a (full) interrupted: part 3; run zfs2s3 resume_upload to continue",
		"wait for the ledger lock: context canceled":                                                       "interrupted: wait for the ledger lock",
		"context canceled":                      "interrupted",
		"zfs get -H -p ... t@a: signal: killed": "interrupted: zfs get -H -p ... t@a: signal: killed",
	} {
		if got := interruptedMessage(in); got != want {
			t.Errorf("interruptedMessage(%q) = %q, want %q", in, got, want)
		}
	}
}
