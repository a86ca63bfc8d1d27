package ledger

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

func snap(n uint64) Snapshot { return Snapshot{Name: fmt.Sprintf("tank/data@s%d", n), GUID: n} }

func full(t uint64) Edge { return stored(Edge{Target: snap(t)}) }

func incr(b, t uint64) Edge {
	s := snap(b)
	return stored(Edge{Target: snap(t), Base: &s})
}

// stored completes e as an upload would: its key, sizes and digest.
func stored(e Edge) Edge {
	e.Key = ObjectKey("", e.Target, e.Base)
	e.StreamBytes, e.StoredBytes = 100, 100
	e.SHA256 = fmt.Sprintf("%064x", e.Target.GUID)
	return e
}

// chain builds the ledger A(1) full, 1->2, 2->3, 3->4 plus extra edges.
func chain(t *testing.T, extra ...Edge) *Ledger {
	t.Helper()
	l := New("b", "")
	for _, e := range append([]Edge{full(1), incr(1, 2), incr(2, 3), incr(3, 4)}, extra...) {
		if err := l.Add(e); err != nil {
			t.Fatalf("Add(%s): %v", e, err)
		}
	}
	return l
}

func TestCheckAdd(t *testing.T) {
	tests := []struct {
		name    string
		edge    Edge
		refused string // substring of the refusal; "" means accepted
	}{
		{"full of a new snapshot", full(9), ""},
		{"incremental on stored base", incr(4, 5), ""},
		{"bypass over stored chain", incr(1, 4), ""},
		{"incremental on unstored base", incr(7, 8), "is not stored and restorable"},
		{"same edge again", incr(2, 3), "already stored"},
		{"full again", full(1), "already stored"},
		{"base equals target", incr(3, 3), "same snapshot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := chain(t)
			err := l.CheckAdd(tt.edge)
			if tt.refused == "" {
				if err != nil {
					t.Fatalf("CheckAdd(%s) = %v, want accepted", tt.edge, err)
				}
				return
			}
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.refused) {
				t.Fatalf("CheckAdd(%s) = %v, want refusal containing %q", tt.edge, err, tt.refused)
			}
		})
	}
}

func TestCheckAddBaseOnlyReachableThroughRemovingEdge(t *testing.T) {
	l := chain(t)
	l.MarkRemoving(incr(1, 2).ID())
	if err := l.CheckAdd(incr(4, 5)); !errors.Is(err, ErrRefused) {
		t.Errorf("CheckAdd on a chain being removed = %v, want refusal", err)
	}
}

func TestCheckRemove(t *testing.T) {
	tests := []struct {
		name    string
		extra   []Edge
		remove  Edge
		pending []Edge
		blocked []string // edges named in the refusal; nil means allowed
	}{
		{name: "tip of the chain", remove: incr(3, 4)},
		{name: "middle of the chain", remove: incr(2, 3),
			blocked: []string{"tank/data@s3 -> tank/data@s4"}},
		{name: "full under a chain", remove: full(1),
			blocked: []string{"tank/data@s1 -> tank/data@s2", "tank/data@s2 -> tank/data@s3", "tank/data@s3 -> tank/data@s4"}},
		{name: "chain continues: middle link refused", extra: []Edge{incr(4, 5)}, remove: incr(3, 4),
			blocked: []string{"tank/data@s4 -> tank/data@s5"}},
		{name: "chain continues: bypass makes the link removable", extra: []Edge{incr(4, 5), incr(1, 4)}, remove: incr(3, 4)},
		{name: "bypassed link still needed by the next bypassed link", extra: []Edge{incr(1, 4)}, remove: incr(2, 3),
			blocked: []string{"tank/data@s3 -> tank/data@s4"}},
		{name: "bypass does not free its own base", extra: []Edge{incr(1, 4)}, remove: full(1),
			blocked: []string{"tank/data@s1 -> tank/data@s2", "tank/data@s2 -> tank/data@s3", "tank/data@s3 -> tank/data@s4", "tank/data@s1 -> tank/data@s4"}},
		{name: "second full frees the first", extra: []Edge{full(2)}, remove: full(1),
			blocked: []string{"tank/data@s1 -> tank/data@s2"}},
		{name: "pending upload on the tip blocks it", remove: incr(3, 4),
			pending: []Edge{incr(4, 5)}, blocked: []string{"pending upload tank/data@s4 -> tank/data@s5"}},
		{name: "pending upload elsewhere does not block", remove: incr(3, 4), pending: []Edge{incr(9, 10)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := chain(t, tt.extra...)
			err := l.CheckRemove(tt.remove.ID(), tt.pending)
			if tt.blocked == nil {
				if err != nil {
					t.Fatalf("CheckRemove(%s) = %v, want allowed", tt.remove, err)
				}
				return
			}
			var re *RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("CheckRemove(%s) = %v, want *RefusedError", tt.remove, err)
			}
			if fmt.Sprint(re.Blocked) != fmt.Sprint(tt.blocked) {
				t.Errorf("blocked = %v, want %v", re.Blocked, tt.blocked)
			}
		})
	}
}

