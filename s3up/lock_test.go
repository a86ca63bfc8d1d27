package s3up

import (
	"testing"
	"time"
)

func TestCheckLock(t *testing.T) {
	if l, err := CheckLock(0, "compliance"); l != nil || err != nil {
		t.Errorf("CheckLock(0) = %v, %v; want no lock", l, err)
	}
	if l, err := CheckLock(7, ""); err != nil || *l != (Lock{Mode: LockGovernance, Days: 7}) {
		t.Errorf("CheckLock(7, \"\") = %v, %v; want 7 days of governance", l, err)
	}
	for _, bad := range []struct {
		days int
		mode string
	}{{-1, "governance"}, {3, "Governance"}, {3, "legal-hold"}} {
		if _, err := CheckLock(bad.days, bad.mode); err == nil {
			t.Errorf("CheckLock(%d, %q) took it", bad.days, bad.mode)
		}
	}
}

func TestRetention(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	if got := (Lock{Days: 30}).Until(now.Add(500 * time.Millisecond)); !got.Equal(now.AddDate(0, 0, 30)) {
		t.Errorf("Until = %v, want 30 days later to the second", got)
	}
	past := Retention{Mode: LockGovernance, Until: now.Add(-time.Second)}
	future := Retention{Mode: LockCompliance, Until: now.Add(time.Hour)}
	if past.Active(now) || !future.Active(now) || (Retention{}).Active(now) || !(Retention{LegalHold: true}).Active(now) {
		t.Errorf("Active: past %v future %v none %v hold %v", past.Active(now), future.Active(now), (Retention{}).Active(now), (Retention{LegalHold: true}).Active(now))
	}
	if got := past.Later(future); got != future {
		t.Errorf("Later = %+v, want the later one %+v", got, future)
	}
	if got := future.Later(past).Later(Retention{LegalHold: true}); got.Until != future.Until || got.Mode != LockCompliance || !got.LegalHold {
		t.Errorf("Later = %+v, want compliance until %v with the legal hold", got, future.Until)
	}
}
