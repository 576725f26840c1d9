package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	carv2 "github.com/ipld/go-car/v2"
	"github.com/multiformats/go-multihash"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/internal/nixtest"
)

// realTree writes a directory shaped like real store paths: empty files
// (__init__.py, py.typed, .keep, an empty executable), empty directories,
// relative, absolute and dangling symlinks, executables, a large random file
// of bigSize bytes and small files, some with the same contents (so blocks
// repeat within the DAG).
func realTree(t testing.TB, dir string, bigSize int64, small int) {
	t.Helper()
	write := func(rel string, data []byte, mode os.FileMode) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("lib/python3/site-packages/pkg/__init__.py", nil, 0o644)
	write("lib/python3/site-packages/pkg/py.typed", nil, 0o644)
	write("lib/python3/site-packages/pkg/mod.py", []byte("def f():\n    return 1\n"), 0o644)
	write("share/doc/.keep", nil, 0o644)
	write("bin/tool", []byte("#!/bin/sh\necho tool\n"), 0o755)
	write("bin/empty-exec", nil, 0o755)
	for _, d := range []string{"share/empty-dir", "var/a/b/c"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"bin/rel":      "tool",
		"lib/abs":      "/nix/store/00000000000000000000000000000000-elsewhere/lib",
		"dangling":     "does/not/exist",
		"share/up-one": "../bin",
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	if bigSize > 0 {
		r := rand.New(rand.NewPCG(1, 2))
		big := make([]byte, bigSize)
		fillRandom(r, big)
		write("data/big.bin", big, 0o644)
	}
	for i := range small {
		write(fmt.Sprintf("many/%02d/f-%05d.txt", i%50, i), []byte(fmt.Sprintf("contents %d\n", i%300)), 0o644)
	}
}

// dumpHash returns the NAR hash (nix32) and size of a directory, as Nix dumps it.
func dumpHash(t testing.TB, dir string) (string, int64) {
	t.Helper()
	hexHash, size := sha256Stream(t, "nix-store", "--dump", dir)
	b, err := hex.DecodeString(hexHash)
	if err != nil {
		t.Fatal(err)
	}
	return nixbase32.EncodeToString(b), size
}

// boundedNAR GETs a NAR and returns the SHA-256 (nix32) and size of the
// body, or an error (a cut-off body included), within the bound.
func boundedNAR(url string, within time.Duration) (string, int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return "", n, fmt.Errorf("GET %s: body after %d bytes: %w", url, n, err)
	}
	return nixbase32.EncodeToString(h.Sum(nil)), n, nil
}

// narURL is the NAR URL a gateway's narinfo names for storePath.
func narURL(t testing.TB, gw, storePath string) (url, narHash string, narSize int64) {
	t.Helper()
	ni := narinfo(t, gw, storePath)
	fmt.Sscan(ni["NarSize"][0], &narSize)
	return gw + "/" + ni["URL"][0], strings.TrimPrefix(ni["NarHash"][0], "sha256:"), narSize
}

// nixCopyBounded runs nix copy with a time bound, failing the test on error.
func nixCopyBounded(t testing.TB, env []string, within time.Duration, args ...string) {
	t.Helper()
	runBounded(t, env, within, "nix", append([]string{"--extra-experimental-features", "nix-command", "copy"}, args...)...)
}

// publisher is node A of the sharing tests: a Nix store holding a tree
// shaped like a real store path (realTree), published and signed, and A's
// running daemon.
type publisher struct {
	store, dir, path string // Nix store, source tree, store path
	key, pub         string // signing key file, public key
	node             *node
	d                running
}

func newPublisher(t *testing.T, bigSize int64, small int) *publisher {
	t.Helper()
	p := &publisher{store: nixtest.Store(t), dir: filepath.Join(t.TempDir(), "content")}
	realTree(t, p.dir, bigSize, small)
	p.path = nixtest.AddPath(t, p.store, p.dir)
	p.key, p.pub = newKey(t, "p2p-test-1")
	p.node = newNode(t, p.store, nil)
	p.d = p.node.daemon(t)
	return p
}

