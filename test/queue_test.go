package test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/nixtest"
	"github.com/nixipfs/nixipfs/internal/queue"
	"github.com/nixipfs/nixipfs/manifests"
)

// hookGraph is built by a real nix-build with scripts/post-build-hook: two
// derivations, so the hook runs twice.
const hookGraph = nixtest.Prelude + `
  dep = mk "hook-dep" "echo NONCE > $out";
in mk "hook-top" "mkdir -p $out; cat ${dep} > $out/msg"
`

// TestPublishQueue: Nix's post-build-hook queues each build's outputs with
// `publish --queue` while no daemon runs (no IPFS node is opened, nothing
// is published); the daemon started later publishes them, signed with its
// key, and later queued paths while it runs; a path Nix does not have is
// set aside with its error; bad input is refused and changes nothing.
func TestPublishQueue(t *testing.T) {
	nixEnv(t)
	store := nixtest.Store(t)
	n := newNode(t, store, nil)
	keyFile, pub := newKey(t, "nixipfs-queue-1")

	// A real build whose post-build-hook is our script. Nix 2.8 runs it
	// with OUT_PATHS empty, so the script asks nix-store for the outputs.
	dir := filepath.Dir(nixtest.Busybox(t))
	nonce := strings.ReplaceAll(t.Name()+time.Now().Format(time.RFC3339Nano), ":", "")
	writeFile(t, filepath.Join(dir, "graph.nix"), []byte(strings.Replace(hookGraph, "NONCE", nonce, 1)))
	hookEnv := []string{"NIXIPFS=" + nixipfsBin, "NIXIPFS_DATA_DIR=" + n.dataDir, "NIXIPFS_STORE=" + store}
	start := time.Now()
	out, stderr, err := runErr(hookEnv, "nix-build", "--store", store, "--no-out-link",
		"--option", "post-build-hook", filepath.Join(repoRoot, "scripts", "post-build-hook"), filepath.Join(dir, "graph.nix"))
	if err != nil {
		t.Fatalf("nix-build with the hook: %v\n%s", err, stderr)
	}
	t.Logf("nix-build of 2 derivations with the hook: %s", time.Since(start).Round(time.Millisecond))
	top := strings.TrimSpace(out)
	if !strings.Contains(stderr, "running post-build-hook") {
		t.Fatalf("nix-build did not run the hook:\n%s", stderr)
	}
	closure := strings.Fields(run(t, nil, "nix-store", "--store", store, "-q", "--requisites", top))

	// Queueing opened no IPFS node: the data dir holds the queue only.
	ents, err := os.ReadDir(n.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "queue" {
			t.Errorf("queueing created %s in the data dir", e.Name())
		}
	}
	fi, err := os.Stat(filepath.Join(n.dataDir, "queue"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("queue dir: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(n.dataDir, "ipfs")); err == nil {
		t.Fatal("queueing created an IPFS repo")
	}
	entries, err := queue.Open(n.dataDir).List()
	if err != nil {
		t.Fatal(err)
	}
	var queued []string
	for _, e := range entries {
		queued = append(queued, e.Paths...)
	}
	if len(entries) != 2 || !slices.Contains(queued, top) {
		t.Fatalf("after the build the queue has %d entries naming %v; want 2 naming %s", len(entries), queued, top)
	}

	// How long the client takes (what the hook adds to each build).
	extra := addTrees(t, store, "extra", 3, 100)
	start = time.Now()
	n.nixipfs(t, "publish", "--queue", extra[0])
	t.Logf("publish --queue of one path: %s", time.Since(start).Round(time.Millisecond))

	// Bad input: refused, naming it, and nothing queued.
	for _, bad := range [][]string{
		{"publish", "--queue", "/etc/passwd"},
		{"publish", "--queue", "/nix/store/not-a-store-path"},
		{"publish", "--queue", "--sign-key", keyFile, extra[1]},
	} {
		_, stderr, err := n.nixipfsErr(bad...)
		if err == nil || !strings.Contains(stderr, bad[len(bad)-1]) && !strings.Contains(stderr, "--sign-key") {
			t.Errorf("%v: err %v, stderr %q: want a refusal naming the bad input", bad, err, stderr)
		}
	}
	// A sign key from the environment or the config file is for direct
	// publishes: --queue goes ahead without it.
	if _, stderr, err := runErr([]string{"NIXIPFS_PUBLISH_SIGN_KEY=" + keyFile}, nixipfsBin, n.args("publish", "--queue", extra[1])...); err != nil {
		t.Fatalf("publish --queue with NIXIPFS_PUBLISH_SIGN_KEY set: %v\n%s", err, stderr)
	}
	// --warn-only: the same failure is a warning and exit status 0.
	if _, stderr, err := n.nixipfsErr("publish", "--queue", "--warn-only", "/etc/passwd"); err != nil || !strings.Contains(stderr, "warning") || !strings.Contains(stderr, "/etc/passwd") {
		t.Errorf("--warn-only: err %v, stderr %q", err, stderr)
	}
	// A path that is not in the store is queued (queueing does not ask
	// Nix) and set aside by the daemon after a few attempts.
	missing := "/nix/store/" + strings.Repeat("0", 32) + "-not-built"
	n.nixipfs(t, "publish", "--queue", missing)
	st := n.status(t)
	if st.Daemon || st.Queue.Waiting != 5 {
		t.Fatalf("status without a daemon: daemon %v, %d waiting; want 5 (2 hook runs, 2 extra, missing)", st.Daemon, st.Queue.Waiting)
	}

	d := n.daemon(t, "--sign-key", keyFile)
	waitServed(t, d.url, top, 30*time.Second)
	waitServed(t, d.url, extra[0], 30*time.Second)
	waitServed(t, d.url, extra[1], 30*time.Second)
	for _, p := range closure {
		ni := narinfo(t, d.url, p)
		if !slices.ContainsFunc(ni["Sig"], func(s string) bool { return strings.HasPrefix(s, "nixipfs-queue-1:") }) {
			t.Errorf("%s: no signature by the daemon's key (%s) in %v", p, pub, ni["Sig"])
		}
	}
	// While the daemon runs: queued to served.
	start = time.Now()
	n.nixipfs(t, "publish", "--queue", extra[2])
	waitServed(t, d.url, extra[2], 30*time.Second)
	t.Logf("queued to served while the daemon runs: %s", time.Since(start).Round(time.Millisecond))

	waitUntil(t, "the missing path set aside", 60*time.Second, func() bool {
		st := n.status(t)
		return st.Queue.Waiting == 0 && st.Queue.Failed == 1
	})
	st = n.status(t)
	if !st.Daemon || len(st.Queue.FailedEntries) != 1 || st.Queue.FailedEntries[0].Paths[0] != missing ||
		!strings.Contains(st.Queue.FailedEntries[0].LastError, "not valid") || st.Queue.FailedEntries[0].Attempts != 3 {
		t.Fatalf("status: %+v", st.Queue)
	}
	var recent []string
	for _, r := range st.Recent {
		recent = append(recent, r.StorePath)
	}
	for _, p := range append(closure, extra...) {
		if !slices.Contains(recent, p) {
			t.Errorf("recent publishes %v lack %s", recent, p)
		}
	}
	m := scrape(t, d.url)
	if m["nixipfs_queue_depth"] != 0 || m["nixipfs_queue_failed"] != 1 || m[sample("nixipfs_queue_attempts_total", "result", "failed")] != 1 {
		t.Errorf("queue metrics: depth %v failed %v set aside %v", m["nixipfs_queue_depth"], m["nixipfs_queue_failed"], m[sample("nixipfs_queue_attempts_total", "result", "failed")])
	}
	if got := m[sample("nixipfs_queue_published_paths_total", "status", "published")]; int(got) < len(closure)+3 {
		t.Errorf("published paths counted %v, want at least %d", got, len(closure)+3)
	}
	// The text form names the set-aside entry and its error.
	text := n.nixipfs(t, "status")
	if !strings.Contains(text, "daemon:   running") || !strings.Contains(text, missing) || !strings.Contains(text, "not valid") {
		t.Errorf("status text:\n%s", text)
	}
}

// recordedManifest opens the data dir's embedded repo (no daemon may run)
// and checks that the recorded manifest version is complete: it and every
// version before it load, it is pinned, and every p/ entry's PathInfo
// loads. It returns the version and each recorded store path's NarHash.
func recordedManifest(t *testing.T, dataDir string) (cid.Cid, map[string]string) {
	t.Helper()
	c := ctx(t)
	node, err := ipfsnode.Open(c, ipfsnode.Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	local := manifests.OpenLocal(dataDir, node.API)
	m, err := local.Current(c)
	if err != nil {
		t.Fatalf("the recorded manifest does not load: %v", err)
	}
	v := m.Version()
	if !v.Defined() {
		return v, map[string]string{}
	}
	hist, err := manifests.History(c, node.API.Dag(), v, 0)
	if err != nil || len(hist) == 0 || hist[len(hist)-1].Seq != 1 {
		t.Fatalf("manifest history from %s: %d versions, %v", v, len(hist), err)
	}
	if _, pinned, err := node.API.Pin().IsPinned(c, path.FromCid(v)); err != nil || !pinned {
		t.Fatalf("recorded version %s is not pinned: %v", v, err)
	}
	paths := map[string]string{}
	keys := map[string]int{}
	err = m.Walk(c, func(key string, rec cid.Cid) error {
		prefix, _, _ := strings.Cut(key, "/")
		keys[prefix]++
		if prefix != "p" {
			return nil
		}
		p, err := manifests.Load(c, node.API, rec)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if _, dup := paths[p.StorePath]; dup {
			return fmt.Errorf("%s recorded twice", p.StorePath)
		}
		paths[p.StorePath] = p.NarHashString()
		return nil
	})
	if err != nil {
		t.Fatalf("walk manifest %s: %v", v, err)
	}
	if int64(len(paths)) != m.Info().Count || keys["sha256"] != len(paths) || keys["blake3"] != len(paths) {
		t.Fatalf("manifest %s: %d paths, count %d, keys %v", v, len(paths), m.Info().Count, keys)
	}
	return v, paths
}

// TestQueueKillDaemon kills the daemon (SIGKILL) while it works through
// the queue: once mid-queue, then up to three times while it holds the
// manifest's update lock (an update in progress, or the old version's pins
// being dropped after it), as long as an update is left to interrupt. After each kill the recorded
// manifest is a complete version; after the last restart every queued path
// is recorded exactly once, with Nix's NarHash, and the queue is empty.
func TestQueueKillDaemon(t *testing.T) {
	nixEnv(t)
	store := nixtest.Store(t)
	n := newNode(t, store, nil)
	paths := addTrees(t, store, "kill", 240, 2048)
	for i := 0; i < len(paths); i += 4 {
		n.nixipfs(t, append([]string{"publish", "--queue"}, paths[i:i+4]...)...)
	}
	q := queue.Open(n.dataDir)
	depth := func() int {
		d, err := q.Depth()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if depth() != 60 {
		t.Fatalf("queue depth %d, want 60", depth())
	}
	// Mid-queue: the first versions are recorded, the entries still wait.
	d := n.daemon(t)
	waitUntil(t, "a manifest version while entries wait", 2*time.Minute, func() bool {
		_, err := os.Stat(filepath.Join(n.dataDir, "manifest"))
		return err == nil && depth() > 0
	})
	d.kill()
	v, rec := recordedManifest(t, n.dataDir)
	t.Logf("killed mid-queue: version %s with %d paths, %d entries waiting", v, len(rec), depth())

	// Mid-update: kill as soon as another process holds the manifest lock.
	lockFile := filepath.Join(n.dataDir, "manifest.lock")
	kills := 0
	for round := range 3 {
		if depth() == 0 {
			// Killed while it dropped the old version's pins (under the
			// lock), after the queue had let go of every entry.
			t.Logf("round %d: the queue emptied before the kill", round+1)
			break
		}
		d := n.daemon(t)
		held := killWhenLocked(t, lockFile, d, func() bool { return depth() == 0 })
		if !held {
			// The last kill came after the last version was recorded
			// (the daemon drops old pins under the lock after recording)
			// and before the queue let go of its entries: they were all
			// recorded, so the queue emptied without an update to kill.
			d.stop()
			t.Logf("round %d: the queue emptied without an update (its entries were recorded before the last kill)", round+1)
			break
		}
		kills++
		before := v
		v, rec = recordedManifest(t, n.dataDir)
		t.Logf("killed mid-update %d: version %s (advanced: %v) with %d paths, %d entries waiting", round+1, v, !v.Equals(before), len(rec), depth())
	}

	if kills == 0 {
		t.Fatal("the daemon was never killed mid-update")
	}
	d = n.daemon(t)
	waitUntil(t, "the queue to empty", 3*time.Minute, func() bool { return depth() == 0 })
	d.stop()
	if f, _ := q.FailedCount(); f != 0 {
		t.Fatalf("%d entries set aside", f)
	}
	_, rec = recordedManifest(t, n.dataDir)
	if len(rec) != len(paths) {
		t.Fatalf("manifest records %d paths, %d were queued", len(rec), len(paths))
	}
	hashes := strings.Fields(run(t, nil, "nix-store", append([]string{"--store", store, "-q", "--hash"}, paths...)...))
	for i, p := range paths {
		if rec[p] != hashes[i] {
			t.Errorf("%s: recorded NarHash %q, Nix has %s", p, rec[p], hashes[i])
		}
	}
}

// killWhenLocked kills d as soon as it holds the flock on lockFile, and
// reports whether it did; it gives up when done reports true. The check
// runs in a tight loop rather than on a timer: a batched manifest update
// holds the lock for a few milliseconds only. While the test holds the lock
// itself for its probe, the daemon waits for it, and the next probe finds
// it taken.
func killWhenLocked(t *testing.T, lockFile string, d running, done func() bool) bool {
	t.Helper()
	f, err := os.OpenFile(lockFile, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; ; i++ {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EWOULDBLOCK) {
			d.kill()
			return true
		}
		if err != nil {
			t.Fatalf("flock %s: %v", lockFile, err)
		}
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		if i%1000 == 0 {
			if done() {
				return false
			}
			if time.Now().After(deadline) {
				t.Fatalf("the daemon did not take the manifest lock within 2 minutes")
			}
		}
		runtime.Gosched()
	}
}
