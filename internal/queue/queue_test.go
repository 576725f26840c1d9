package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixipfs/nixipfs/internal/metrics"
	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/internal/publish"
)

const (
	pathA = "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-a"
	pathB = "/nix/store/11bgd045z0d4icpbc2yyz4gx48ak44la-b"
	pathC = "/nix/store/22bgd045z0d4icpbc2yyz4gx48ak44la-c"
)

func TestStorePaths(t *testing.T) {
	t.Setenv("NIX_STORE_DIR", "")
	dir := t.TempDir()
	link := filepath.Join(dir, "result")
	if err := os.Symlink(pathA, link); err != nil {
		t.Fatal(err)
	}
	got, err := StorePaths(nixstore.New(""), []string{link, pathA + "/bin/x", pathB})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{pathA, pathB}; !slices.Equal(got, want) {
		t.Errorf("StorePaths = %v, want %v", got, want)
	}
	for _, bad := range []string{filepath.Join(dir, "nothing"), "/etc/passwd", "/nix/store/not-a-hash"} {
		if _, err := StorePaths(nixstore.New(""), []string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("StorePaths(%s) = %v, want an error naming it", bad, err)
		}
	}
	if _, err := StorePaths(nixstore.New(""), nil); err == nil {
		t.Error("StorePaths() with no paths: no error")
	}
}

