package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/nixtest"
	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/manifests"
)

// TestManifestPinsAndRepoGC checks how the manifest is kept from kubo's repo
// GC: its HAMT shards are pinned directly (no recursive pin walks the records
// they list), a data dir whose HAMT is pinned recursively, as older versions
// did, is moved over on its next update, and after `manifest rm`, nixipfs gc
// --apply and kubo's repo gc every listed path is still whole, and so is a
// dropped path that a listed one references (which gc does not offer to
// unpin).
func TestManifestPinsAndRepoGC(t *testing.T) {
	nixEnv(t)
	store := nixtest.Store(t)
	top, all := nixtest.BuildClosure(t, store)
	n := newNode(t, store, nil)
	// flatfs, so that the stock ipfs command can open the repo and list its
	// pins; the default pebble datastore is a type only nixipfs knows
	// (TestGC covers collection on it).
	n.datastore = "flatfs"
	res := n.publish(t, top)
	// The ipfs CLI on the embedded repo (no daemon: it opens the repo).
	repo := &kubo{path: filepath.Join(n.dataDir, "ipfs")}
	pins := func(kind string) map[string]bool {
		set := map[string]bool{}
		for _, c := range strings.Fields(repo.ipfs(t, "pin", "ls", "--type", kind, "-q")) {
			set[c] = true
		}
		return set
	}
	entries := func() string {
		var show struct{ Version string }
		if err := json.Unmarshal([]byte(n.nixipfs(t, "manifest", "show", "--json")), &show); err != nil {
			t.Fatal(err)
		}
		var v struct {
			Entries struct {
				Link string `json:"/"`
			}
		}
		if err := json.Unmarshal([]byte(repo.ipfs(t, "dag", "get", show.Version)), &v); err != nil {
			t.Fatal(err)
		}
		return v.Entries.Link
	}

	e1 := entries()
	if pins("recursive")[e1] || !pins("direct")[e1] {
		t.Fatalf("HAMT root %s: want a direct pin and no recursive one", e1)
	}

	// An older data dir: the HAMT pinned recursively. The next update pins
	// the new HAMT's shards directly and drops the recursive pin.
	repo.ipfs(t, "pin", "add", e1)
	if !pins("recursive")[e1] {
		t.Fatal("setting up the old pin failed")
	}
	extra := nixtest.AddTree(t, store, "extra", map[string]string{"f": strings.Repeat("e", 3000)})
	res = append(res, n.publish(t, extra)...)
	e2 := entries()
	rec, direct := pins("recursive"), pins("direct")
	if rec[e1] || direct[e1] || rec[e2] || !direct[e2] {
		t.Fatalf("after the update: old root %s recursive %v direct %v; new root %s recursive %v direct %v",
			e1, rec[e1], direct[e1], e2, rec[e2], direct[e2])
	}

	// Drop dep, which left and right still reference, then let both GCs run.
	var dep string
	for _, p := range all {
		if strings.HasSuffix(p, "-dep") {
			dep = p
		}
	}
	if dep == "" {
		t.Fatalf("no dep in %v", all)
	}
	n.nixipfs(t, "manifest", "rm", dep)
	// Not garbage: gc does not even list it (a listed item is unpinned
	// once enough replicas exist).
	for _, it := range n.gc(t, "--min-replicas", "1", "--apply") {
		if it.StorePath == dep {
			t.Fatalf("gc lists %s, which listed paths reference: %+v", dep, it)
		}
	}
	repo.ipfs(t, "repo", "gc", "--quiet")

	// Every record's DAG (its NAR's DAG and the records it references,
	// dep's included) is still complete here: dag stat reads every block.
	for _, r := range res {
		repo.ipfs(t, "dag", "stat", "--progress=false", r.PathInfo)
	}
	if got := n.nixipfs(t, "manifest", "get", extra); !strings.Contains(got, extra) {
		t.Fatalf("manifest get %s after repo gc: %s", extra, got)
	}
}

