package test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/nixtest"
)

// peerAddr is a loopback multiaddr of an external kubo, with its peer id.
func (k *kubo) peerAddr(t testing.TB) string {
	t.Helper()
	for _, a := range strings.Fields(k.ipfs(t, "id", "-f", "<addrs>\n")) {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			return a
		}
	}
	t.Fatal("kubo has no loopback tcp address")
	return ""
}

// manifestName returns the node's manifest IPNS name.
func (n *node) manifestName(t testing.TB) string {
	t.Helper()
	var show struct {
		Name string `json:"name"`
	}
	out := n.nixipfs(t, "manifest", "show", "--json")
	if err := json.Unmarshal([]byte(out), &show); err != nil || show.Name == "" {
		t.Fatalf("manifest show: %v: %s", err, out)
	}
	return show.Name
}

// waitServed polls a gateway until it answers the narinfo of storePath,
// failing after within. It returns how long that took.
func waitServed(t testing.TB, gw, storePath string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	url := gw + "/" + strings.SplitN(filepath.Base(storePath), "-", 2)[0] + ".narinfo"
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start)
			}
		}
		if time.Since(start) > within {
			t.Fatalf("%s not served by %s within %s", storePath, gw, within)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a condition with a deadline
	}
}

// follow is the acceptance scenario: B follows A's IPNS name over an
// explicit loopback peer address and serves A's closure to stock nix; a new
// path published on A is served by B within 5 s.
func follow(t *testing.T, externalA bool) {
	nixEnv(t)
	storeA := nixtest.Store(t)
	top, all := nixtest.BuildClosure(t, storeA)
	nixtest.Sign(t, storeA, "original-1", all...)
	ourKey, ourPub := newKey(t, "nixipfs-test-1")

	var a *node
	var aPeer string
	if externalA {
		k := startKubo(t)
		a = newNode(t, storeA, k)
		aPeer = k.peerAddr(t)
	} else {
		a = newNode(t, storeA, nil)
		d := a.daemon(t)
		for _, p := range d.peers {
			if strings.HasPrefix(p, "/ip4/127.0.0.1/tcp/") {
				aPeer = p
			}
		}
		if aPeer == "" {
			t.Fatalf("daemon A printed no loopback peer address: %v", d.peers)
		}
	}
	a.publish(t, "--sign-key", ourKey, top)
	name := a.manifestName(t)

	b := newNode(t, "", nil) // no access to A's Nix store
	gwB := b.daemon(t, "--peer", aPeer, "--follow", name).url
	waitServed(t, gwB, top, 30*time.Second)

	copyVerified(t, gwB, storeA, ourPub, top, all)

	// A new path on A reaches B's gateway within 5 s; the old ones stay.
	fresh := nixtest.AddTree(t, storeA, "fresh", map[string]string{"hello": "world\n"})
	a.publish(t, "--sign-key", ourKey, fresh)
	took := waitServed(t, gwB, fresh, 5*time.Second)
	t.Logf("new path served by the follower %s after publish returned", took)
	waitServed(t, gwB, top, 0)
}

// copyVerified copies top's closure with stock nix from gateway gw into a
// fresh store that requires signatures and trusts only pub, and checks each
// of all has the NarHash it has in storeA.
func copyVerified(t *testing.T, gw, storeA, pub, top string, all []string) {
	t.Helper()
	storeC := nixtest.Store(t)
	t.Setenv("NIX_CONFIG", nixtest.Config+"\nrequire-sigs = true\ntrusted-public-keys = "+pub+"\n")
	defer t.Setenv("NIX_CONFIG", nixtest.Config)
	run(t, nil, "nix", "--extra-experimental-features", "nix-command", "copy", "--from", gw, "--to", storeC, top)
	for _, p := range all {
		if pa, pc := pathInfo(t, storeA, p), pathInfo(t, storeC, p); pa.NarHash != pc.NarHash {
			t.Errorf("%s: NarHash %s copied from %s, %s in %s", p, pc.NarHash, gw, pa.NarHash, storeA)
		}
	}
}

func TestFollowEmbedded(t *testing.T)  { follow(t, false) }
func TestFollowExternalA(t *testing.T) { follow(t, true) }

// TestCARRoundTrip exports a closure on A and imports it into an offline
// node C with no peers, whose gateway then serves it to stock nix.
func TestCARRoundTrip(t *testing.T) {
	nixEnv(t)
	storeA := nixtest.Store(t)
	top, all := nixtest.BuildClosure(t, storeA)
	key, pub := newKey(t, "nixipfs-test-1")
	a := newNode(t, storeA, nil)
	a.publish(t, "--sign-key", key, top)
	car := filepath.Join(t.TempDir(), "closure.car")
	a.nixipfs(t, "export", "--car", car, top)

	c := newNode(t, "", nil)
	var res []publishResult
	if err := json.Unmarshal([]byte(c.nixipfs(t, "import", "--json", car)), &res); err != nil {
		t.Fatal(err)
	}
	if len(res) != len(all) {
		t.Fatalf("import recorded %d paths, the closure has %d", len(res), len(all))
	}
	// The import rendered and hashed each DAG: C records what each root
	// renders to, and its gateway will not hash those NARs.
	cn, err := ipfsnode.Open(ctx(t), ipfsnode.Options{DataDir: c.dataDir})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		pi := pathInfo(t, storeA, r.StorePath)
		h, err := nixbase32.DecodeString(strings.TrimPrefix(pi.NarHash, "sha256:"))
		if err != nil {
			t.Fatal(err)
		}
		if !cn.Rendered(ctx(t), cid.MustParse(r.Root), int64(pi.NarSize), h) {
			t.Errorf("%s: no record of what its root renders to", r.StorePath)
		}
	}
	cn.Close()
	gw := c.daemon(t).url
	storeD := nixtest.Store(t)
	t.Setenv("NIX_CONFIG", nixtest.Config+"\nrequire-sigs = true\ntrusted-public-keys = "+pub+"\n")
	run(t, nil, "nix", "--extra-experimental-features", "nix-command", "copy", "--from", gw, "--to", storeD, top)
	if pa, pd := pathInfo(t, storeA, top), pathInfo(t, storeD, top); pa.NarHash != pd.NarHash {
		t.Errorf("NarHash %s after the CAR trip, %s before", pd.NarHash, pa.NarHash)
	}

	// A CAR with a flipped byte is refused and records nothing.
	bad := filepath.Join(t.TempDir(), "bad.car")
	data := readFile(t, car)
	data[len(data)-10] ^= 0xff
	writeFile(t, bad, data)
	e := newNode(t, "", nil)
	if _, stderr, err := runErr(nil, nixipfsBin, e.args("import", bad)...); err == nil || !strings.Contains(stderr, "import CAR") {
		t.Fatalf("corrupt CAR: err %v, stderr %s", err, stderr)
	}
	var show struct {
		Paths int `json:"paths"`
	}
	json.Unmarshal([]byte(e.nixipfs(t, "manifest", "show", "--json")), &show)
	if show.Paths != 0 {
		t.Fatalf("a corrupt CAR recorded %d paths", show.Paths)
	}
}
