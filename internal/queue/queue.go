// Package queue is the daemon's durable publish queue. `nixipfs publish
// --queue` (a post-build-hook, a CI step) writes an entry and returns at
// once, whether a daemon runs or not; the daemon's worker publishes entries
// in the background, retrying with backoff, and removes an entry only once
// the manifest update that records its paths is durable. Entries are files
// in <data-dir>/queue, one per enqueue, each written atomically (temporary
// file, fsync, rename, fsync of the directory): a crash at any moment leaves
// every entry either whole or absent, and a restart loses nothing.
package queue

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nixipfs/nixipfs/internal/atomicfile"
	"github.com/nixipfs/nixipfs/internal/nixstore"
)

// Entry is one enqueue: store paths to publish (their closures).
type Entry struct {
	ID       string    `json:"id"`
	Paths    []string  `json:"paths"`
	Enqueued time.Time `json:"enqueued"`
	// Attempts, LastError and NextTry are the worker's retry state, kept in
	// the entry so that a restart continues the backoff and `nixipfs
	// status` can show why an entry waits.
	Attempts  int       `json:"attempts,omitempty"`
	LastError string    `json:"lastError,omitempty"`
	NextTry   time.Time `json:"nextTry,omitzero"`

	bad error // the file could not be read as an entry
}

// Queue is the queue directory of one data dir.
type Queue struct {
	dataDir string
}

// Open returns the queue kept in dataDir. Nothing is created until the
// first Enqueue.
func Open(dataDir string) *Queue { return &Queue{dataDir: dataDir} }

// Dir is where entries wait.
func (q *Queue) Dir() string { return filepath.Join(q.dataDir, "queue") }

// FailedDir is where entries the worker gave up on are kept, with their
// last error.
func (q *Queue) FailedDir() string { return filepath.Join(q.Dir(), "failed") }

// idPattern is what Enqueue names entries: the enqueue time in nanoseconds
// (fixed width, so names sort in enqueue order) and a random suffix.
var idPattern = regexp.MustCompile(`^[0-9]{19}-[0-9a-f]{8}$`)

func newID(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%019d-%s", now.UnixNano(), hex.EncodeToString(b[:]))
}

// StorePaths turns command-line arguments (store paths, paths inside them,
// symlinks to them such as ./result) into store paths, without running Nix:
// queueing must return at once. Whether the paths are valid in the store is
// the worker's business.
func StorePaths(store *nixstore.Store, args []string) ([]string, error) {
	if len(args) == 0 {
		return nil, errors.New("queue: no paths given")
	}
	var out []string
	for _, a := range args {
		p, err := store.ResolveStatic(a)
		if err != nil {
			return nil, fmt.Errorf("queue %s: %w", a, err)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// Enqueue records paths as one new entry and returns it. When it returns
// nil, the entry survives a crash of the machine.
func (q *Queue) Enqueue(paths []string) (Entry, error) {
	if len(paths) == 0 {
		return Entry{}, errors.New("queue: no paths given")
	}
	for _, p := range paths {
		if err := checkPath(p); err != nil {
			return Entry{}, err
		}
	}
	if err := os.MkdirAll(q.Dir(), 0o700); err != nil {
		return Entry{}, fmt.Errorf("queue: create %s: %w", q.Dir(), err)
	}
	if err := ownLike(q.Dir(), q.dataDir); err != nil {
		return Entry{}, err
	}
	now := time.Now()
	e := Entry{ID: newID(now), Paths: paths, Enqueued: now.UTC()}
	if err := q.write(q.Dir(), e); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// checkPath refuses what cannot be a store path, so a hand-edited entry
// cannot make the worker run Nix on arbitrary arguments.
func checkPath(p string) error {
	if !filepath.IsAbs(p) || strings.HasPrefix(filepath.Base(p), "-") || filepath.Clean(p) != p {
		return fmt.Errorf("queue: %q is not a store path", p)
	}
	return nil
}

// write stores e in dir as <id>.json, atomically and durably, owned like
// dir.
func (q *Queue) write(dir string, e Entry) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return fmt.Errorf("queue: encode entry %s: %w", e.ID, err)
	}
	f, err := atomicfile.Create(filepath.Join(dir, e.ID+".json"), 0o600)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	defer f.Close()
	if err := ownLike(f.Name(), dir); err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("queue: write entry %s: %w", e.ID, err)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return syncDir(dir)
}

// ownLike gives path the owner of ref when running as root: Nix runs the
// post-build-hook as root, and the daemon that reads and removes entries
// may run as the data dir's own user.
func ownLike(path, ref string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(ref)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 && st.Gid == 0 {
		return nil
	}
	if err := os.Chown(path, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("queue: give %s to the owner of %s: %w", path, ref, err)
	}
	return nil
}

// syncDir makes renames and removals in dir durable.
func syncDir(dir string) error {
	if err := atomicfile.Sync(dir); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}

// List returns the waiting entries, oldest first. A file that is not a
// readable entry is returned with no paths and its error (Worker sets it
// aside).
func (q *Queue) List() ([]Entry, error) { return list(q.Dir()) }

// Failed returns the entries the worker gave up on, oldest first.
func (q *Queue) Failed() ([]Entry, error) { return list(q.FailedDir()) }

// Depth counts waiting entries without reading them.
func (q *Queue) Depth() (int, error) {
	ids, err := ids(q.Dir())
	return len(ids), err
}

// FailedCount counts the entries set aside.
func (q *Queue) FailedCount() (int, error) {
	ids, err := ids(q.FailedDir())
	return len(ids), err
}

func ids(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("queue: list %s: %w", dir, err)
	}
	var out []string
	for _, de := range ents {
		id, ok := strings.CutSuffix(de.Name(), ".json")
		if ok && de.Type().IsRegular() && idPattern.MatchString(id) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out, nil
}

func list(dir string) ([]Entry, error) {
	names, err := ids(dir)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(names))
	for _, id := range names {
		e, err := read(dir, id)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since the listing
		}
		out = append(out, e)
	}
	return out, nil
}

