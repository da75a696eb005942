package containerd

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsn-run/nsn-run/internal/mountinfo"
)

// idmappedLayerMount names the idmapped mounts of image layers that
// containerd's mount package (doPrepareIDMappedOverlay) makes under the
// temp dir for a task's idmapped overlay, and removes as soon as the
// overlay is mounted. One that outlives that (a shim killed midway: an
// outside review interrupted run during the create and left 4 in about
// 100 tries; or an unmount that stayed busy) pins the image's snapshot
// until reboot.
var idmappedLayerMount = regexp.MustCompile(`^` + regexp.QuoteMeta(filepath.Join(os.TempDir(), "ovl-idmapped")) + `[0-9]+$`)

// leakedMountAge is how long gc must have seen such a mount before it
// counts as leaked: its legitimate life is a few milliseconds, while an
// overlay mount is made.
const leakedMountAge = time.Minute

// idmappedSeenFile, in ProbeDir, records when gc first saw each such
// mount: {"MOUNTID PATH": unix seconds}.
const idmappedSeenFile = "idmapped-layer-mounts.json"

// sweepIDMappedMounts detaches the idmapped layer mounts (idmapped by their
// mount options) that an earlier gc saw at least leakedMountAge ago (the
// same mount id at the same path, still the topmost mount there), and
// removes their directories; it records the others for the next gc. Without a ProbeDir nothing is remembered, and nothing is
// swept.
func (b *Backend) sweepIDMappedMounts() []string {
	if b.cfg.ProbeDir == "" {
		return nil
	}
	mounts, err := mountinfo.Read(mountinfo.Self)
	if err != nil {
		return nil
	}
	seenPath := filepath.Join(b.cfg.ProbeDir, idmappedSeenFile)
	seen := map[string]int64{}
	if data, err := os.ReadFile(seenPath); err == nil {
		_ = json.Unmarshal(data, &seen)
	}
	now := time.Now()
	still := map[string]int64{}
	var removed []string
	for _, m := range mounts {
		if !idmappedLayerMount.MatchString(m.MountPoint) || !slices.Contains(m.Options, "idmapped") {
			continue
		}
		key := strconv.Itoa(m.ID) + " " + m.MountPoint
		first, ok := seen[key]
		if !ok {
			first = now.Unix()
		}
		if !ok || now.Sub(time.Unix(first, 0)) < leakedMountAge {
			still[key] = first
			continue
		}
		if !topmostAt(m) {
			// Another mount was stacked on it since: not the one seen.
			still[key] = first
			continue
		}
		if err := unix.Unmount(m.MountPoint, unix.MNT_DETACH); err != nil {
			still[key] = first
			continue
		}
		_ = os.Remove(m.MountPoint)
		removed = append(removed, fmt.Sprintf("idmapped layer mount %s (%s)", m.MountPoint, m.Root))
	}
	if data, err := json.Marshal(still); err == nil {
		if err := os.MkdirAll(b.cfg.ProbeDir, 0o700); err == nil {
			_ = os.WriteFile(seenPath, data, 0o600)
		}
	}
	return removed
}

// topmostAt reports whether m is the mount its path resolves to now (the
// mount id statx gives for the path): a mount stacked on it since, or one
// made at the path after m went and its id was reused for another, is not
// m, and an unmount of the path would detach that one instead. An outside
// review stacked a new mount at a recorded path and had gc detach it.
func topmostAt(m mountinfo.Mount) bool {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, m.MountPoint, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, unix.STATX_MNT_ID, &st); err != nil {
		return false
	}
	return st.Mask&unix.STATX_MNT_ID != 0 && st.Mnt_id == uint64(m.ID)
}
