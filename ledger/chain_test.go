package ledger

import (
	"fmt"
	"testing"
)

func sized(e Edge, n int64) Edge { e.StoredBytes = n; return e }

func TestChainIsCheapest(t *testing.T) {
	l := New("b", "")
	for _, e := range []Edge{
		sized(full(1), 100), sized(incr(1, 2), 10), sized(incr(2, 3), 10), sized(incr(3, 4), 10),
		sized(incr(1, 4), 25), // bypass: cheaper than 1->2->3->4
		sized(full(4), 500),   // a full of 4: dearer than full 1 + bypass
		sized(incr(4, 5), 10),
	} {
		if err := l.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		from, to uint64
		want     string
	}{
		{0, 5, "[tank/data@s1 (full) tank/data@s1 -> tank/data@s4 tank/data@s4 -> tank/data@s5]"},
		{0, 3, "[tank/data@s1 (full) tank/data@s1 -> tank/data@s2 tank/data@s2 -> tank/data@s3]"},
		{2, 5, "[tank/data@s2 -> tank/data@s3 tank/data@s3 -> tank/data@s4 tank/data@s4 -> tank/data@s5]"},
		{4, 5, "[tank/data@s4 -> tank/data@s5]"},
	}
	for _, tt := range tests {
		chain, err := l.Chain(tt.from, tt.to)
		if err != nil {
			t.Fatalf("Chain(%d, %d): %v", tt.from, tt.to, err)
		}
		if got := fmt.Sprint(chain); got != tt.want {
			t.Errorf("Chain(%d, %d) = %s, want %s", tt.from, tt.to, got, tt.want)
		}
	}
	if _, err := l.Chain(5, 3); err == nil {
		t.Error("Chain from a newer snapshot back to an older one succeeded")
	}
	l.MarkRemoving(incr(1, 4).ID())
	if chain, _ := l.Chain(0, 5); len(chain) != 5 {
		t.Errorf("Chain used an edge being removed: %v", chain)
	}
}