func read(dir, id string) (Entry, error) {
	b, err := os.ReadFile(filepath.Join(dir, id+".json"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Entry{}, err
		}
		return Entry{ID: id, bad: fmt.Errorf("read entry %s: %w", id, err)}, nil
	}
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return Entry{ID: id, bad: fmt.Errorf("entry %s is not valid JSON: %w", id, err)}, nil
	}
	if e.ID != id {
		return Entry{ID: id, bad: fmt.Errorf("entry %s names itself %q", id, e.ID)}, nil
	}
	if len(e.Paths) == 0 {
		e.bad = fmt.Errorf("entry %s has no paths", id)
	}
	for _, p := range e.Paths {
		if err := checkPath(p); err != nil {
			e.bad = err
		}
	}
	return e, nil
}

// Done removes a published entry.
func (q *Queue) Done(id string) error {
	if err := os.Remove(filepath.Join(q.Dir(), id+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("queue: remove entry %s: %w", id, err)
	}
	return nil
}

// retry records a failed attempt and when to try again.
func (q *Queue) retry(e Entry, err error, next time.Time) error {
	e.Attempts++
	e.LastError = err.Error()
	e.NextTry = next.UTC()
	return q.write(q.Dir(), e)
}

// setAside moves an entry to the failed directory with its error. Written
// there first, removed here second: a crash in between retries it once more.
func (q *Queue) setAside(e Entry, err error) error {
	if e.Paths == nil {
		// An unreadable file: keep its bytes for the operator to look at.
		if mkErr := os.MkdirAll(q.FailedDir(), 0o700); mkErr != nil {
			return fmt.Errorf("queue: %w", mkErr)
		}
		if rnErr := os.Rename(filepath.Join(q.Dir(), e.ID+".json"), filepath.Join(q.FailedDir(), e.ID+".json")); rnErr != nil {
			return fmt.Errorf("queue: set aside %s: %w", e.ID, rnErr)
		}
		return syncDir(q.Dir())
	}
	e.Attempts++
	e.LastError = err.Error()
	e.NextTry = time.Time{}
	if mkErr := os.MkdirAll(q.FailedDir(), 0o700); mkErr != nil {
		return fmt.Errorf("queue: %w", mkErr)
	}
	if wErr := q.write(q.FailedDir(), e); wErr != nil {
		return wErr
	}
	if rmErr := q.Done(e.ID); rmErr != nil {
		return rmErr
	}
	return syncDir(q.Dir())
}
