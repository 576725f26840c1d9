package builder

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nixipfs/nixipfs/internal/atomicfile"
)

// State is where a job is in its life.
type State string

// Job states. Built and Failed are final.
const (
	Waiting  State = "waiting"  // some input derivation is not built yet
	Offered  State = "offered"  // runnable, offered on the network
	Assigned State = "assigned" // leased to a builder
	Built    State = "built"
	Failed   State = "failed"
)

// Job is one derivation to build, as the requester's queue records it.
type Job struct {
	Drv       string   `json:"drv"`
	System    string   `json:"system"`
	Features  []string `json:"features,omitempty"`
	Outputs   []string `json:"outputs"`
	Deps      []string `json:"deps,omitempty"`   // input .drvs that are jobs too
	Inputs    []string `json:"inputs,omitempty"` // input store paths (for bids)
	Requested bool     `json:"requested,omitempty"`
	State     State    `json:"state"`

	Builder  string    `json:"builder,omitempty"` // peer id of the lease holder
	Lease    int64     `json:"lease,omitempty"`
	Attempts int       `json:"attempts,omitempty"` // infrastructure errors so far
	RetryAt  time.Time `json:"retryAt,omitzero"`

	Results []Output `json:"results,omitempty"`
	Log     string   `json:"log,omitempty"` // CID of the build log
	Error   string   `json:"error,omitempty"`

	Queued  time.Time `json:"queued"`
	Updated time.Time `json:"updated"`
}

// Final reports whether the job is done, one way or the other.
func (j *Job) Final() bool { return j.State == Built || j.State == Failed }

// Queue is the requester's durable job queue: one JSON file per job in a
// directory, each replaced atomically, so a crash loses nothing and leaves
// nothing half-written.
type Queue struct{ dir string }

// OpenQueue opens (creating) the queue in dataDir.
func OpenQueue(dataDir string) (*Queue, error) {
	dir := filepath.Join(dataDir, "jobs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open job queue: %w", err)
	}
	return &Queue{dir: dir}, nil
}

func (q *Queue) file(drv string) string {
	hash, _ := storePathHash(drv)
	return filepath.Join(q.dir, hash+".json")
}

// Save records j.
func (q *Queue) Save(j *Job) error {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return fmt.Errorf("save job %s: %w", j.Drv, err)
	}
	if err := atomicfile.WriteFile(q.file(j.Drv), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save job %s: %w", j.Drv, err)
	}
	return nil
}

// Get returns the job of drv, or nil if it is not queued.
func (q *Queue) Get(drv string) (*Job, error) {
	b, err := os.ReadFile(q.file(drv))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read job %s: %w", drv, err)
	}
	var j Job
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("job file %s: %w", q.file(drv), err)
	}
	return &j, nil
}

// List returns every queued job, oldest first.
func (q *Queue) List() ([]*Job, error) {
	ents, err := os.ReadDir(q.dir)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	var jobs []*Job
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(q.dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		var j Job
		if err := json.Unmarshal(b, &j); err != nil {
			return nil, fmt.Errorf("job file %s: %w", filepath.Join(q.dir, e.Name()), err)
		}
		jobs = append(jobs, &j)
	}
	slices.SortStableFunc(jobs, func(a, b *Job) int { return a.Queued.Compare(b.Queued) })
	return jobs, nil
}

// Remove forgets the jobs that are final.
func (q *Queue) RemoveFinal() (int, error) {
	jobs, err := q.List()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, j := range jobs {
		if j.Final() {
			if err := os.Remove(q.file(j.Drv)); err != nil {
				return n, fmt.Errorf("remove job %s: %w", j.Drv, err)
			}
			n++
		}
	}
	return n, nil
}

// Lock makes this process the queue's only requester until unlock is
// called (or the process dies: it is an flock).
func (q *Queue) Lock() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(q.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock job queue: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("job queue %s is in use by another nixipfs build: %w", q.dir, err)
	}
	return func() { f.Close() }, nil
}
