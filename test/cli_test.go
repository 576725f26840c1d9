package test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/nixipfs/nixipfs/internal/nixtest"
)

// TestManifestCommands drives the operator commands: manifest show, get,
// history, diff, follow add/ls/rm, and the daemon's --trusted-key policy.
func TestManifestCommands(t *testing.T) {
	nixEnv(t)
	store := nixtest.Store(t)
	one := nixtest.AddTree(t, store, "one", map[string]string{"a": "1"})
	two := nixtest.AddTree(t, store, "two", map[string]string{"b": "2"})
	key, pub := newKey(t, "nixipfs-test-1")
	n := newNode(t, store, nil)
	n.publish(t, one)
	n.publish(t, "--sign-key", key, two)

	var show struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Seq     int    `json:"seq"`
		Paths   int    `json:"paths"`
	}
	if err := json.Unmarshal([]byte(n.nixipfs(t, "manifest", "show", "--json")), &show); err != nil {
		t.Fatal(err)
	}
	if show.Seq != 2 || show.Paths != 2 || !strings.HasPrefix(show.Name, "k51") {
		t.Fatalf("manifest show: %+v", show)
	}

	var rec map[string]any
	if err := json.Unmarshal([]byte(n.nixipfs(t, "manifest", "get", "--json", two)), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["storePath"] != two || len(rec["signatures"].([]any)) != 1 {
		t.Fatalf("manifest get: %v", rec)
	}
	// The same record under its NarHash key.
	if byHash := n.nixipfs(t, "manifest", "get", rec["narHash"].(string)); !strings.Contains(byHash, "StorePath: "+two) {
		t.Fatalf("get by NarHash: %s", byHash)
	}

	var hist []struct {
		Version string `json:"version"`
		Seq     int    `json:"seq"`
	}
	if err := json.Unmarshal([]byte(n.nixipfs(t, "manifest", "history", "--json")), &hist); err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Seq != 2 || hist[1].Seq != 1 || hist[0].Version != show.Version {
		t.Fatalf("history: %+v", hist)
	}
	var changes []struct{ Key, Old, New string }
	if err := json.Unmarshal([]byte(n.nixipfs(t, "manifest", "diff", "--json", hist[1].Version, "current")), &changes); err != nil {
		t.Fatal(err)
	}
	if len(changes) != 3 { // p/, sha256/ and blake3/ keys of "two"
		t.Fatalf("diff: %+v", changes)
	}
	for _, c := range changes {
		if c.Old != "" || c.New == "" {
			t.Errorf("diff change %+v is not an addition", c)
		}
	}

	// follow add/ls/rm validate and record names.
	if _, stderr, err := runErr(nil, nixipfsBin, n.args("follow", "add", "not-a-name")...); err == nil || !strings.Contains(stderr, "not-a-name") {
		t.Fatalf("follow add of a bad name: %v %s", err, stderr)
	}
	n.nixipfs(t, "follow", "add", "/ipns/"+show.Name)
	if ls := strings.TrimSpace(n.nixipfs(t, "follow", "ls")); ls != show.Name {
		t.Fatalf("follow ls: %q", ls)
	}
	n.nixipfs(t, "follow", "rm", show.Name)
	if ls := strings.TrimSpace(n.nixipfs(t, "follow", "ls")); ls != "" {
		t.Fatalf("follow ls after rm: %q", ls)
	}

	// With --trusted-key only the signed path is served.
	gw := n.daemon(t, "--trusted-key", pub).url
	narinfo(t, gw, two)
	if code := status(t, gw+"/"+strings.SplitN(strings.TrimPrefix(one, "/nix/store/"), "-", 2)[0]+".narinfo"); code != 404 {
		t.Fatalf("unsigned path under --trusted-key: %d", code)
	}
}