// TestResolverFollowsUpdates checks that the resolver's remembered answers
// (found and not found) give way as soon as the manifest changes, whether
// this process or another one (a second Local on the same data dir, as a
// publish run beside the daemon) recorded the change.
func TestResolverFollowsUpdates(t *testing.T) {
	dataDir := t.TempDir()
	node, err := ipfsnode.Open(ctx(t), ipfsnode.Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	nar := narOf(dir(entry("f", file("resolver", false))))
	res, err := publish.ImportNAR(ctx(t), node, bytes.NewReader(nar), nil)
	if err != nil {
		t.Fatal(err)
	}
	const hash = "0123456789abcdfghijklmnpqrsvwxyz"
	rec := &manifests.PathInfo{StorePath: "/nix/store/" + hash + "-x", NarHash: res.NarHash[:],
		NarSize: int64(res.NarSize), Blake3: res.Blake3[:], Root: res.Root, Profile: "x"}
	c, err := manifests.Store(ctx(t), node.API, rec)
	if err != nil {
		t.Fatal(err)
	}
	local := manifests.OpenLocal(dataDir, node.API)
	other := manifests.OpenLocal(dataDir, node.API) // another process's view
	resolver, err := manifests.NewResolver(node.API, local, nil, manifests.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(want bool) {
		t.Helper()
		for range 2 { // the second answer comes from memory
			p, err := resolver.Lookup(ctx(t), hash)
			if want && (err != nil || p.StorePath != rec.StorePath) || !want && !errors.Is(err, manifests.ErrNotFound) {
				t.Fatalf("lookup: %v %v, want found=%v", p, err, want)
			}
		}
	}
	// A first version without the path, so that the resolver has a
	// version to remember its answer under.
	if _, err := local.Update(ctx(t), map[string]cid.Cid{manifests.KeyStorePath("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"): c}, nil); err != nil {
		t.Fatal(err)
	}
	lookup(false)
	if _, err := other.Update(ctx(t), map[string]cid.Cid{manifests.KeyStorePath(hash): c}, nil); err != nil {
		t.Fatal(err)
	}
	lookup(true)
	if _, err := local.Update(ctx(t), nil, []string{manifests.KeyStorePath(hash)}); err != nil {
		t.Fatal(err)
	}
	lookup(false)
}

// TestRepoGCPebble collects garbage on the default embedded repo (pebble,
// which the stock ipfs command cannot open), first through a running daemon
// and then in process: an unpinned block goes, and every published path's
// DAG stays whole and renders to the NAR Nix dumps.
func TestRepoGCPebble(t *testing.T) {
	nixEnv(t)
	store := nixtest.Store(t)
	top, _ := nixtest.BuildClosure(t, store)
	n := newNode(t, store, nil)
	res := n.publish(t, top)
	spec, err := os.ReadFile(filepath.Join(n.dataDir, "ipfs", "datastore_spec"))
	if err != nil || !strings.Contains(string(spec), ipfsnode.PebbleType) {
		t.Fatalf("new repo's datastore_spec %q (%v), want %s", spec, err, ipfsnode.PebbleType)
	}

	d := n.daemon(t)
	api, err := os.ReadFile(ipfsnode.APIFile(n.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	cliEnv := []string{"IPFS_PATH=" + t.TempDir()}
	cli := func(args ...string) string {
		return run(t, cliEnv, ipfsBin, append([]string{"--api", strings.TrimSpace(string(api))}, args...)...)
	}
	local := func() map[string]bool {
		set := map[string]bool{}
		for _, c := range strings.Fields(cli("refs", "local")) {
			set[c] = true
		}
		return set
	}
	junk := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(junk, []byte("not pinned by anyone "+t.Name()), 0o600); err != nil {
		t.Fatal(err)
	}
	stray := strings.TrimSpace(cli("block", "put", junk))
	if !local()[stray] {
		t.Fatalf("the stray block %s is not in refs local", stray)
	}
	n.nixipfs(t, "gc", "--apply", "--collect")
	if local()[stray] {
		t.Fatalf("repo gc through the daemon left the unpinned block %s", stray)
	}
	for _, r := range res {
		cli("dag", "stat", "--progress=false", r.PathInfo)
	}
	d.stop()

	// In process, on the closed repo: nothing pinned goes.
	_, stderr, err := runErr(nil, nixipfsBin, n.args("gc", "--apply", "--collect")...)
	if err != nil || !strings.Contains(stderr, "repo gc: removed 0 blocks") {
		t.Fatalf("embedded repo gc: %v\n%s", err, stderr)
	}
	// status reports the datastore and its size on disk, blob files (the
	// blocks) included.
	var blobs int64
	files, _ := filepath.Glob(filepath.Join(n.dataDir, "ipfs", "pebble", "*.blob"))
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			blobs += st.Size()
		}
	}
	var st struct {
		Node struct {
			Datastore string
			RepoBytes int64
		}
	}
	if err := json.Unmarshal([]byte(n.nixipfs(t, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Node.Datastore != ipfsnode.PebbleType || blobs == 0 || st.Node.RepoBytes < blobs {
		t.Fatalf("status: datastore %q, %d bytes on disk; the blob files alone hold %d", st.Node.Datastore, st.Node.RepoBytes, blobs)
	}
	for _, r := range res {
		nar := n.nixipfs(t, "nar", "render", r.Root)
		want := run(t, nil, "nix-store", "--dump", store+r.StorePath)
		if nar != want {
			t.Fatalf("%s renders to %d bytes after repo gc, Nix dumps %d", r.StorePath, len(nar), len(want))
		}
	}
}
