package status

import "time"

// SchemaVersion is /status.json's "version". It changes when a field is removed or its
// meaning changes; added fields do not change it.
const SchemaVersion = 1

// The document of /status.json. README.md ("Status") documents every field; durations are in
// seconds, times in RFC 3339 with nanoseconds, and a time never set is omitted.
type Document struct {
	Version   int        `json:"version"`
	Generated time.Time  `json:"generated"`
	HealthDNS ProcessDoc `json:"healthdns"`
	Checker   CheckerDoc `json:"checker"`
	Pools     []PoolDoc  `json:"pools"`
}

type ProcessDoc struct {
	Version       string    `json:"version"`
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	ConfigHash    string    `json:"config_hash"`
}

type CheckerDoc struct {
	Stalled bool      `json:"stalled"`
	Loops   []LoopDoc `json:"loops"`
}

type LoopDoc struct {
	Wire               string     `json:"wire"`
	Running            bool       `json:"running"`
	Targets            int        `json:"targets"`
	IntervalSeconds    float64    `json:"interval_seconds"`
	LastTick           *time.Time `json:"last_tick,omitempty"`
	LastTickAgeSeconds float64    `json:"last_tick_age_seconds"`
	Wakes              uint64     `json:"wakes"`
	LatenessP99Seconds float64    `json:"lateness_p99_seconds"`
	StallAfterSeconds  float64    `json:"stall_after_seconds"`
	Stalled            bool       `json:"stalled"`
}

type PoolDoc struct {
	Server              string       `json:"server"`
	Zone                string       `json:"zone"`
	Policy              string       `json:"policy"`
	Answers             int          `json:"answers"`
	TTL                 uint32       `json:"ttl"`
	AllDownMode         string       `json:"all_down_mode"`
	IntervalSeconds     float64      `json:"interval_seconds"`
	FastIntervalSeconds float64      `json:"fast_interval_seconds"`
	TimeoutSeconds      float64      `json:"timeout_seconds"`
	Rise                int          `json:"rise"`
	Fall                int          `json:"fall"`
	Checks              []CheckDoc   `json:"checks"`
	Preemption          string       `json:"preemption"` // preempt, preempt_delay DURATION or nopreempt
	AllDown             bool         `json:"all_down"`
	Families            []FamilyDoc  `json:"families"`
	Sources             []SourceDoc  `json:"sources"`
	Backends            []BackendDoc `json:"backends"`
}

