package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixipfs/nixipfs/internal/nixtest"
	"github.com/nixipfs/nixipfs/internal/remotepin"
)

// clusterPeer is one ipfs-cluster-service (built from scripts/tools/cluster
// into .bin/) over its own kubo, everything on loopback.
type clusterPeer struct {
	path    string
	id      string
	swarm   string // its cluster libp2p address, /ip4/127.0.0.1/tcp/N/p2p/ID
	restURL string // REST API
	// pinsvcURL is its Pinning Service API
	pinsvcURL string
	kubo      *kubo
	log       string
}

func clusterBin(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(repoRoot, ".bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is not built at %s: run scripts/install-deps", name, p)
	}
	return p
}

func (c *clusterPeer) env() []string { return []string{"IPFS_CLUSTER_PATH=" + c.path} }

// editJSON applies edit to a JSON file.
func editJSON(t testing.TB, file string, edit func(m map[string]any)) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(readFile(t, file), &m); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	edit(m)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, file, b)
}

func obj(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		m = m[k].(map[string]any)
	}
	return m
}

// startCluster starts n cluster peers, each over a fresh kubo, sharing a
// secret and knowing each other by explicit loopback addresses: no mDNS,
// no relay service, nothing listening beyond 127.0.0.1. The kubos have no
// content routing, so a provider search finds none of their copies: what
// gc counts of them comes from the cluster. It returns once every peer
// sees all the others.
// With auth (user:password), the REST and Pinning Service APIs require it.
func startCluster(t *testing.T, n int, auth string) []*clusterPeer {
	t.Helper()
	service := clusterBin(t, "ipfs-cluster-service")
	peers := make([]*clusterPeer, n)
	secret := ""
	for i := range peers {
		k := newKubo(t)
		k.ipfs(t, "config", "Routing.Type", "none")
		k.start(t)
		c := &clusterPeer{path: t.TempDir(), kubo: k}
		run(t, c.env(), service, "init", "--consensus", "crdt")
		var ident struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(readFile(t, filepath.Join(c.path, "identity.json")), &ident); err != nil {
			t.Fatal(err)
		}
		c.id = ident.ID
		c.swarm = "/ip4/127.0.0.1/tcp/" + freePort(t) + "/p2p/" + c.id
		c.restURL = "http://127.0.0.1:" + freePort(t)
		peers[i] = c
	}
	for i, c := range peers {
		editJSON(t, filepath.Join(c.path, "service.json"), func(m map[string]any) {
			cl := obj(m, "cluster")
			if secret == "" {
				secret = cl["secret"].(string)
			}
			cl["secret"] = secret
			cl["peername"] = fmt.Sprintf("peer%d", i)
			cl["listen_multiaddress"] = []string{strings.TrimSuffix(c.swarm, "/p2p/"+c.id)}
			cl["mdns_interval"] = "0s"
			cl["enable_relay_hop"] = false
			cl["monitor_ping_interval"] = "1s"
			cl["peer_watch_interval"] = "1s"
			var others []string
			for j, o := range peers {
				if j != i {
					others = append(others, o.swarm)
				}
			}
			cl["peer_addresses"] = others
			kuboAPI := c.kubo.api
			obj(m, "api", "restapi")["http_listen_multiaddress"] = "/ip4/127.0.0.1/tcp/" + c.restURL[strings.LastIndex(c.restURL, ":")+1:]
			c.pinsvcURL = "http://127.0.0.1:" + freePort(t)
			obj(m, "api", "pinsvcapi")["http_listen_multiaddress"] = "/ip4/127.0.0.1/tcp/" + c.pinsvcURL[strings.LastIndex(c.pinsvcURL, ":")+1:]
			if user, pass, ok := strings.Cut(auth, ":"); ok {
				obj(m, "api", "restapi")["basic_auth_credentials"] = map[string]string{user: pass}
				obj(m, "api", "pinsvcapi")["basic_auth_credentials"] = map[string]string{user: pass}
			}
			obj(m, "api", "ipfsproxy")["listen_multiaddress"] = "/ip4/127.0.0.1/tcp/" + freePort(t)
			obj(m, "api", "ipfsproxy")["node_multiaddress"] = kuboAPI
			obj(m, "ipfs_connector", "ipfshttp")["node_multiaddress"] = kuboAPI
			obj(m, "ipfs_connector", "ipfshttp")["connect_swarms_delay"] = "1s"
			obj(m, "monitor", "pubsubmon")["check_interval"] = "1s"
		})
	}
	for i, c := range peers {
		cmd := exec.Command(service, "daemon")
		cmd.Env = append(os.Environ(), c.env()...)
		c.log = filepath.Join(t.TempDir(), fmt.Sprintf("cluster%d.log", i))
		logf, err := os.Create(c.log)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatalf("start ipfs-cluster-service: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); logf.Close(); close(exited) }()
		t.Cleanup(func() {
			stop(cmd, exited)
			if t.Failed() {
				t.Logf("cluster peer %d log:\n%s", i, tail(readFile(t, c.log), 4000))
			}
		})
	}
	// Every peer sees the others (their metrics too: pins need them to
	// allocate).
	deadline := time.Now().Add(90 * time.Second)
	for _, c := range peers {
		for {
			args := []string{"--host", "/ip4/127.0.0.1/tcp/" + c.restURL[strings.LastIndex(c.restURL, ":")+1:], "peers", "ls"}
			if auth != "" {
				args = append([]string{"--basic-auth", auth, "--force-http"}, args...)
			}
			out, _, err := runErr(nil, clusterBin(t, "ipfs-cluster-ctl"), args...)
			if err == nil && strings.Count(out, fmt.Sprintf("Sees %d other peers", n-1)) == n {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster peers do not see each other after 90 s:\n%s", out)
			}
			time.Sleep(250 * time.Millisecond) // polling a condition with a deadline
		}
	}
	return peers
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// clusterCtl runs ipfs-cluster-ctl against peer c.
func (c *clusterPeer) ctl(t testing.TB, args ...string) string {
	t.Helper()
	host := "/ip4/127.0.0.1/tcp/" + c.restURL[strings.LastIndex(c.restURL, ":")+1:]
	return run(t, nil, clusterBin(t, "ipfs-cluster-ctl"), append([]string{"--host", host}, args...)...)
}

// pinnedOn lists the peers whose kubo holds cid pinned, as the cluster
// reports it (GET /pins/{cid}).
func (c *clusterPeer) pinnedOn(t testing.TB, cid string) []string {
	t.Helper()
	res, err := http.Get(c.restURL + "/pins/" + cid)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var gpi struct {
		PeerMap map[string]struct {
			IPFS   string `json:"ipfs_peer_id"`
			Status string `json:"status"`
		} `json:"peer_map"`
	}
	if err := json.NewDecoder(res.Body).Decode(&gpi); err != nil {
		t.Fatalf("cluster status of %s: %v", cid, err)
	}
	var out []string
	for _, p := range gpi.PeerMap {
		if p.Status == "pinned" {
			out = append(out, p.IPFS)
		}
	}
	return out
}

// remotePinned counts n's entries pinned with holders holders each (paths,
// and the manifest's entries apart), as `nixipfs status --json` shows them.
func remotePinned(t testing.TB, n *node, holders int) (paths, manifests int) {
	t.Helper()
	r := n.status(t).RemotePins
	if r == nil {
		return 0, 0
	}
	for _, e := range r.Entries {
		if e.State == remotepin.StatePinned && e.Holders == holders {
			if e.ManifestEntry() {
				manifests++
			} else {
				paths++
			}
		}
	}
	return paths, manifests
}

// waitRemotePinned waits until want path entries and at least one
// manifest entry are pinned with holders holders each.
func waitRemotePinned(t *testing.T, n *node, want, holders int, within time.Duration) time.Duration {
	t.Helper()
	return waitUntil(t, fmt.Sprintf("%d remote pins on %d holders", want, holders), within, func() bool {
		p, m := remotePinned(t, n, holders)
		return p == want && m > 0
	})
}

// TestClusterReplication is the acceptance scenario of replicated pins: a
// three-peer IPFS Cluster over three kubo daemons on loopback. A closure
// published on A is pinned by the cluster on exactly the two peers asked
// for; with A stopped, another gateway serves the closure to stock nix from
// the cluster's peers; gc --min-replicas 2 unpins only what the cluster
// holds twice.
func TestClusterReplication(t *testing.T) {
	nixEnv(t)
	cl := startCluster(t, 3, "")
	var kuboPeers []string
	for _, c := range cl {
		kuboPeers = append(kuboPeers, "--peer", c.kubo.peerAddr(t))
	}
	storeA := nixtest.Store(t)
	top, all := nixtest.BuildClosure(t, storeA)
	twice := nixtest.AddTree(t, storeA, "held-twice", map[string]string{"f": strings.Repeat("2", 3000)})
	once := nixtest.AddTree(t, storeA, "held-once", map[string]string{"f": strings.Repeat("1", 3000)})
	nixtest.Sign(t, storeA, "original-1", all...)
	ourKey, ourPub := newKey(t, "nixipfs-test-1")

	// Cluster peer 1's API: any peer's does, the pinset is shared.
	pinFlags := []string{"--pin-cluster", cl[1].restURL, "--pin-replication", "2"}
	a := newNode(t, storeA, nil)
	da := a.daemon(t, append(append([]string{}, pinFlags...), kuboPeers...)...)
	aPeer := loopbackPeer(t, da)
	res := a.publish(t, "--sign-key", ourKey, top, twice, once)
	if len(res) != len(all)+2 {
		t.Fatalf("published %d paths, want %d", len(res), len(all)+2)
	}
	took := waitRemotePinned(t, a, len(res), 2, 3*time.Minute)
	t.Logf("%d paths pinned on 2 cluster peers %s after publish returned", len(res), took)

	// The cluster holds every path's PathInfo and DAG root on exactly two
	// of its three kubos, and those kubos have it pinned.
	kuboOf := map[string]*kubo{}
	for _, c := range cl {
		kuboOf[strings.TrimSpace(c.kubo.ipfs(t, "id", "-f", "<id>"))] = c.kubo
	}
	roots := map[string]string{}
	for _, p := range res {
		roots[p.StorePath] = p.Root
		for _, c := range []string{p.PathInfo, p.Root} {
			on := cl[0].pinnedOn(t, c)
			if len(on) != 2 {
				t.Fatalf("%s (%s): pinned on %d cluster peers, want 2", p.StorePath, c, len(on))
			}
			for _, id := range on {
				k := kuboOf[id]
				if k == nil {
					t.Fatalf("%s pinned by %s, not one of the cluster's kubos", c, id)
				}
				if !strings.Contains(k.ipfs(t, "pin", "ls", "--type", "recursive", "-q"), c) {
					t.Fatalf("the cluster says %s holds %s, its kubo has no such pin", id, c)
				}
			}
		}
	}

	// B follows A while A is up (to learn the manifest's current
	// version), connected to A and the cluster's kubos; B has none of
	// the closure. Then A's IPFS node stops.
	name := a.manifestName(t)
	b := newNode(t, "", nil)
	gwB := b.daemon(t, append([]string{"--peer", aPeer, "--follow", name}, kuboPeers...)...).url
	waitUntil(t, "B resolves A's manifest", 30*time.Second, func() bool {
		for _, f := range b.status(t).Followed {
			if f.Name == name && f.Version != "" {
				return true
			}
		}
		return false
	})
	da.stop()
	copyVerified(t, gwB, storeA, ourPub, top, all)

	// GC on A: both trees leave the manifest; an operator re-pins one
	// with replication 1 on the cluster. gc --min-replicas 2 unpins the one
	// the cluster holds twice and keeps the other.
	a.daemon(t, append(append([]string{}, pinFlags...), kuboPeers...)...)
	a.nixipfs(t, "manifest", "rm", twice, once)
	// Status lists recorded paths only: the dropped ones leave it (their
	// cluster pins stay, for gc to count).
	waitUntil(t, "dropped paths leave the remote pin status", 30*time.Second, func() bool {
		p, _ := remotePinned(t, a, 2)
		return p == len(res)-2
	})
	// Removed, then pinned anew with replication 1: the cluster does not
	// always shed an allocation when an existing pin's factor is lowered.
	cl[2].ctl(t, "pin", "rm", "--no-status", roots[once])
	waitUntil(t, "the cluster drops "+once, time.Minute, func() bool { return len(cl[0].pinnedOn(t, roots[once])) == 0 })
	cl[2].ctl(t, "pin", "add", "--no-status", "--replication", "1", "--name", "held-once, replication lowered", roots[once])
	waitUntil(t, "the cluster holds "+once+" once", time.Minute, func() bool { return len(cl[0].pinnedOn(t, roots[once])) == 1 })
	gcArgs := append([]string{"--pin-cluster", cl[0].restURL}, "--min-replicas", "2")
	items := a.gc(t, append(gcArgs, "--apply")...)
	got := map[string]gcItem{}
	for _, it := range items {
		got[it.StorePath] = it
	}
	if len(items) != 2 || !got[twice].Unpinned || got[twice].Replicas != 2 || got[once].Unpinned || got[once].Replicas != 1 {
		t.Fatalf("gc --min-replicas 2 --apply: %+v", items)
	}
	if items := a.gc(t, "--min-replicas", "1"); len(items) != 1 || items[0].StorePath != once {
		t.Fatalf("after gc only %s should be left to collect: %+v", once, items)
	}
}

// TestPinServiceAndRestart pins through both remotes of a one-peer cluster
// that requires credentials: its REST API (basic auth from a file) and its
// Pinning Service API (a bearer token from a file). A world-readable token
// file is refused; a wrong token leaves the service's pins failed with the
// reason in status while the cluster's go through; after a SIGKILL the
// daemon, restarted with the right token, finishes them from its state.
func TestPinServiceAndRestart(t *testing.T) {
	nixEnv(t)
	cl := startCluster(t, 1, "nix:s3cret")
	c := cl[0]
	store := nixtest.Store(t)
	p1 := nixtest.AddTree(t, store, "svc-one", map[string]string{"a": "one"})
	p2 := nixtest.AddTree(t, store, "svc-two", map[string]string{"b": "two"})
	dir := t.TempDir()
	authFile, tokenFile := filepath.Join(dir, "cluster-auth"), filepath.Join(dir, "token")
	if err := os.WriteFile(authFile, []byte("nix:s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("not-the-token\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := newNode(t, store, nil)
	flags := []string{"--pin-cluster", c.restURL, "--pin-cluster-auth-file", authFile, "--pin-replication", "-1",
		"--pin-service", c.pinsvcURL, "--pin-service-token-file", tokenFile, "--peer", c.kubo.peerAddr(t)}
	name, argv := a.command(append([]string{"daemon", "--listen", "127.0.0.1:0"}, flags...)...)
	if _, errOut, err := runErr(nil, name, argv...); err == nil || !strings.Contains(errOut, "chmod 600") {
		t.Fatalf("daemon with a world-readable token file: %v %s", err, errOut)
	}
	if err := os.Chmod(tokenFile, 0o600); err != nil {
		t.Fatal(err)
	}

	d := a.daemon(t, flags...)
	res := a.publish(t, p1, p2)
	// Two paths and the manifest on each remote: the service's fail, the
	// cluster's are pinned.
	waitUntil(t, "service pins failed with 401, cluster pins pinned", time.Minute, func() bool {
		r := a.status(t).RemotePins
		if r == nil {
			return false // no round saved yet
		}
		failed, pinned := 0, 0
		for _, e := range r.Entries {
			switch {
			case e.State == remotepin.StateFailed && strings.Contains(e.Error, "401") && strings.HasPrefix(e.Remote, "service "):
				failed++
			case e.State == remotepin.StatePinned && strings.HasPrefix(e.Remote, "cluster "):
				pinned++
			}
		}
		return failed == 3 && pinned == 3
	})
	if text := a.nixipfs(t, "status"); !strings.Contains(text, "failed on service "+c.pinsvcURL) {
		t.Fatalf("status does not show the failed service pins:\n%s", text)
	}
	d.kill()

	tok := clusterToken(t, c.pinsvcURL, "nix", "s3cret")
	writeFile(t, tokenFile, []byte(tok+"\n"))
	a.daemon(t, flags...)
	waitRemotePinned(t, a, 2*len(res), 1, 2*time.Minute)
	pins := c.kubo.ipfs(t, "pin", "ls", "--type", "recursive", "-q")
	for _, p := range res {
		if !strings.Contains(pins, p.Root) || !strings.Contains(pins, p.PathInfo) {
			t.Fatalf("%s: the cluster's kubo does not hold it pinned", p.StorePath)
		}
	}
}

// clusterToken asks a cluster API for a bearer token (POST /token with
// basic auth).
func clusterToken(t *testing.T, apiURL, user, pass string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, apiURL+"/token", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, pass)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(res.Body).Decode(&tok); err != nil || tok.Token == "" {
		t.Fatalf("cluster token: %s %v", res.Status, err)
	}
	return tok.Token
}
