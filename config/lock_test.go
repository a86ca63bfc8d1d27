package config

import (
	"errors"
	"strings"
	"testing"
)

func TestParseLock(t *testing.T) {
	c, err := Parse([]byte("lock_days: 30\nlock_mode: compliance\n"), "c.yaml")
	if err != nil || c.Global.LockDays != 30 || c.Global.LockMode != "compliance" {
		t.Fatalf("Parse = %+v, %v; want lock_days 30, lock_mode compliance", c, err)
	}
	for _, tt := range []struct{ config, want string }{
		{"lock_days: -1\n", "c.yaml:1: lock_days: -1: want 0"},
		{"lock_days: a week\n", "c.yaml:1: lock_days: cannot unmarshal"},
		{"lock_mode: legal\n", "c.yaml:1: lock_mode: \"legal\": want governance"},
		{"lock_mode: GOVERNANCE\n", "want governance"},
	} {
		_, err := Parse([]byte(tt.config), "c.yaml")
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tt.config, err, tt.want)
		}
	}
}
