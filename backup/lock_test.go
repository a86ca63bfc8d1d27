package backup

import (
	"strings"
	"testing"
	"time"

	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
)

// TestSkipLocked: a locked edge stays, and so does every edge the ledger's
// rule needs for it; the rest of the plan goes as planned.
func TestSkipLocked(t *testing.T) {
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	snap := func(n int) ledger.Snapshot {
		return ledger.Snapshot{Name: "tank/a@" + string(rune('a'+n)), GUID: uint64(100 + n)}
	}
	edge := func(base, target int) ledger.Edge {
		e := ledger.Edge{Target: snap(target)}
		if base >= 0 {
			b := snap(base)
			e.Base = &b
		}
		e.Key = ledger.ObjectKey("", e.Target, e.Base)
		return e
	}
	// a (full), a->b, b->c, c->d, d->e, and the bypass e (full) that
	// prune uploaded: the plan removes the chain, dependents first.
	edges := []ledger.Edge{edge(-1, 0), edge(0, 1), edge(1, 2), edge(2, 3), edge(3, 4), edge(-1, 4)}
	plan := []ledger.Edge{edge(3, 4), edge(2, 3), edge(1, 2), edge(0, 1), edge(-1, 0)}
	until := now.AddDate(0, 0, 30)
	lock := s3up.Retention{Mode: s3up.LockGovernance, Until: until}
	names := func(es []ledger.Edge) string {
		var s []string
		for _, e := range es {
			s = append(s, e.String())
		}
		return strings.Join(s, ", ")
	}
	for _, tt := range []struct {
		name     string
		locked   []ledger.Edge
		gone     string
		keptWhy  []string
		keptLock int // how many kept entries carry a lock of their own
	}{
		{"nothing locked", nil, names(plan), nil, 0},
		// d->e needs d restorable: the whole chain stays.
		{"the dependent end", []ledger.Edge{edge(3, 4)}, "", []string{"locked until 2027-01-01 (governance)",
			"needed by tank/a@d -> tank/a@e", "needed by tank/a@c -> tank/a@d", "needed by tank/a@b -> tank/a@c", "needed by tank/a@a -> tank/a@b"}, 1},
		{"in the middle", []ledger.Edge{edge(2, 3)}, names(plan[:1]), []string{
			"locked until 2027-01-01 (governance)", "needed by tank/a@c -> tank/a@d", "needed by tank/a@b -> tank/a@c", "needed by tank/a@a -> tank/a@b"}, 1},
		{"the full", []ledger.Edge{edge(-1, 0)}, names(plan[:4]), []string{"locked until 2027-01-01 (governance)"}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			locked := map[ledger.ID]s3up.Retention{}
			for _, e := range tt.locked {
				locked[e.ID()] = lock
			}
			gone, kept := skipLocked(edges, plan, locked, now)
			if got := names(gone); got != tt.gone {
				t.Errorf("gone: %s\nwant: %s", got, tt.gone)
			}
			if len(kept) != len(tt.keptWhy) {
				t.Fatalf("kept %+v, want %d", kept, len(tt.keptWhy))
			}
			withLock := 0
			for i, k := range kept {
				if !strings.HasPrefix(k.Why, tt.keptWhy[i]) {
					t.Errorf("kept %s: why %q, want %q", k.Edge, k.Why, tt.keptWhy[i])
				}
				if k.Lock != nil {
					withLock++
					if !k.Lock.Until.Equal(until) || k.Lock.Mode != "governance" || !k.Lock.Active {
						t.Errorf("kept %s: lock %+v", k.Edge, k.Lock)
					}
				}
			}
			if withLock != tt.keptLock {
				t.Errorf("%d kept entries carry a lock, want %d", withLock, tt.keptLock)
			}
			// What goes passes the guard in order, as Remove asks it.
			l := &ledger.Ledger{Edges: append([]ledger.Edge(nil), edges...)}
			for _, e := range gone {
				if err := l.CheckRemove(e.ID(), nil); err != nil {
					t.Fatalf("removing %s: %v", e, err)
				}
				l.Drop(e.ID())
			}
		})
	}
}

func TestLockWords(t *testing.T) {
	for _, tt := range []struct {
		r    s3up.Retention
		want string
	}{
		{s3up.Retention{Mode: "governance", Until: time.Date(2027, 1, 5, 0, 0, 0, 0, time.UTC)}, "locked until 2027-01-05 (governance)"},
		{s3up.Retention{Mode: "compliance", Until: time.Date(2027, 1, 5, 13, 4, 5, 0, time.UTC)}, "locked until 2027-01-05 13:04:05Z (compliance)"},
		{s3up.Retention{LegalHold: true}, "under a legal hold (until it is lifted)"},
	} {
		if got := lockPhrase(tt.r); got != tt.want {
			t.Errorf("lockPhrase(%+v) = %q, want %q", tt.r, got, tt.want)
		}
	}
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	if n := edgeLockOf(s3up.Retention{Mode: "governance", Until: now.Add(-time.Hour)}, now).Note(); n != " (lock ended 2026-12-01 23:00:00Z)" {
		t.Errorf("Note of an ended lock = %q", n)
	}
	if n := edgeLockOf(s3up.Retention{}, now).Note(); n != "" {
		t.Errorf("Note without a lock = %q, want nothing", n)
	}
}
