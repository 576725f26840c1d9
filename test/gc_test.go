package test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nixipfs/nixipfs/internal/nixtest"
)

type gcItem struct {
	StorePath string `json:"storePath"`
	Root      string `json:"root"`
	Replicas  int    `json:"replicas"`
	Unpinned  bool   `json:"unpinned"`
	Reason    string `json:"reason"`
}

func (n *node) gc(t *testing.T, args ...string) []gcItem {
	t.Helper()
	var items []gcItem
	out := n.nixipfs(t, append([]string{"gc", "--json", "--timeout", "5s"}, args...)...)
	if err := json.Unmarshal([]byte(out), &items); err != nil {
		t.Fatalf("gc --json: %v: %s", err, out)
	}
	return items
}

// waitProviders polls k's provider search until root has want providers
// besides k itself.
func waitProviders(t *testing.T, k *kubo, root string, want int) {
	t.Helper()
	self := strings.TrimSpace(k.ipfs(t, "id", "-f", "<id>"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := 0
		for _, p := range strings.Fields(k.ipfs(t, "routing", "findprovs", "--num-providers", "5", root)) {
			if p != self {
				n++
			}
		}
		if n >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d providers after 30 s, want %d", root, n, want)
		}
		time.Sleep(200 * time.Millisecond) // polling a condition with a deadline
	}
}

// TestGCReplicas drops a path from A's manifest and checks that gc unpins
// it only once two other peers provide it: with one replica it stays.
func TestGCReplicas(t *testing.T) {
	nixEnv(t)
	ka, r1, r2 := startKubo(t), startKubo(t), startKubo(t)
	for _, r := range []*kubo{r1, r2} {
		r.ipfs(t, "swarm", "connect", ka.peerAddr(t))
	}
	store := nixtest.Store(t)
	p := nixtest.AddTree(t, store, "dropped", map[string]string{"f": strings.Repeat("x", 5000)})
	kept := nixtest.AddTree(t, store, "kept", map[string]string{"g": "y"})
	a := newNode(t, store, ka)
	res := a.publish(t, p, kept)
	root := res[0].Root
	if res[0].StorePath != p {
		root = res[1].Root
	}
	a.nixipfs(t, "manifest", "rm", p)
	pinned := func() bool { return strings.Contains(ka.ipfs(t, "pin", "ls", "--type", "recursive", "-q"), root) }

	// No replica: dry run and --apply both keep it.
	for _, args := range [][]string{{"--min-replicas", "1"}, {"--min-replicas", "1", "--apply"}} {
		items := a.gc(t, args...)
		if len(items) != 1 || items[0].StorePath != p || items[0].Unpinned || items[0].Replicas != 0 {
			t.Fatalf("gc %v with no replica: %+v", args, items)
		}
	}
	if !pinned() {
		t.Fatal("unpinned with no replica")
	}

	// One replica: enough for --min-replicas 1 in a dry run, not for 2.
	r1.ipfs(t, "pin", "add", root)
	waitProviders(t, ka, root, 1)
	if items := a.gc(t, "--min-replicas", "1"); len(items) != 1 || items[0].Replicas < 1 || items[0].Unpinned || !strings.Contains(items[0].Reason, "would unpin") {
		t.Fatalf("dry run with one replica: %+v", items)
	}
	if items := a.gc(t, "--min-replicas", "2", "--apply"); len(items) != 1 || items[0].Unpinned {
		t.Fatalf("gc --min-replicas 2 with one replica: %+v", items)
	}
	if !pinned() {
		t.Fatal("unpinned with one replica and --min-replicas 2")
	}

	// Two replicas: unpinned; the path still in the manifest is untouched.
	r2.ipfs(t, "pin", "add", root)
	waitProviders(t, ka, root, 2)
	if items := a.gc(t, "--min-replicas", "2", "--apply"); len(items) != 1 || !items[0].Unpinned || items[0].Replicas < 2 {
		t.Fatalf("gc --min-replicas 2 with two replicas: %+v", items)
	}
	if pinned() {
		t.Fatal("still pinned after gc with two replicas")
	}
	if items := a.gc(t, "--min-replicas", "1"); len(items) != 0 {
		t.Fatalf("gc after unpinning still lists %+v", items)
	}
}