// TestPeerRetrieval is the sharing scenario with three real nodes on
// loopback: A publishes a closure shaped like real store paths (empty files,
// empty directories, symlinks, executables, a 110 MB file, thousands of small
// files); B follows A and stock Nix substitutes the closure from B with
// require-sigs; B fetched the DAGs as CAR streams from A's gateway, not block
// by block. Then C, following A with B's and A's gateways as holders, gets the
// large path through holders that fail in every way a peer can fail.
func TestPeerRetrieval(t *testing.T) {
	nixEnv(t)
	pa := newPublisher(t, 110<<20, 3000)
	storeA, content, pub, a, da := pa.store, pa.path, pa.pub, pa.node, pa.d
	top, all := nixtest.BuildClosure(t, storeA)
	aPeer := loopbackPeer(t, da)
	a.publish(t, "--sign-key", pa.key, content, top)
	name := a.manifestName(t)

	b := newNode(t, "", nil)
	db := b.daemon(t, "--peer", aPeer, "--follow", name, "--stall-timeout", "10s")
	waitServed(t, db.url, content, 30*time.Second)
	waitServed(t, db.url, top, 30*time.Second)

	storeD := nixtest.Store(t)
	nixConf := []string{"NIX_CONFIG=" + nixtest.Config + "\nrequire-sigs = true\ntrusted-public-keys = " + pub + "\n"}
	start := time.Now()
	nixCopyBounded(t, nixConf, 5*time.Minute, "--from", db.url, "--to", storeD, content, top)
	t.Logf("nix copy of the closure from follower B: %s", time.Since(start).Round(time.Millisecond))
	for _, p := range append([]string{content}, all...) {
		if pa, pd := pathInfo(t, storeA, p), pathInfo(t, storeD, p); pa.NarHash != pd.NarHash {
			t.Errorf("%s: NarHash %s from B, %s in A", p, pd.NarHash, pa.NarHash)
		}
	}
	m := scrape(t, db.url)
	if m["nixipfs_retrieve_car_streams_total"] < 1 || m["nixipfs_retrieve_car_bytes_total"] < 110<<20 {
		t.Errorf("B did not fetch by CAR: %v streams, %v bytes", m["nixipfs_retrieve_car_streams_total"], m["nixipfs_retrieve_car_bytes_total"])
	}
	if s := m["nixipfs_retrieve_stalls_total"]; s != 0 {
		t.Errorf("B stalled %v times", s)
	}

	// Holders that fail. Each C starts empty, follows A, and is told of a
	// bad holder first; the good holders (A and B, found over libp2p)
	// come after it. The CAR the bad holders cut, corrupt or stall is A's.
	cURL, cHash, cSize := narURL(t, da.url, content)
	carURL := da.url + "/ipfs/" + strings.Split(strings.TrimPrefix(cURL, da.url+"/nar/"), "-")[0] + "?format=car&dag-scope=all&dups=n"
	for _, mode := range []string{"cut", "corrupt", "stall"} {
		t.Run(mode, func(t *testing.T) {
			bad := badHolder(t, carURL, mode, 40<<20)
			c := newNode(t, "", nil)
			dc := c.daemon(t, "--peer", aPeer, "--peer", loopbackPeer(t, db), "--follow", name,
				"--peer-gateway", bad, "--stall-timeout", "3s", "--nar-cache-mb", "0")
			waitServed(t, dc.url, content, 30*time.Second)
			u, _, _ := narURL(t, dc.url, content)
			start := time.Now()
			h, n, err := boundedNAR(u, 2*time.Minute)
			if err != nil {
				t.Fatalf("C's NAR with a %s holder first: %v\n%s", mode, err, dc.log())
			}
			if h != cHash || n != cSize {
				t.Fatalf("C's NAR: %s, %d bytes; want %s, %d", h, n, cHash, cSize)
			}
			t.Logf("NAR through C with a %s holder first: %s", mode, time.Since(start).Round(time.Millisecond))
			m := scrape(t, dc.url)
			if m["nixipfs_retrieve_car_failures_total"] < 1 {
				t.Errorf("no failed CAR stream counted")
			}
			if mode == "corrupt" && m["nixipfs_retrieve_rejected_total"] < 1 {
				t.Errorf("the corrupt block was not counted as rejected")
			}
			if !strings.Contains(dc.log(), "CAR stream from holder failed") {
				t.Errorf("C's log does not name the failed holder:\n%s", dc.log())
			}
		})
	}

	// With no good holder left and no IPFS peer, a stalled holder ends the
	// response after its stall bound (bitswap, with nobody to ask, is not
	// waited for), with a log line naming the block and the entry, instead
	// of hanging.
	t.Run("no holder left", func(t *testing.T) {
		bad := badHolder(t, carURL, "stall", 40<<20)
		e := newNode(t, "", nil)
		de := e.daemon(t, "--peer", aPeer, "--follow", name, "--peer-gateway", bad,
			"--stall-timeout", "2s", "--nar-cache-mb", "0", "--keep-served=false")
		waitServed(t, de.url, content, 30*time.Second)
		u, _, _ := narURL(t, de.url, content)
		// Nobody else has the blocks: A and B (which E may have met
		// through A) are gone.
		da.stop()
		db.stop()
		start := time.Now()
		_, n, err := boundedNAR(u, time.Minute)
		took := time.Since(start)
		if err == nil {
			t.Fatalf("a NAR whose blocks no one sends was served whole (%d bytes)", n)
		}
		if took > 30*time.Second {
			t.Errorf("the stalled response ended after %s", took)
		}
		t.Logf("stalled response ended after %s and %d bytes: %v", took.Round(time.Millisecond), n, err)
		log := de.log()
		if !strings.Contains(log, "nar render: block held nowhere reachable") || !strings.Contains(log, "path=/data/big.bin") ||
			!strings.Contains(log, "asked=["+bad) {
			t.Errorf("no line naming the entry and the holder asked in the log:\n%s", log)
		}
		if m := scrape(t, de.url); m["nixipfs_retrieve_car_failures_total"] < 1 {
			t.Errorf("the stalled holder's stream was not counted as failed")
		}
	})
}