func TestFind(t *testing.T) {
	l := chain(t)
	recreated := Edge{Target: Snapshot{Name: "tank/data@s4", GUID: 44}, Base: &Snapshot{Name: "tank/data@s3", GUID: 3}, Key: "k"}
	if err := l.Add(recreated); err != nil {
		t.Fatal(err)
	}
	if e, err := l.Find("tank/data@s2", "tank/data@s1", 0, 0); err != nil || e.ID() != incr(1, 2).ID() {
		t.Errorf("Find(s2 -i s1) = %v, %v", e, err)
	}
	if e, err := l.Find("tank/data@s1", "", 0, 0); err != nil || !e.IsFull() {
		t.Errorf("Find(s1 full) = %v, %v", e, err)
	}
	if _, err := l.Find("tank/data@s4", "tank/data@s3", 0, 0); err == nil || !strings.Contains(err.Error(), "guid 44") {
		t.Errorf("ambiguous Find = %v, want an error listing guid 44", err)
	}
	if e, err := l.Find("tank/data@s4", "tank/data@s3", 44, 0); err != nil || e.Target.GUID != 44 {
		t.Errorf("Find with --guid = %v, %v", e, err)
	}
	var nf *NotFoundError
	if _, err := l.Find("tank/data@s3", "", 0, 0); !errors.As(err, &nf) || len(nf.Stored) != 1 {
		t.Errorf("Find(s3 full) = %v, want NotFoundError naming s2 -> s3", err)
	}
}

// oracle computes restorability by fixed point, independently of the graph
// library: a snapshot is restorable if a live edge reaches it from a full
// stream or from a restorable snapshot.
func oracle(edges []Edge) map[uint64]bool {
	ok := map[uint64]bool{0: true}
	for changed := true; changed; {
		changed = false
		for _, e := range edges {
			if !e.Removing && ok[e.ID().BaseGUID] && !ok[e.Target.GUID] {
				ok[e.Target.GUID], changed = true, true
			}
		}
	}
	return ok
}

// TestRuleProperties generates random histories of snapshots with full,
// incremental and bypass uploads, then random removals, and checks that an
// accepted removal never leaves a remaining edge without a restorable chain
// (an edge is restorable when its target can be rebuilt through it, i.e. its
// base is restorable), and that a refused one would have.
func TestRuleProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.Uint64Range(2, 12).Draw(t, "snapshots")
		l := New("b", "")
		for _, op := range rapid.SliceOfN(rapid.Uint64Range(0, n*n), 1, 40).Draw(t, "uploads") {
			b, tg := op/(n+1), op%(n+1)+1 // b == 0: full stream
			if b >= tg {
				continue // zfs only sends from an older base
			}
			e := full(tg)
			if b > 0 {
				e = incr(b, tg)
			}
			_, dup := l.Get(e.ID())
			wantOK := !dup && (e.Base == nil || oracle(l.Edges)[b])
			if err := l.Add(e); (err == nil) != wantOK {
				t.Fatalf("Add(%s) = %v, want accepted=%v", e, err, wantOK)
			}
		}
		for _, e := range l.Edges {
			if !oracle(l.Edges)[e.Target.GUID] {
				t.Fatalf("accepted uploads left %s unrestorable", e)
			}
		}
		for i := 0; i < 40 && len(l.Edges) > 0; i++ {
			victim := l.Edges[rapid.IntRange(0, len(l.Edges)-1).Draw(t, "victim")]
			err := l.CheckRemove(victim.ID(), nil)
			rest := make([]Edge, 0, len(l.Edges))
			for _, e := range l.Edges {
				if e.ID() != victim.ID() {
					rest = append(rest, e)
				}
			}
			before, after := oracle(l.Edges), oracle(rest)
			breaks := false
			for _, e := range rest {
				b := e.ID().BaseGUID
				breaks = breaks || (before[b] && !after[b])
			}
			if err == nil && breaks {
				t.Fatalf("removal of %s accepted but leaves an edge unrestorable", victim)
			}
			if err != nil && !breaks {
				t.Fatalf("removal of %s refused (%v) but would break nothing", victim, err)
			}
			if err == nil {
				l.Drop(victim.ID())
			}
		}
	})
}

