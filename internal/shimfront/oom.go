package shimfront

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/moby/sys/userns"
)

// AdjustOOMScore gives the process pid (a new shim) the OOM score
// adjustment of this process's parent (containerd) plus one, within the
// kernel's -1000..1000, as shim.AdjustOOMScore does: the shim goes
// before containerd. Where the kernel refuses and this process may not
// lower scores anyway (not root, or in a user namespace), it leaves it.
func AdjustOOMScore(pid int) error {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", os.Getppid()))
	if err != nil {
		return fmt.Errorf("get parent OOM score: %w", err)
	}
	score, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return fmt.Errorf("get parent OOM score: %w", err)
	}
	score = min(max(score+1, -1000), 1000)
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("set shim OOM score: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(strconv.Itoa(score)); err != nil {
		if os.IsPermission(err) && (os.Geteuid() != 0 || userns.RunningInUserNS()) {
			return nil
		}
		return fmt.Errorf("set shim OOM score: %w", err)
	}
	return nil
}