// badHolder serves the CAR at carURL the way a failing peer would: "cut"
// closes the connection after `after` bytes (a holder killed mid-transfer),
// "corrupt" flips a byte there, "stall" sends that much and then nothing.
// It fetches the CAR once, then answers every request with it.
func badHolder(t testing.TB, carURL, mode string, after int) string {
	t.Helper()
	car := get(t, carURL)
	if len(car) <= after {
		t.Fatalf("CAR of %d bytes, need more than %d", len(car), after)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.ipld.car; version=1; order=dfs; dups=n")
		w.WriteHeader(http.StatusOK)
		switch mode {
		case "cut":
			w.Write(car[:after])
			panic(http.ErrAbortHandler)
		case "corrupt":
			bad := append([]byte(nil), car...)
			bad[after] ^= 0xff
			w.Write(bad)
		case "stall":
			w.Write(car[:after])
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-done:
			}
		}
	})}
	wg.Go(func() { srv.Serve(lis) })
	t.Cleanup(func() { close(done); srv.Close(); wg.Wait() })
	return "http://" + lis.Addr().String()
}

// carCIDs lists the blocks of a CAR in order, each checked against its CID,
// leaving out identity blocks (kubo's dag export writes them, we do not:
// their data is in the CID).
func carCIDs(t testing.TB, car []byte) []string {
	t.Helper()
	br, err := carv2.NewBlockReader(bytes.NewReader(car))
	if err != nil {
		t.Fatalf("read CAR: %v", err)
	}
	var out []string
	for {
		b, err := br.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read CAR block %d: %v", len(out)+1, err)
		}
		if b.Cid().Prefix().MhType != multihash.IDENTITY {
			out = append(out, b.Cid().String())
		}
	}
}

// runBounded runs a command with a time bound and returns its stdout.
func runBounded(t testing.TB, env []string, within time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v (bound %s): %v\n%s", name, args, within, err, stderr.String())
	}
	return string(out)
}

