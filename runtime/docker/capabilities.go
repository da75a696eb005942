package docker

// SupportsCDI says whether a dockerd speaking Engine API version
// apiVersion takes CDI device requests (Docker 25, API 1.44, and later):
// the only way the docker backend gives a task GPUs.
func SupportsCDI(apiVersion string) bool { return !versionLess(apiVersion, minCDIAPIVersion) }

// MinCDIAPIVersion is the first Engine API version with CDI device
// requests.
const MinCDIAPIVersion = minCDIAPIVersion
