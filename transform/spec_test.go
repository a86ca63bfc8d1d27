package transform

import (
	"strings"
	"testing"
)

func TestParseCompress(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Spec
		bad  string // part of the error message
	}{
		{in: "none", want: Spec{Compress: CompressNone}},
		{in: "zstd", want: Spec{Compress: CompressZstd, Level: 3}},
		{in: "zstd:1", want: Spec{Compress: CompressZstd, Level: 1}},
		{in: "zstd:19", want: Spec{Compress: CompressZstd, Level: 19}},
		{in: "zstd:0", bad: "from 1 to 19"},
		{in: "zstd:20", bad: "from 1 to 19"},
		{in: "zstd:-3", bad: "from 1 to 19"},
		{in: "zstd:", bad: "from 1 to 19"},
		{in: "zstd:fast", bad: "from 1 to 19"},
		{in: "none:3", bad: "none takes no level"},
		{in: "gzip", bad: "unknown compression"},
		{in: "", bad: "unknown compression"},
		{in: "ZSTD", bad: "unknown compression"},
	} {
		got, err := ParseCompress(tc.in)
		if tc.bad != "" {
			if err == nil || !strings.Contains(err.Error(), tc.bad) || !strings.Contains(err.Error(), "none, zstd") && !strings.Contains(err.Error(), "default") {
				t.Errorf("ParseCompress(%q) = %v, %v; want an error saying %q and what is accepted", tc.in, got, err, tc.bad)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseCompress(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestSpecString(t *testing.T) {
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{}, "none"},
		{Spec{Compress: CompressNone}, "none"},
		{Spec{Compress: CompressZstd, Level: 3}, "zstd:3"},
		{Spec{Compress: CompressNone, Encrypt: true}, "age"},
		{Spec{Compress: CompressZstd, Level: 19, Encrypt: true}, "zstd:19+age"},
	} {
		if got := tc.spec.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.spec, got, tc.want)
		}
		back, err := ParseSpec(tc.want)
		if err != nil || back.String() != tc.want || back.Segmented() != tc.spec.Segmented() {
			t.Errorf("ParseSpec(%q) = %+v, %v; does not round-trip", tc.want, back, err)
		}
	}
	if (Spec{}).Segmented() || (Spec{Compress: CompressNone}).Segmented() {
		t.Error("no transform must not be a segmented stream: edges without one keep the old layout")
	}
	// A ledger always records the level; a bare name or anything unknown
	// comes from another version and must not be guessed at.
	for _, bad := range []string{"zstd", "zstd+age", "gzip", "age+zstd:3", "zstd:3+gpg", "", "none+age"} {
		if s, err := ParseSpec(bad); err == nil {
			t.Errorf("ParseSpec(%q) = %+v, want an error", bad, s)
		}
	}
}
