package main

import "testing"

// TestGrowthCountsNoDrop: a daemon that shrank while the idle tasks
// started adds nothing to their memory, each measure on its own; one that
// grew adds what it grew by. Run 39 had subtracted such drops.
func TestGrowthCountsNoDrop(t *testing.T) {
	for _, c := range []struct{ before, after, want memKiB }{
		{memKiB{1000, 500}, memKiB{1300, 600}, memKiB{300, 100}},
		{memKiB{28000, 9000}, memKiB{1000, 800}, memKiB{0, 0}},
		{memKiB{1000, 900}, memKiB{1200, 700}, memKiB{200, 0}},
	} {
		if got := growth(c.before, c.after); got != c.want {
			t.Errorf("growth(%v, %v) = %v, want %v", c.before, c.after, got, c.want)
		}
	}
}
