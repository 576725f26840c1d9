package test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixipfs/nixipfs/internal/nixtest"
	"github.com/nixipfs/nixipfs/queue"
)

// hookGraph is built by a real nix-build with scripts/post-build-hook: two
// derivations, so the hook runs twice.
const hookGraph = `
let
  bb = builtins.path { path = ./bbdir; name = "busybox"; };
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "${bb}/bin/sh";
    args = [ "-c" script ];
    PATH = "${bb}/bin";
  };
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
	// --warn-only: the same failure is a warning and exit status 0.
	if _, stderr, err := n.nixipfsErr("publish", "--queue", "--warn-only", "/etc/passwd"); err != nil || !strings.Contains(stderr, "warning") || !strings.Contains(stderr, "/etc/passwd") {
		t.Errorf("--warn-only: err %v, stderr %q", err, stderr)
	}
	// A path that is not in the store is queued (queueing does not ask
	// Nix) and set aside by the daemon after a few attempts.
	missing := "/nix/store/" + strings.Repeat("0", 32) + "-not-built"
	n.nixipfs(t, "publish", "--queue", missing)
	st := n.status(t)
	if st.Daemon || st.Queue.Waiting != 4 {
		t.Fatalf("status without a daemon: daemon %v, %d waiting; want 4 (2 hook runs, extra, missing)", st.Daemon, st.Queue.Waiting)
	}

	d := n.daemon(t, "--sign-key", keyFile)
	waitServed(t, d.url, top, 30*time.Second)
	waitServed(t, d.url, extra[0], 30*time.Second)
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
	for _, p := range append(closure, extra[0], extra[2]) {
		if !slices.Contains(recent, p) {
			t.Errorf("recent publishes %v lack %s", recent, p)
		}
	}
	m := scrape(t, d.url)
	if m["nixipfs_queue_depth"] != 0 || m["nixipfs_queue_failed"] != 1 || m[sample("nixipfs_queue_attempts_total", "result", "failed")] != 1 {
		t.Errorf("queue metrics: depth %v failed %v set aside %v", m["nixipfs_queue_depth"], m["nixipfs_queue_failed"], m[sample("nixipfs_queue_attempts_total", "result", "failed")])
	}
	if got := m[sample("nixipfs_queue_published_paths_total", "status", "published")]; int(got) < len(closure)+2 {
		t.Errorf("published paths counted %v, want at least %d", got, len(closure)+2)
	}
	// The text form names the set-aside entry and its error.
	text := n.nixipfs(t, "status")
	if !strings.Contains(text, "daemon:   running") || !strings.Contains(text, missing) || !strings.Contains(text, "not valid") {
		t.Errorf("status text:\n%s", text)
	}
}