func TestEnqueueList(t *testing.T) {
	dataDir := t.TempDir()
	q := Open(dataDir)
	if n, err := q.Depth(); err != nil || n != 0 {
		t.Fatalf("Depth of a fresh queue = %d, %v", n, err)
	}
	var ids []string
	for _, p := range []string{pathA, pathB, pathC} {
		e, err := q.Enqueue([]string{p})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	if _, err := q.Enqueue([]string{"relative/path"}); err == nil {
		t.Error("Enqueue(relative path): no error")
	}
	if _, err := q.Enqueue(nil); err == nil {
		t.Error("Enqueue(nothing): no error")
	}
	es, err := q.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.ID)
	}
	if !slices.Equal(got, ids) {
		t.Errorf("List order %v, want enqueue order %v", got, ids)
	}
	fi, err := os.Stat(filepath.Join(q.Dir(), ids[0]+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("entry mode %v, want 0600", fi.Mode().Perm())
	}
	// Temporary files of a write in progress are not entries.
	if err := os.WriteFile(filepath.Join(q.Dir(), ".x.json.tmp123"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, _ := q.Depth(); n != 3 {
		t.Errorf("Depth = %d, want 3", n)
	}
}

// fakePublisher records calls and fails paths it is told to.
type fakePublisher struct {
	calls   [][]string
	fail    map[string]error
	publish map[string]int
}

func (f *fakePublisher) Publish(_ context.Context, paths ...string) ([]publish.Result, error) {
	f.calls = append(f.calls, paths)
	for _, p := range paths {
		if err := f.fail[p]; err != nil {
			return nil, err
		}
	}
	var res []publish.Result
	for _, p := range paths {
		f.publish[p]++
		res = append(res, publish.Result{StorePath: p, Status: publish.Published})
	}
	return res, nil
}

func newWorker(t *testing.T) (*Worker, *fakePublisher, *time.Time) {
	f := &fakePublisher{fail: map[string]error{}, publish: map[string]int{}}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := &Worker{Queue: Open(t.TempDir()), Publish: f.Publish, Metrics: metrics.New(), now: func() time.Time { return now }}
	return w, f, &now
}

func TestWorkerBatchAndRetry(t *testing.T) {
	w, f, now := newWorker(t)
	ctx := context.Background()
	for _, p := range [][]string{{pathA}, {pathB, pathA}} {
		if _, err := w.Queue.Enqueue(p); err != nil {
			t.Fatal(err)
		}
	}
	w.Round(ctx)
	if len(f.calls) != 1 || !slices.Equal(f.calls[0], []string{pathA, pathB}) {
		t.Fatalf("calls %v, want one call with both paths once", f.calls)
	}
	if n, _ := w.Queue.Depth(); n != 0 {
		t.Fatalf("depth %d after a successful batch", n)
	}
	if got := metrics.Sum(w.Metrics.QueueAttempts, map[string]string{"result": "ok"}); got != 2 {
		t.Errorf("ok attempts %v, want 2", got)
	}

	// A transient failure: retried after the backoff, with the error kept.
	f.fail[pathC] = errors.New("kubo unreachable")
	e, _ := w.Queue.Enqueue([]string{pathC})
	w.Round(ctx)
	es, _ := w.Queue.List()
	if len(es) != 1 || es[0].Attempts != 1 || es[0].LastError != "kubo unreachable" || !es[0].NextTry.Equal(now.Add(time.Second)) {
		t.Fatalf("after a failure: %+v", es)
	}
	calls := len(f.calls)
	w.Round(ctx) // not due yet
	if len(f.calls) != calls {
		t.Fatal("retried before the backoff ended")
	}
	*now = now.Add(time.Second)
	w.Round(ctx)
	es, _ = w.Queue.List()
	if len(es) != 1 || es[0].Attempts != 2 || !es[0].NextTry.Equal(now.Add(2*time.Second)) {
		t.Fatalf("after a second failure: %+v", es)
	}
	if d := w.Queue.Dir(); es[0].ID != e.ID {
		t.Fatalf("entry %s in %s, want %s", es[0].ID, d, e.ID)
	}
	delete(f.fail, pathC)
	*now = now.Add(2 * time.Second)
	w.Round(ctx)
	if n, _ := w.Queue.Depth(); n != 0 || f.publish[pathC] != 1 {
		t.Fatalf("depth %d, %s published %d times", n, pathC, f.publish[pathC])
	}
	if got := metrics.Sum(w.Metrics.QueueDepth, nil); got != 0 {
		t.Errorf("depth gauge %v, want 0", got)
	}
}

func TestWorkerBadEntryDoesNotBlock(t *testing.T) {
	w, f, now := newWorker(t)
	ctx := context.Background()
	f.fail[pathB] = fmt.Errorf("%s: %w in store", pathB, nixstore.ErrInvalidPath)
	for _, p := range []string{pathA, pathB, pathC} {
		if _, err := w.Queue.Enqueue([]string{p}); err != nil {
			t.Fatal(err)
		}
	}
	// An unreadable file is set aside, not retried forever.
	junk := filepath.Join(w.Queue.Dir(), "0000000000000000001-deadbeef.json")
	if err := os.WriteFile(junk, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.Round(ctx)
	if f.publish[pathA] != 1 || f.publish[pathC] != 1 {
		t.Fatalf("good entries not published past a bad one: %v", f.publish)
	}
	for range w.GiveUpAfter {
		*now = now.Add(time.Hour)
		w.Round(ctx)
	}
	if n, _ := w.Queue.Depth(); n != 0 {
		t.Fatalf("depth %d: the invalid path was not set aside", n)
	}
	failed, err := w.Queue.Failed()
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 2 {
		t.Fatalf("failed entries %+v, want the junk file and %s", failed, pathB)
	}
	if failed[0].bad == nil || !slices.Equal(failed[1].Paths, []string{pathB}) || !strings.Contains(failed[1].LastError, "path not valid") {
		t.Errorf("failed entries %+v", failed)
	}
	if got := metrics.Sum(w.Metrics.QueueFailed, nil); got != 2 {
		t.Errorf("failed gauge %v, want 2", got)
	}
}

func TestWorkerShutdownKeepsEntries(t *testing.T) {
	w, _, _ := newWorker(t)
	ctx, cancel := context.WithCancel(context.Background())
	w.Publish = func(ctx context.Context, paths ...string) ([]publish.Result, error) {
		cancel()
		return nil, ctx.Err()
	}
	if _, err := w.Queue.Enqueue([]string{pathA}); err != nil {
		t.Fatal(err)
	}
	w.Round(ctx)
	es, _ := w.Queue.List()
	if len(es) != 1 || es[0].Attempts != 0 {
		t.Fatalf("an interrupted publish changed the entry: %+v", es)
	}
}

func TestDefaultBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 9: 256 * time.Second, 10: 5 * time.Minute, 100: 5 * time.Minute} {
		if got := DefaultBackoff(n); got != want {
			t.Errorf("DefaultBackoff(%d) = %v, want %v", n, got, want)
		}
	}
}

// As root (Nix runs the post-build-hook as root), entries and the queue
// directory belong to the data dir's owner, the daemon's user.
func TestEnqueueAsRootKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test must run as root (scripts/test runs all tests as root)")
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	const uid, gid = 4242, 4343
	if err := os.Chown(dataDir, uid, gid); err != nil {
		t.Fatal(err)
	}
	q := Open(dataDir)
	e, err := q.Enqueue([]string{pathA})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{q.Dir(), filepath.Join(q.Dir(), e.ID+".json")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
	}
}