// TestKuboInterop shares content both ways between nixipfs and a stock
// kubo, empty files included: the kubo pins, lists and reads what a nixipfs
// node published (over bitswap and through its own gateway), and nixipfs
// nodes render a DAG that only the kubo holds, over bitswap and as a CAR
// from the kubo's gateway.
func TestKuboInterop(t *testing.T) {
	nixEnv(t)
	pa := newPublisher(t, 3<<20, 200)
	dir, da := pa.dir, pa.d
	root := pa.node.publish(t, "--sign-key", pa.key, pa.path)[0].Root

	k := newKubo(t)
	kgw := freePort(t)
	k.ipfs(t, "config", "Addresses.Gateway", "/ip4/127.0.0.1/tcp/"+kgw)
	k.start(t)
	k.ipfs(t, "swarm", "connect", loopbackPeer(t, da))
	runBounded(t, k.env(), time.Minute, ipfsBin, "pin", "add", "--progress=false", root)
	if ls := k.ipfs(t, "ls", root+"/lib/python3/site-packages/pkg"); !strings.Contains(ls, "__init__.py") || !strings.Contains(ls, "py.typed") {
		t.Errorf("kubo lists the package directory as:\n%s", ls)
	}
	if out := runBounded(t, k.env(), 30*time.Second, ipfsBin, "cat", root+"/lib/python3/site-packages/pkg/__init__.py"); out != "" {
		t.Errorf("empty __init__.py reads %q through kubo", out)
	}
	if out := runBounded(t, k.env(), 30*time.Second, ipfsBin, "cat", root+"/bin/tool"); out != "#!/bin/sh\necho tool\n" {
		t.Errorf("bin/tool reads %q through kubo", out)
	}
	// The whole-DAG CAR a nixipfs holder serves to followers holds the
	// blocks stock kubo exports for the same root, in the same order.
	if ours, kubos := carCIDs(t, get(t, da.url+"/ipfs/"+root+"?format=car")),
		carCIDs(t, []byte(runBounded(t, k.env(), time.Minute, ipfsBin, "dag", "export", root))); !slices.Equal(ours, kubos) {
		t.Errorf("our CAR of %s has %d blocks, kubo's dag export %d, or another order", root, len(ours), len(kubos))
	}
	want := readFile(t, filepath.Join(dir, "data/big.bin"))
	if got := get(t, "http://127.0.0.1:"+kgw+"/ipfs/"+root+"/data/big.bin"); string(got) != string(want) {
		t.Errorf("kubo's gateway serves data/big.bin with %d bytes, want %d", len(got), len(want))
	}

	// A DAG only the kubo holds, made by ipfs add (the sha2-256 empty
	// block included), rendered by nixipfs nodes as the NAR Nix dumps.
	dir2 := filepath.Join(t.TempDir(), "from-kubo")
	realTree(t, dir2, 2<<20, 100)
	// ipfs add records no modes with raw leaves: no executables here.
	filepath.WalkDir(dir2, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			err = os.Chmod(p, 0o644)
		}
		return err
	})
	kroot := strings.TrimSpace(k.ipfs(t, "add", "-r", "-Q", "--hidden", "--cid-version", "1", "--raw-leaves", dir2))
	hash, size := dumpHash(t, dir2)
	nar := fmt.Sprintf("/nar/%s-%d-%s.nar", kroot, size, hash)
	for _, via := range []struct {
		name string
		args []string
	}{
		{"bitswap", []string{"--peer", k.peerAddr(t)}},
		{"kubo's gateway", []string{"--peer-gateway", "http://127.0.0.1:" + kgw}},
	} {
		b := newNode(t, "", nil)
		db := b.daemon(t, append(via.args, "--stall-timeout", "10s")...)
		h, n, err := boundedNAR(db.url+nar, 2*time.Minute)
		if err != nil {
			t.Fatalf("render of the kubo DAG via %s: %v\n%s", via.name, err, db.log())
		}
		if h != hash || n != size {
			t.Errorf("via %s: NAR %s, %d bytes; nix-store --dump gives %s, %d", via.name, h, n, hash, size)
		}
		m := scrape(t, db.url)
		t.Logf("via %s: %v CAR streams, %v blocks over bitswap", via.name, m["nixipfs_retrieve_car_streams_total"], m["nixipfs_retrieve_network_blocks_total"])
		if via.name == "kubo's gateway" && (m["nixipfs_retrieve_car_streams_total"] < 1 || m["nixipfs_retrieve_network_blocks_total"] != 0) {
			t.Errorf("via kubo's gateway: %v CAR streams, %v bitswap blocks", m["nixipfs_retrieve_car_streams_total"], m["nixipfs_retrieve_network_blocks_total"])
		}
	}
}