// SourceDoc is one place the pool's backends come from: the Corefile, and a backends_file
// or backends_etcd. Backends is how many it gives now (its last good list).
type SourceDoc struct {
	Kind        string     `json:"kind"` // corefile, file or etcd
	Name        string     `json:"name,omitempty"`
	Backends    int        `json:"backends"`
	LastLoad    *time.Time `json:"last_load,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	Errors      int        `json:"errors"`
	Connected   *bool      `json:"connected,omitempty"` // etcd only
	Waiting     bool       `json:"waiting,omitempty"`   // no list delivered yet
	// etcd only: the keys the last list left out, each a backend that does not parse.
	Skipped []SkippedKeyDoc `json:"skipped,omitempty"`
}

type SkippedKeyDoc struct {
	Key   string `json:"key"`
	Error string `json:"error"`
}

type CheckDoc struct {
	Check       string `json:"check"`
	Kind        string `json:"kind"`
	Port        uint16 `json:"port,omitempty"`
	Path        string `json:"path,omitempty"`
	Expect      string `json:"expect,omitempty"`
	Body        string `json:"body,omitempty"`
	BodyExact   bool   `json:"body_exact,omitempty"` // the body must be Body, not only hold it
	Host        string `json:"host,omitempty"`
	TLSCA       string `json:"tls_ca,omitempty"`
	TLSInsecure bool   `json:"tls_insecure,omitempty"`
	Command     string `json:"command,omitempty"`
	// push: how long a report holds, and whether the check takes a report token of its own
	TTLSeconds  float64 `json:"ttl_seconds,omitempty"`
	ReportToken bool    `json:"report_token,omitempty"`
}

type FamilyDoc struct {
	Family     string `json:"family"`
	Configured int    `json:"configured"`
	Up         int    `json:"up"`
	Down       bool   `json:"down"`     // every backend of the family is down
	AllDown    bool   `json:"all_down"` // the whole pool is down, and all_down_mode decides
	// The whole pool's backends in service are down, and the family's healthy drained ones
	// are answered instead, as a last resort.
	ServingDrained bool `json:"serving_drained,omitempty"`
	// The priority group answers come from, 0 while none has a healthy backend, and every
	// group configured, highest first.
	ServingPriority uint8 `json:"serving_priority"`
	Priorities      []int `json:"priorities"` // not []uint8, which JSON would write as base64
	// The groups with a healthy backend: one above the serving group under nopreempt waits for
	// an operator's fail-back.
	HealthyPriorities []int `json:"healthy_priorities"`
	// A higher group waiting out its preempt_delay, which takes back by itself at Until.
	PreemptWait *PreemptWaitDoc `json:"preempt_wait,omitempty"`
	// The fleet's agreed group, under nopreempt with backends_etcd (see docs/DESIGN.md).
	Agreement *AgreementDoc `json:"agreement,omitempty"`
}

type PreemptWaitDoc struct {
	Group uint8     `json:"group"`
	Until time.Time `json:"until"`
}

type BackendDoc struct {
	Address     string            `json:"address"`
	Family      string            `json:"family"`
	Weight      uint32            `json:"weight"`
	Priority    uint8             `json:"priority"`
	State       string            `json:"state"` // up, down or drained
	DrainReason string            `json:"drain_reason,omitempty"`
	DrainUntil  *time.Time        `json:"drain_until,omitempty"`
	DrainedBy   string            `json:"drained_by,omitempty"`   // config or api
	DrainCaller string            `json:"drain_caller,omitempty"` // api: the caller's address
	DrainSince  *time.Time        `json:"drain_since,omitempty"`  // api: when it was set
	Checked     bool              `json:"checked"`
	Since       *time.Time        `json:"since,omitempty"`
	Reason      string            `json:"reason,omitempty"`
	Error       string            `json:"error,omitempty"`
	Transitions uint64            `json:"transitions"`
	Answers     uint64            `json:"answers"`
	Checks      []BackendCheckDoc `json:"checks"`
}

type BackendCheckDoc struct {
	Check               string          `json:"check"`
	State               string          `json:"state"`
	Checked             bool            `json:"checked"`
	Since               *time.Time      `json:"since,omitempty"`
	Successes           int             `json:"successes"`
	Failures            int             `json:"failures"`
	LastCheck           *time.Time      `json:"last_check,omitempty"`
	LastDurationSeconds float64         `json:"last_duration_seconds"`
	LastFailure         *FailureDoc     `json:"last_failure,omitempty"`
	Transitions         uint64          `json:"transitions"`
	History             []TransitionDoc `json:"history"`
}

type FailureDoc struct {
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
	Error  string    `json:"error"`
}

type TransitionDoc struct {
	At     time.Time `json:"at"`
	State  string    `json:"state"`
	First  bool      `json:"first,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Error  string    `json:"error,omitempty"`
}

// AgreementDoc is the fleet's agreed group of a family, as this server last read it.
type AgreementDoc struct {
	Key       string `json:"key"`
	Known     bool   `json:"known"`
	Group     uint8  `json:"group,omitempty"`
	Revision  int64  `json:"revision,omitempty"`
	Connected bool   `json:"connected"`
	// With fleet_quorum other than any: the quorum, the live views counted at the last
	// decision (this server's included), and the agreed group while this server sees it
	// with no healthy backend and the quorum keeps it.
	Quorum    string `json:"quorum,omitempty"`
	Views     int    `json:"views,omitempty"`
	Disagrees uint8  `json:"disagrees,omitempty"`
}
