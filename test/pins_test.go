package test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixipfs/nixipfs/internal/nixtest"
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
