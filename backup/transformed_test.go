package backup

import (
	"errors"
	"strings"
	"testing"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/transform"
)

// TestPlanSegmentSize: the asked-for size, grown so that a huge stream
// stays within the objects an edge may have.
func TestPlanSegmentSize(t *testing.T) {
	for _, tc := range []struct{ asked, est, want int64 }{
		{0, 1 << 30, transform.DefaultSegmentSize},
		{1 << 20, 1 << 30, 1 << 20},
		{1 << 20, 100 << 30, 16 << 20}, // 150 GiB / 9,999 rounded up to a MiB
		{0, 1 << 50, transform.MaxSegmentSize},
	} {
		got := planSegmentSize(tc.asked, tc.est)
		if got != tc.want {
			t.Errorf("planSegmentSize(%d, %d) = %d, want %d", tc.asked, tc.est, got, tc.want)
		}
		if err := transform.CheckSegmentSize(got); err != nil {
			t.Errorf("planSegmentSize(%d, %d) = %d: %v", tc.asked, tc.est, got, err)
		}
		if tc.est/got >= ledger.MaxSegments && got < transform.MaxSegmentSize {
			t.Errorf("planSegmentSize(%d, %d) = %d makes %d objects", tc.asked, tc.est, got, tc.est/got)
		}
	}
}

// TestCheckBaseFlags: an incremental keeps the large-blocks, embedded and
// raw of the edges into its base; compressed may change.
func TestCheckBaseFlags(t *testing.T) {
	a := ledger.Snapshot{Name: "tank@a", GUID: 1}
	b := ledger.Snapshot{Name: "tank@b", GUID: 2}
	for _, tc := range []struct {
		base, next string
		ok         bool
	}{
		{"", "", true},
		{"large-blocks,embedded", "large-blocks,embedded", true},
		{"large-blocks", "compressed,large-blocks", true},
		{"large-blocks", "", false},
		{"", "embedded", false},
		{"raw", "", false},
	} {
		l := &ledger.Ledger{Edges: []ledger.Edge{{Target: a, SendFlags: tc.base}}}
		err := checkBaseFlags(l, ledger.Edge{Target: b, Base: &a, SendFlags: tc.next})
		if (err == nil) != tc.ok || err != nil && (!errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--send-flags")) {
			t.Errorf("base %q, incremental %q: %v", tc.base, tc.next, err)
		}
	}
}

// TestShellQuote: keys and paths with quotes and spaces reach aws and age
// as one word each.
func TestShellQuote(t *testing.T) {
	if got := shellQuote("s3://b/tank/my data/it's@1.zfs"); got != `'s3://b/tank/my data/it'\''s@1.zfs'` {
		t.Errorf("shellQuote = %s", got)
	}
}