// TestPrefetchOnFollow: a follower with --prefetch fetches what the followed
// manifest adds in the background (shown on its status page), so the first
// request is served after the publisher is gone.
func TestPrefetchOnFollow(t *testing.T) {
	nixEnv(t)
	pa := newPublisher(t, 5<<20, 300)
	storeA, content, pub, a, da := pa.store, pa.path, pa.pub, pa.node, pa.d
	a.publish(t, "--sign-key", pa.key, content)
	b := newNode(t, "", nil)
	db := b.daemon(t, "--peer", loopbackPeer(t, da), "--follow", a.manifestName(t), "--prefetch", "2", "--prefetch-rate-mb", "100")
	if rep := waitPrefetched(t, db.url, 1); rep.Failed != 0 {
		t.Errorf("prefetch failed %d times", rep.Failed)
	}
	if !strings.Contains(string(get(t, db.url+"/")), `id="prefetched"`) {
		t.Errorf("the status page does not show the prefetch")
	}
	da.stop()
	storeD := nixtest.Store(t)
	nixCopyBounded(t, []string{"NIX_CONFIG=" + nixtest.Config + "\nrequire-sigs = true\ntrusted-public-keys = " + pub + "\n"},
		2*time.Minute, "--from", db.url, "--to", storeD, content)
	if pa, pd := pathInfo(t, storeA, content), pathInfo(t, storeD, content); pa.NarHash != pd.NarHash {
		t.Errorf("NarHash %s from B, %s in A", pd.NarHash, pa.NarHash)
	}
}

// TestFollowerRestartsAlone: B follows A and prefetches A's path; both stop,
// and B starts again while A is away. B still serves the version of A's
// manifest it had fetched (its status shows it, not resolved again), and
// stock Nix substitutes the path from B with require-sigs: a follower keeps
// serving what it followed when the publisher goes away.
func TestFollowerRestartsAlone(t *testing.T) {
	nixEnv(t)
	pa := newPublisher(t, 1<<20, 50)
	pa.node.publish(t, "--sign-key", pa.key, pa.path)
	version, _ := pa.node.manifestVersion(t)
	name := pa.node.manifestName(t)
	b := newNode(t, "", nil)
	db := b.daemon(t, "--peer", loopbackPeer(t, pa.d), "--follow", name, "--prefetch", "1")
	waitPrefetched(t, db.url, 1)
	db.stop()
	pa.d.stop()

	db = b.daemon(t, "--follow", name)
	var st struct {
		Followed []struct {
			Name, Version string
			Resolved      bool
		} `json:"followed"`
	}
	if err := json.Unmarshal(get(t, db.url+"/status.json"), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Followed) != 1 || st.Followed[0].Name != name || st.Followed[0].Version != version || st.Followed[0].Resolved {
		t.Errorf("B's followed names after a restart without A: %+v, want %s at %s, not resolved", st.Followed, name, version)
	}
	waitUntil(t, "B's status shows the failed resolve", 30*time.Second, func() bool {
		return strings.Contains(b.nixipfs(t, "status"), "not resolved since the daemon started")
	})
	storeD := nixtest.Store(t)
	nixCopyBounded(t, []string{"NIX_CONFIG=" + nixtest.Config + "\nrequire-sigs = true\ntrusted-public-keys = " + pa.pub + "\n"},
		2*time.Minute, "--from", db.url, "--to", storeD, pa.path)
	if want, got := pathInfo(t, pa.store, pa.path), pathInfo(t, storeD, pa.path); want.NarHash != got.NarHash {
		t.Errorf("NarHash %s from B, %s in A", got.NarHash, want.NarHash)
	}

	// A back: B resolves the version it kept and says so.
	db.stop()
	da := pa.node.daemon(t)
	db = b.daemon(t, "--peer", loopbackPeer(t, da), "--follow", name)
	waitUntil(t, "B resolved A's name again", 30*time.Second, func() bool {
		if err := json.Unmarshal(get(t, db.url+"/status.json"), &st); err != nil {
			t.Fatal(err)
		}
		return len(st.Followed) == 1 && st.Followed[0].Resolved && st.Followed[0].Version == version
	})
}

