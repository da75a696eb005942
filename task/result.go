package task

import "time"

// Reason says why a task ended. The values are part of the CLI contract
// (design.md): scripts match on them.
type Reason string

// The reasons a task can end with.
const (
	ReasonExited            Reason = "exited"
	ReasonOOMKilled         Reason = "oom_killed"
	ReasonTimedOut          Reason = "timed_out"
	ReasonCPUTimeExceeded   Reason = "cpu_time_exceeded"
	ReasonGPUMemoryExceeded Reason = "gpu_memory_exceeded"
	ReasonKilled            Reason = "killed"
	ReasonFailed            Reason = "failed"
)

// Result is what a finished task gives back; `nsn-run run --json` prints it.
// Its JSON is a contract for callers in other languages,
// docs/result.schema.json: add fields, never rename or remove one. A new
// field goes into the schema too (TestSchemaCoversResult fails until it
// does); one that may be empty is omitempty and not required there.
type Result struct {
	ID              string       `json:"id"`
	Image           string       `json:"image"`
	ExitCode        int          `json:"exit_code"`
	Reason          Reason       `json:"reason"`
	StartedAt       time.Time    `json:"started_at"`
	FinishedAt      time.Time    `json:"finished_at"`
	DurationMS      int64        `json:"duration_ms"`
	Stdout          string       `json:"stdout"`
	Stderr          string       `json:"stderr"`
	StdoutTruncated bool         `json:"stdout_truncated"`
	StderrTruncated bool         `json:"stderr_truncated"`
	OutputFiles     []OutputFile `json:"output_files"`
	// OutputSkipped lists what collection did not copy, and why: links,
	// fifos, sockets, devices, unsafe names (control characters, not
	// UTF-8, a leading '-'; the first two with the path Go-quoted), and
	// what lay beyond the caps.
	OutputSkipped []SkippedFile `json:"output_skipped,omitempty"`
	Stats         Stats         `json:"stats"`
	// Identity is the task's host identity: its own user namespace and
	// host id range, or the weaker shared level, and which.
	Identity *Identity `json:"identity,omitempty"`
	// Error says why nsn-run cannot tell how the task ended (reason
	// failed): its exit status was lost, say, its logs and output kept.
	Error string `json:"error,omitempty"`
}

// SkippedFile is an entry of /output that was not collected.
type SkippedFile struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// OutputFile is one regular file collected from the task's /output.
type OutputFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Stats are the resource figures reported with a Result.
type Stats struct {
	PeakMemoryBytes uint64  `json:"peak_memory_bytes"`
	CPUUsageSeconds float64 `json:"cpu_usage_seconds"`
	PidsPeak        uint64  `json:"pids_peak"`
	// PidsLimitHits counts the forks and clones the pids limit refused;
	// non-zero means the task lost processes or threads it tried to start.
	PidsLimitHits uint64 `json:"pids_limit_hits,omitempty"`
	OOMKills      uint64 `json:"oom_kills"`
	// PeakGPUMemoryBytes is the most GPU memory the task's processes held
	// in any sample (left out without GPUs or GPU sampling).
	PeakGPUMemoryBytes uint64 `json:"peak_gpu_memory_bytes,omitempty"`
}
