package task

import "testing"

func TestOutputKey(t *testing.T) {
	a, b := NewOutputKey(), NewOutputKey()
	if !IsOutputKey(a) || a == b || a == PreviewOutputKey || !IsOutputKey(PreviewOutputKey) {
		t.Errorf("keys %q %q", a, b)
	}
	for _, k := range []string{"", "0", a[:31], a + "0", "g" + a[1:], "A" + a[1:]} {
		if IsOutputKey(k) {
			t.Errorf("IsOutputKey(%q) = true", k)
		}
	}
	if got := OutputKeyOf("/s/tasks", "j", "/s/tasks/j/output/"+a); got != a {
		t.Errorf("OutputKeyOf = %q", got)
	}
	for _, dir := range []string{"/s/tasks/j/output", "/s/tasks/k/output/" + a, "/s/tasks/j/output/" + a + "/x", "/s/tasks/j/other/" + a} {
		if got := OutputKeyOf("/s/tasks", "j", dir); got != "" {
			t.Errorf("OutputKeyOf(%q) = %q, want none", dir, got)
		}
	}
}