func TestCheckRemoveRefusesAnEdgeStillBeingRecorded(t *testing.T) {
	l := chain(t)
	err := l.CheckRemove(incr(3, 4).ID(), []Edge{incr(3, 4)})
	if err == nil || !strings.Contains(err.Error(), "still being recorded") {
		t.Errorf("CheckRemove of an edge with a pending upload = %v, want a refusal", err)
	}
	if errors.Is(err, ErrRefused) {
		t.Error("a pending recording is a transient state, not a refusal by the rule (exit 1, not 3)")
	}
}

func TestBroken(t *testing.T) {
	tests := []struct {
		name     string
		extra    []Edge
		removing []Edge
		missing  []Edge
		want     []string // "edge: needs edge", in ledger order
	}{
		{name: "nothing missing"},
		{name: "tip missing", missing: []Edge{incr(3, 4)},
			want: []string{"tank/data@s3 -> tank/data@s4: needs tank/data@s3 -> tank/data@s4"}},
		{name: "middle missing breaks its dependents", missing: []Edge{incr(1, 2)},
			want: []string{
				"tank/data@s1 -> tank/data@s2: needs tank/data@s1 -> tank/data@s2",
				"tank/data@s2 -> tank/data@s3: needs tank/data@s1 -> tank/data@s2",
				"tank/data@s3 -> tank/data@s4: needs tank/data@s1 -> tank/data@s2"}},
		{name: "full missing breaks everything", missing: []Edge{full(1)},
			want: []string{
				"tank/data@s1 (full): needs tank/data@s1 (full)",
				"tank/data@s1 -> tank/data@s2: needs tank/data@s1 (full)",
				"tank/data@s2 -> tank/data@s3: needs tank/data@s1 (full)",
				"tank/data@s3 -> tank/data@s4: needs tank/data@s1 (full)"}},
		{name: "bypass keeps the dependents restorable", extra: []Edge{incr(1, 3)}, missing: []Edge{incr(1, 2)},
			want: []string{
				"tank/data@s1 -> tank/data@s2: needs tank/data@s1 -> tank/data@s2",
				"tank/data@s2 -> tank/data@s3: needs tank/data@s1 -> tank/data@s2"}},
		{name: "the first missing edge is named, not a later one", missing: []Edge{incr(1, 2), incr(3, 4)},
			want: []string{
				"tank/data@s1 -> tank/data@s2: needs tank/data@s1 -> tank/data@s2",
				"tank/data@s2 -> tank/data@s3: needs tank/data@s1 -> tank/data@s2",
				"tank/data@s3 -> tank/data@s4: needs tank/data@s3 -> tank/data@s4"}},
		{name: "other chains are untouched", extra: []Edge{full(9), incr(9, 10)}, missing: []Edge{full(9)},
			want: []string{
				"tank/data@s9 (full): needs tank/data@s9 (full)",
				"tank/data@s9 -> tank/data@s10: needs tank/data@s9 (full)"}},
		{name: "edge being removed is neither used nor listed", extra: []Edge{incr(1, 3)}, removing: []Edge{incr(1, 3)}, missing: []Edge{incr(1, 2)},
			want: []string{
				"tank/data@s1 -> tank/data@s2: needs tank/data@s1 -> tank/data@s2",
				"tank/data@s2 -> tank/data@s3: needs tank/data@s1 -> tank/data@s2",
				"tank/data@s3 -> tank/data@s4: needs tank/data@s1 -> tank/data@s2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := chain(t, tt.extra...)
			for _, e := range tt.removing {
				l.MarkRemoving(e.ID())
			}
			missing := map[ID]bool{}
			for _, e := range tt.missing {
				missing[e.ID()] = true
			}
			var got []string
			for _, b := range l.Broken(missing) {
				needs := "-"
				if b.Needs != nil {
					needs = b.Needs.String()
				}
				got = append(got, b.Edge.String()+": needs "+needs)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Broken =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestBrokenWithoutMissingIsUnrestorable(t *testing.T) {
	l := chain(t)
	l.Edges = append(l.Edges, incr(7, 8)) // base never stored: a damaged ledger
	got := l.Broken(nil)
	if len(got) != 1 || got[0].Edge.ID() != incr(7, 8).ID() || got[0].Needs != nil {
		t.Errorf("Broken(nil) = %+v, want only 7 -> 8 with no missing edge to blame", got)
	}
	if u := l.Unrestorable(); len(u) != 1 || u[0].ID() != incr(7, 8).ID() {
		t.Errorf("Unrestorable = %v", u)
	}
}
