package backup

import (
	"testing"

	"github.com/zfs2s3/zfs2s3/s3up"
)

func TestPlanPartSize(t *testing.T) {
	for est, want := range map[int64]int64{
		0:         DefaultPartSize,
		1 << 30:   DefaultPartSize,
		100 << 30: 18 << 20, // 150 GiB / 9000 parts, rounded up to a MiB
		5 << 40:   874 << 20,
		80 << 40:  s3up.MaxPartSize,
	} {
		got := PlanPartSize(est)
		if got != want {
			t.Errorf("PlanPartSize(%d) = %d MiB, want %d MiB", est, got>>20, want>>20)
		}
		if est > 0 && got < s3up.MaxPartSize && est*3/2 > got*9000 {
			t.Errorf("PlanPartSize(%d) = %d leaves no room to grow", est, got)
		}
	}
}
