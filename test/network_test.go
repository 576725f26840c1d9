package test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nixipfs/nixipfs/internal/nixtest"
)

func loopbackPeer(t testing.TB, d running) string {
	t.Helper()
	for _, p := range d.peers {
		if strings.HasPrefix(p, "/ip4/127.0.0.1/tcp/") {
			return p
		}
	}
	t.Fatalf("daemon printed no loopback peer address: %v", d.peers)
	return ""
}

// ipnsNameOf is the manifest name of the node at a /p2p/ multiaddr.
func ipnsNameOf(t *testing.T, addr string) string {
	t.Helper()
	id, err := peer.Decode(addr[strings.LastIndex(addr, "/")+1:])
	if err != nil {
		t.Fatal(err)
	}
	return ipns.NameFromPeer(id).String()
}

func (n *node) peerNames(t *testing.T) []string {
	t.Helper()
	out, _, err := runErr(nil, nixipfsBin, n.args("peers", "--json")...)
	if err != nil {
		return nil // not written yet
	}
	var ps []struct{ Name string }
	json.Unmarshal([]byte(out), &ps)
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	return names
}

// TestNetwork is the named-network acceptance scenario with three nodes on
// loopback, each with its own IPFS repo and Nix store, joined to network
// "t" and connected only by explicit peer addresses.
func TestNetwork(t *testing.T) {
	nixEnv(t)
	key, pub := newKey(t, "trusted-1")
	// The daemons take Nix's trusted-public-keys as the network's keys.
	t.Setenv("NIX_CONFIG", nixtest.Config+"\ntrusted-public-keys = "+pub+"\n")
	net := []string{"--network", "t", "--announce-interval", "300ms", "--peer-timeout", "3s", "--follow-interval", "300ms"}

	storeA := nixtest.Store(t)
	a := newNode(t, storeA, nil)
	da := a.daemon(t, append(net, "--watch-store=all", "--watch-interval", "200ms")...)
	aPeer := loopbackPeer(t, da)
	aName := ipnsNameOf(t, aPeer)
	b := newNode(t, "", nil)
	db := b.daemon(t, append(net, "--peer", aPeer)...)
	c := newNode(t, "", nil)
	dc := c.daemon(t, append(net, "--peer", aPeer, "--peer", loopbackPeer(t, db), "--trust-publisher", aName)...)

	// A signed path appears in A's store: B and C serve it within 10 s, no
	// follow command needed, and stock nix substitutes it from C.
	signed := nixtest.AddTree(t, storeA, "signed", map[string]string{"data": "signed by the trusted key\n"})
	run(t, nil, "nix", "--extra-experimental-features", "nix-command", "store", "sign", "--store", storeA, "--key-file", key, signed)
	took := waitServed(t, db.url, signed, 10*time.Second)
	waitServed(t, dc.url, signed, 10*time.Second)
	t.Logf("signed path served by B %s after it was signed in A's store", took)
	storeD := nixtest.Store(t)
	nixCopy := func(gw, to, p string) error {
		_, stderr, err := runErr([]string{"NIX_CONFIG=" + nixtest.Config + "\nrequire-sigs = true\ntrusted-public-keys = " + pub + "\n"},
			"nix", "--extra-experimental-features", "nix-command", "copy", "--from", gw, "--to", to, p)
		if err != nil {
			return fmt.Errorf("%v: %s", err, stderr)
		}
		return nil
	}
	if err := nixCopy(dc.url, storeD, signed); err != nil {
		t.Fatalf("nix copy from C: %v", err)
	}

	// An unsigned path: published by A (--watch-store=all); B (default
	// policy) does not serve it, C (which trusts A as a publisher) does.
	unsigned := nixtest.AddTree(t, storeA, "unsigned", map[string]string{"data": "nobody signed this\n"})
	waitServed(t, dc.url, unsigned, 10*time.Second)
	if code := status(t, db.url+"/"+hashOf(unsigned)+".narinfo"); code != 404 {
		t.Fatalf("B serves an unsigned path of a network peer: %d", code)
	}

	// Latency from a path appearing (signed) in A's store to a successful
	// nix copy from C. The gateway is polled over HTTP first: a nix copy
	// that runs too early caches the 404 (narinfo-cache-negative-ttl).
	var lat []time.Duration
	for i := range 20 {
		start := time.Now()
		p := nixtest.AddTree(t, storeA, fmt.Sprintf("lat%d", i), map[string]string{"i": fmt.Sprint(i)})
		run(t, nil, "nix", "--extra-experimental-features", "nix-command", "store", "sign", "--store", storeA, "--key-file", key, p)
		waitServed(t, dc.url, p, 20*time.Second)
		if err := nixCopy(dc.url, nixtest.Store(t), p); err != nil {
			t.Fatalf("path %d: nix copy from C: %v", i, err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	t.Logf("store-to-nix-copy latency over %d paths: p50 %s, max %s", len(lat), lat[len(lat)/2], lat[len(lat)-1])

	// A path only A holds: B serves it while A is there.
	aOnly := nixtest.AddTree(t, storeA, "a-only", map[string]string{"data": "only on A\n"})
	run(t, nil, "nix", "--extra-experimental-features", "nix-command", "store", "sign", "--store", storeA, "--key-file", key, aOnly)
	waitServed(t, db.url, aOnly, 10*time.Second)

	if names := b.peerNames(t); !slices.Contains(names, aName) {
		t.Fatalf("B's peers %v lack A", names)
	}
	// Stop A: B and C drop it after the timeout; C keeps serving what it
	// served (its pins), B's narinfo for A-only paths is a fast 404.
	da.stop()
	deadline := time.Now().Add(15 * time.Second)
	for slices.Contains(b.peerNames(t), aName) || slices.Contains(c.peerNames(t), aName) {
		if time.Now().After(deadline) {
			t.Fatalf("A still listed 15 s after it stopped: B %v, C %v", b.peerNames(t), c.peerNames(t))
		}
		time.Sleep(200 * time.Millisecond) // polling a condition with a deadline
	}
	start := time.Now()
	if code := status(t, db.url+"/"+hashOf(aOnly)+".narinfo"); code != 404 {
		t.Fatalf("B still answers %d for an A-only path", code)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("B's 404 took %s", d)
	}
	if err := nixCopy(dc.url, nixtest.Store(t), signed); err != nil {
		t.Fatalf("C no longer serves what it served before A left: %v", err)
	}
}

func hashOf(storePath string) string {
	return strings.SplitN(strings.TrimPrefix(storePath, "/nix/store/"), "-", 2)[0]
}
