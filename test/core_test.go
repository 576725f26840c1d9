package test

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/internal/nixtest"
)

// newKey writes a fresh Nix signing key (as `nix key generate-secret` does)
// and returns the secret key file and the public key.
func newKey(t testing.TB, name string) (string, string) {
	t.Helper()
	sk, pk, err := signature.GenerateKeypair(name, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), name+".sec")
	if err := os.WriteFile(f, []byte(sk.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return f, pk.String()
}

// TestRoundTrip publishes paths of every shape and checks that the NAR the
// gateway renders from IPFS is byte-identical to `nix-store --dump`.
func TestRoundTrip(t *testing.T) {
	nixEnv(t)
	store := nixtest.Store(t)

	tree := filepath.Join(t.TempDir(), "tree")
	mk := func(rel, content string, mode os.FileMode) {
		p := filepath.Join(tree, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	mk("bin/tool", "#!/bin/sh\necho hi\n", 0o755)
	mk("share/doc/readme", "read me\n", 0o644)
	mk("empty-file", "", 0o644)
	mk("empty-exec", "", 0o755)
	mk("ünïcødé/日本語.txt", "non-ascii names\n", 0o644)
	big := make([]byte, 3<<20+12345)
	rand.Read(big)
	mk("big/blob.bin", string(big), 0o755)
	if err := os.MkdirAll(filepath.Join(tree, "empty-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct{ name, target string }{
		{"link-to-tool", "bin/tool"}, {"dangling", "does/not/exist"}, {"abs", "/etc/hostname"},
	} {
		if err := os.Symlink(l.target, filepath.Join(tree, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	wide := filepath.Join(tree, "wide")
	if err := os.MkdirAll(wide, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 10000 {
		if err := os.WriteFile(filepath.Join(wide, "f"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+itoa(i)), []byte(itoa(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	tarball := filepath.Join(t.TempDir(), "src.tar.gz")
	run(t, nil, "tar", "czf", tarball, "-C", tree, "bin", "share")

	top, _ := nixtest.BuildClosure(t, store)
	drv := strings.TrimSpace(run(t, nil, "nix-store", "--store", store, "--query", "--deriver", top))

	paths := map[string]string{
		"W1 GOROOT":      nixtest.AddPath(t, store, strings.TrimSpace(run(t, nil, "go", "env", "GOROOT"))),
		"tree":           nixtest.AddPath(t, store, tree),
		"tarball (file)": nixtest.AddPath(t, store, tarball),
		".drv (file)":    drv,
		"built closure":  top,
	}
	n := newNode(t, store, nil)
	var args []string
	for _, p := range paths {
		args = append(args, p)
	}
	slices.Sort(args)
	res := n.publish(t, args...)
	published := map[string]publishResult{}
	for _, r := range res {
		published[r.StorePath] = r
	}
	gw := n.daemon(t).url

	for name, p := range paths {
		t.Run(name, func(t *testing.T) {
			if _, ok := published[p]; !ok {
				t.Fatalf("%s not in publish output", p)
			}
			ni := narinfo(t, gw, p)
			// nix-store --dump reads the file system and ignores --store: dump
			// the chroot store's real path.
			wantHash, wantSize := sha256Stream(t, "nix-store", "--dump", filepath.Join(store, p))
			gotHash, gotSize := sha256URL(t, gw+"/"+ni["URL"][0])
			if gotHash != wantHash || gotSize != wantSize {
				t.Fatalf("rendered NAR sha256 %s (%d bytes), nix-store --dump gives %s (%d bytes)", gotHash, gotSize, wantHash, wantSize)
			}
			if ni["NarSize"][0] != itoa(int(wantSize)) {
				t.Errorf("narinfo NarSize %s, want %d", ni["NarSize"][0], wantSize)
			}
		})
	}

	// Re-publishing is a no-op, and works while the daemon holds the repo.
	for _, r := range n.publish(t, args...) {
		if r.Status != "unchanged" {
			t.Errorf("re-publish %s: status %q, want unchanged", r.StorePath, r.Status)
		}
		if r.Root != published[r.StorePath].Root {
			t.Errorf("re-publish %s: root %s, was %s", r.StorePath, r.Root, published[r.StorePath].Root)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// substitute runs the acceptance scenario: a signed closure in store A is
// published with our key added, and stock nix substitutes it from the
// gateway into an empty store B trusting only our key.
func substitute(t *testing.T, k *kubo) {
	nixEnv(t)
	storeA := nixtest.Store(t)
	top, all := nixtest.BuildClosure(t, storeA)
	origPub := nixtest.Sign(t, storeA, "original-1", all...)
	ourKey, ourPub := newKey(t, "nixipfs-test-1")

	n := newNode(t, storeA, k)
	// One dependency is published before the daemon runs (the node is
	// opened directly), the rest while it runs (publish talks to it).
	var dep string
	for _, p := range all {
		if p != top && !strings.Contains(p, "busybox") {
			dep = p
			break
		}
	}
	n.publish(t, "--sign-key", ourKey, dep)
	gw := n.daemon(t).url
	res := n.publish(t, "--sign-key", ourKey, top)
	if len(res) != len(all) {
		t.Fatalf("publish printed %d paths, the closure has %d", len(res), len(all))
	}

	ni := narinfo(t, gw, top)
	var keys []string
	for _, s := range ni["Sig"] {
		keys = append(keys, strings.SplitN(s, ":", 2)[0])
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"nixipfs-test-1", "original-1"}) {
		t.Errorf("narinfo signatures by %v, want the original and ours", keys)
	}
	if ni["Compression"][0] != "none" {
		t.Errorf("Compression %q", ni["Compression"][0])
	}
	_ = origPub

	storeB := nixtest.Store(t)
	t.Setenv("NIX_CONFIG", nixtest.Config+"\nrequire-sigs = true\ntrusted-public-keys = "+ourPub+"\n")
	run(t, nil, "nix", "--extra-experimental-features", "nix-command", "copy",
		"--from", gw, "--to", storeB, top)

	for _, p := range all {
		a := pathInfo(t, storeA, p)
		b := pathInfo(t, storeB, p)
		if a.NarHash != b.NarHash || a.NarSize != b.NarSize {
			t.Errorf("%s: store B has %s/%d, store A %s/%d", p, b.NarHash, b.NarSize, a.NarHash, a.NarSize)
		}
	}
	// The copy verified signatures: a store trusting no key refuses it.
	storeC := nixtest.Store(t)
	t.Setenv("NIX_CONFIG", nixtest.Config+"\nrequire-sigs = true\ntrusted-public-keys = someone-else:"+strings.SplitN(origPub, ":", 2)[1]+"\n")
	if _, _, err := runErr(nil, "nix", "--extra-experimental-features", "nix-command", "copy",
		"--from", gw, "--to", storeC, top); err == nil {
		t.Errorf("nix copy trusting no signing key succeeded; signatures were not checked")
	}
}

// pathInfo asks store's Nix (the version on PATH) about p, through
// nixstore, which reads the JSON of Nix 2.8 (a list) and of 2.19+ (an
// object keyed by path) alike.
func pathInfo(t *testing.T, store, p string) nixstore.PathInfo {
	t.Helper()
	infos, err := nixstore.New(store).PathInfos(ctx(t), p)
	if err != nil {
		t.Fatalf("path-info %s: %v", p, err)
	}
	return infos[0]
}

// The embedded node under each Nix version; the external kubo changes
// nothing on Nix's side, so it runs under the host's only.
func TestSubstituteEmbedded(t *testing.T) { eachNix(t, func(t *testing.T) { substitute(t, nil) }) }

func TestSubstituteExternalKubo(t *testing.T) { substitute(t, startKubo(t)) }

// TestDedupAndCIDs checks that a file shared by two store paths is stored
// once and that a plain file's CID is what `ipfs add` gives it.
func TestDedupAndCIDs(t *testing.T) {
	nixEnv(t)
	k := startKubo(t)
	store := nixtest.Store(t)
	shared := make([]byte, 2<<20+777) // three 1 MiB chunks
	rand.Read(shared)
	a := nixtest.AddTree(t, store, "a", map[string]string{"data/shared.bin": string(shared), "only-a": "a"})
	b := nixtest.AddTree(t, store, "b", map[string]string{"other/place/shared.bin": string(shared), "only-b": "b"})
	n := newNode(t, store, k)

	n.publish(t, a)
	// refs local lists blocks by multihash (as raw CIDs): compare multihashes.
	before := hashes(t, strings.Fields(k.ipfs(t, "refs", "local")))
	resB := n.publish(t, b)
	after := hashes(t, strings.Fields(k.ipfs(t, "refs", "local")))

	f := filepath.Join(t.TempDir(), "shared.bin")
	if err := os.WriteFile(f, shared, 0o644); err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSpace(k.ipfs(t, "add", "-Q", "--only-hash", "--cid-version", "1", "--raw-leaves", "--chunker", "size-1048576", f))
	inA := strings.TrimPrefix(strings.TrimSpace(k.ipfs(t, "resolve", "/ipfs/"+rootOf(t, n, a)+"/data/shared.bin")), "/ipfs/")
	inB := strings.TrimPrefix(strings.TrimSpace(k.ipfs(t, "resolve", "/ipfs/"+resB[0].Root+"/other/place/shared.bin")), "/ipfs/")
	if inA != want || inB != want {
		t.Fatalf("shared file CIDs: in a %s, in b %s, ipfs add gives %s", inA, inB, want)
	}
	// The shared file's blocks were all there before b was published, and
	// publishing b added exactly b's blocks that were not: its PathInfo plus
	// its own files and directories (a directory holding only shared.bin is
	// shared too), none of the shared file's four.
	fileBlocks := hashes(t, append([]string{want}, strings.Fields(k.ipfs(t, "refs", "-r", want))...))
	if len(fileBlocks) != 4 {
		t.Fatalf("shared file has %d blocks, want 4 (root + 3 leaves)", len(fileBlocks))
	}
	for _, c := range fileBlocks {
		if !slices.Contains(before, c) {
			t.Fatalf("shared file block %s missing after publishing a", c)
		}
	}
	bBlocks := hashes(t, append([]string{resB[0].Root}, strings.Fields(k.ipfs(t, "refs", "-r", "--unique", resB[0].Root))...))
	fresh := 0
	for _, c := range bBlocks {
		if !slices.Contains(before, c) {
			fresh++
		}
	}
	// Besides b's new DAG blocks, publishing b adds its PathInfo, the
	// manifest's new Version block and its changed HAMT shards: at least the
	// root, more when two keys share a hash prefix (which depends on the
	// random paths). Every such block is the Version or a directly pinned
	// record or shard.
	var show struct{ Version string }
	if err := json.Unmarshal([]byte(n.nixipfs(t, "manifest", "show", "--json")), &show); err != nil {
		t.Fatal(err)
	}
	meta := hashes(t, append([]string{show.Version, resB[0].PathInfo}, strings.Fields(k.ipfs(t, "pin", "ls", "--type=direct", "-q"))...))
	extra := 0
	for _, c := range after {
		if slices.Contains(before, c) || slices.Contains(bBlocks, c) {
			continue
		}
		if !slices.Contains(meta, c) {
			t.Fatalf("publishing b added block %s, which is neither b's DAG nor its record nor the manifest's", c)
		}
		extra++
	}
	if added := len(after) - len(before); added != fresh+extra || extra < 3 {
		t.Fatalf("publishing b added %d blocks: b's DAG has %d blocks, %d of them new, plus %d of record and manifest (want at least 3)", added, len(bBlocks), fresh, extra)
	}
	if fresh > len(bBlocks)-len(fileBlocks) {
		t.Fatalf("b's DAG brought %d new blocks; the shared file's %d should not be among them", fresh, len(fileBlocks))
	}
}

// hashes maps CIDs to their multihashes (as strings), the blockstore's key.
func hashes(t *testing.T, cids []string) []string {
	t.Helper()
	out := make([]string, len(cids))
	for i, s := range cids {
		c, err := cid.Decode(s)
		if err != nil {
			t.Fatalf("CID %q: %v", s, err)
		}
		out[i] = c.Hash().String()
	}
	return out
}

func rootOf(t *testing.T, n *node, p string) string {
	t.Helper()
	for _, r := range n.publish(t, p) {
		if r.StorePath == p {
			return r.Root
		}
	}
	t.Fatalf("%s not published", p)
	return ""
}

// TestHostileNARNothingPinned feeds broken NARs to `nixipfs nar import`
// against a real kubo: each is refused with an error naming the problem and
// the node's pins do not change.
func TestHostileNARNothingPinned(t *testing.T) {
	k := startKubo(t)
	n := newNode(t, "", k)
	pins := func() string { return k.ipfs(t, "pin", "ls", "--type", "all", "-q") }
	before := pins()
	for _, c := range hostileNARs() {
		t.Run(c.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "bad.nar")
			if err := os.WriteFile(f, c.nar, 0o644); err != nil {
				t.Fatal(err)
			}
			_, stderr, err := runErr(nil, nixipfsBin, n.args("nar", "import", f)...)
			if err == nil {
				t.Fatalf("import succeeded")
			}
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("import: %v", err)
			}
			if !strings.Contains(stderr, c.want) {
				t.Errorf("error %q does not mention %q", strings.TrimSpace(stderr), c.want)
			}
			if got := pins(); got != before {
				t.Errorf("pins changed:\nbefore %q\nafter %q", before, got)
			}
		})
	}
	// A good NAR is pinned: the check above would see that.
	good := narOf(dir(entry("a", file("x", false)), entry("b", file("y", true))))
	f := filepath.Join(t.TempDir(), "good.nar")
	os.WriteFile(f, good, 0o644)
	root := strings.Fields(n.nixipfs(t, "nar", "import", f))[0]
	if !strings.Contains(pins(), root) {
		t.Errorf("good NAR root %s not pinned", root)
	}
}