// prefetchReport is the prefetch part of a daemon's status.json.
type prefetchReport struct{ Done, Failed, Retrying, Bytes int64 }

// prefetchOf reads the prefetch report of the daemon at url (nil: none).
func prefetchOf(t testing.TB, url string) *prefetchReport {
	t.Helper()
	var rep struct {
		Prefetch *prefetchReport `json:"prefetch"`
	}
	if err := json.Unmarshal(get(t, url+"/status.json"), &rep); err != nil {
		t.Fatal(err)
	}
	return rep.Prefetch
}

// waitPrefetched waits until the daemon at url has prefetched n paths and
// returns its prefetch report.
func waitPrefetched(t testing.TB, url string, n int64) prefetchReport {
	t.Helper()
	var rep *prefetchReport
	waitUntil(t, fmt.Sprintf("%d paths prefetched", n), 30*time.Second, func() bool {
		rep = prefetchOf(t, url)
		return rep != nil && rep.Done >= n
	})
	return *rep
}

// TestPublisherAway is a follower whose publisher is away. B fetched A's
// path P (prefetch) and stopped; then A published Q, and C follows A and
// holds nothing of either. A stops: C, with no peer left, answers P's
// narinfo, and the NAR URL it gave while A was there, with a 404 at once
// (not after the 20 s wait for a root no one can send), so stock Nix with C
// then B (back, alone) as substituters moves on to B and gets P there. C
// restarted with B as its peer serves P again, fetched from B: followers
// share it without the publisher. Q, which B lacks, is a 404 at once too
// (B's gateway said so; bitswap is not waited for): Nix, which C's narinfo
// had sent to C, moves on to a classic binary cache that has Q, and for a
// while C's narinfo of Q is a 404.
func TestPublisherAway(t *testing.T) {
	nixEnv(t)
	pa := newPublisher(t, 1<<20, 50)
	pa.node.publish(t, "--sign-key", pa.key, pa.path)
	name := pa.node.manifestName(t)
	aPeer := loopbackPeer(t, pa.d)
	b := newNode(t, "", nil)
	db := b.daemon(t, "--peer", aPeer, "--follow", name, "--prefetch", "1")
	waitPrefetched(t, db.url, 1)
	db.stop() // else C may find B through A, and fetch from it
	q := nixtest.AddTree(t, pa.store, "q", map[string]string{"data": "published after B left\n"})
	pa.node.publish(t, "--sign-key", pa.key, q)
	// A classic binary cache holding Q too, for Nix to fall back on.
	run(t, nil, "nix", "--extra-experimental-features", "nix-command", "store", "sign", "--store", pa.store, "--key-file", pa.key, q)
	classic := "file://" + filepath.Join(t.TempDir(), "classic")
	run(t, nil, "nix", "--extra-experimental-features", "nix-command", "copy", "--from", pa.store, "--to", classic, q)
	c := newNode(t, "", nil)
	dc := c.daemon(t, "--peer", aPeer, "--follow", name)
	waitServed(t, dc.url, q, 30*time.Second)
	nar, _, _ := narURL(t, dc.url, pa.path)
	pa.d.stop()

	narinfoURL := dc.url + "/" + hashOf(pa.path) + ".narinfo"
	waitUntil(t, "C's narinfo is a 404 with A away", 10*time.Second, func() bool { return status(t, narinfoURL) == http.StatusNotFound })
	start := time.Now()
	if code := status(t, nar); code != http.StatusNotFound {
		t.Errorf("C's NAR with A away: %d, want 404", code)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("C's NAR 404 took %s", d)
	}
	db = b.daemon(t, "--follow", name)
	nixConfig := "NIX_CONFIG=" + nixtest.Config + "\nrequire-sigs = true\ntrusted-public-keys = " + pa.pub + "\n"
	storeD := nixtest.Store(t)
	runBounded(t, []string{nixConfig + "substituters = " + dc.url + " " + db.url + "\n"}, time.Minute,
		"nix-store", "--store", storeD, "--realise", pa.path)
	if want, got := pathInfo(t, pa.store, pa.path), pathInfo(t, storeD, pa.path); want.NarHash != got.NarHash {
		t.Errorf("NarHash %s through C then B, %s in A", got.NarHash, want.NarHash)
	}

	dc.stop()
	dc = c.daemon(t, "--peer", loopbackPeer(t, db), "--follow", name)
	waitServed(t, dc.url, pa.path, 30*time.Second)
	storeE := nixtest.Store(t)
	nixCopyBounded(t, []string{nixConfig}, 2*time.Minute, "--from", dc.url, "--to", storeE, pa.path)
	if want, got := pathInfo(t, pa.store, pa.path), pathInfo(t, storeE, pa.path); want.NarHash != got.NarHash {
		t.Errorf("NarHash %s from C with B as its peer, %s in A", got.NarHash, want.NarHash)
	}
	// Q: B lacks it, but C cannot tell before asking. Nix, sent to C by
	// its narinfo, gets a 404 for the NAR and moves on to the classic cache.
	qNAR, _, _ := narURL(t, dc.url, q)
	storeF := nixtest.Store(t)
	runBounded(t, []string{nixConfig + "substituters = " + dc.url + " " + classic + "\n"}, time.Minute,
		"nix-store", "--store", storeF, "--realise", q)
	if want, got := pathInfo(t, pa.store, q), pathInfo(t, storeF, q); want.NarHash != got.NarHash {
		t.Errorf("NarHash %s of Q through C then the classic cache, %s in A", got.NarHash, want.NarHash)
	}
	start = time.Now()
	if code := status(t, qNAR); code != http.StatusNotFound {
		t.Errorf("C's NAR of a path only A had, with B as its peer: %d, want 404", code)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("C's NAR 404 for a path B lacks took %s", d)
	}
	// Its NAR just failed for want of a source: for a while, the next
	// client is told at the narinfo.
	if code := status(t, dc.url+"/"+hashOf(q)+".narinfo"); code != http.StatusNotFound {
		t.Errorf("C's narinfo of Q right after its NAR found no source: %d, want 404", code)
	}
}

