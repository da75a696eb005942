package task

import "fmt"

// Identity levels: how far a task's ids are its own on the host.
const (
	// IdentityShared: no user namespace; the task's uid is a host uid that
	// other tasks may share (the Docker backend; or user namespaces off).
	IdentityShared = "shared"
	// IdentityUserNS: the task's own user namespace over a host id range
	// no other live task holds. Image files owned by ids outside the
	// range (root's, for one) show inside as the overflow id 65534, so a
	// binary only its non-root owner may run cannot run.
	IdentityUserNS = "userns"
	// IdentityIDMapped: as IdentityUserNS, with the image's files mapped
	// into the range through idmapped mounts, so they keep their owners.
	IdentityIDMapped = "idmapped"
)

// IDRangeSize is how many ids a task's user namespace maps: container ids
// 0..65535, as Kubernetes gives a pod.
const IDRangeSize = 65536

// IDRange is a task's host id range: container uid and gid N are host uid
// and gid HostID+N, for N below Size.
type IDRange struct {
	HostID uint32 `json:"host_id"`
	Size   uint32 `json:"size"`
}

// Contains reports whether host id id lies in r.
func (r IDRange) Contains(id uint32) bool {
	return id >= r.HostID && uint64(id) < uint64(r.HostID)+uint64(r.Size)
}

// HostIDOf is the host id that container id id maps to.
func (r IDRange) HostIDOf(id uint32) (uint32, error) {
	if id >= r.Size {
		return 0, fmt.Errorf("container id %d is outside the task's range of %d ids", id, r.Size)
	}
	return r.HostID + id, nil
}

func (r IDRange) String() string {
	return fmt.Sprintf("%d-%d", r.HostID, uint64(r.HostID)+uint64(r.Size)-1)
}

// Identity says which level of host identity a task got, and its range.
type Identity struct {
	Level string   `json:"level"`
	Range *IDRange `json:"range,omitempty"`
}