// TestPrefetchRetries: a prefetch that fails because nobody holding the
// path is connected is tried again. B knows A's path P (it followed A) but
// restarts with --prefetch while A is away: the prefetch fails at once and
// is kept to try again; when A comes back (dialling B), B fetches P without
// being asked, and serves it to stock Nix once A is gone again.
func TestPrefetchRetries(t *testing.T) {
	nixEnv(t)
	pa := newPublisher(t, 1<<20, 50)
	pa.node.publish(t, "--sign-key", pa.key, pa.path)
	name := pa.node.manifestName(t)
	b := newNode(t, "", nil)
	db := b.daemon(t, "--peer", loopbackPeer(t, pa.d), "--follow", name)
	waitServed(t, db.url, pa.path, 30*time.Second)
	db.stop()
	pa.d.stop()

	db = b.daemon(t, "--follow", name, "--prefetch", "1")
	var rep *prefetchReport
	waitUntil(t, "B's prefetch failed and waits to try again", 30*time.Second, func() bool {
		rep = prefetchOf(t, db.url)
		return rep != nil && rep.Failed >= 1 && rep.Retrying == 1
	})
	if rep.Done != 0 {
		t.Fatalf("B prefetched %d paths with A away", rep.Done)
	}
	da := pa.node.daemon(t, "--peer", loopbackPeer(t, db))
	waitPrefetched(t, db.url, 1)
	if rep = prefetchOf(t, db.url); rep.Retrying != 0 {
		t.Errorf("B still has %d prefetches to try again after they succeeded", rep.Retrying)
	}
	da.stop()
	storeD := nixtest.Store(t)
	nixCopyBounded(t, []string{"NIX_CONFIG=" + nixtest.Config + "\nrequire-sigs = true\ntrusted-public-keys = " + pa.pub + "\n"},
		2*time.Minute, "--from", db.url, "--to", storeD, pa.path)
}
