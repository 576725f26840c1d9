package test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gocid "github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/internal/nixtest"
)

// fetchIPFSCall is an expression calling nixos/fetchipfs.nix with args (the
// inside of an attribute set).
func fetchIPFSCall(args string) string {
	return fmt.Sprintf("import %s { %s }", filepath.Join(repoRoot, "nixos", "fetchipfs.nix"), args)
}

// nixBuildExpr runs nix-build on expr into store and returns the (logical)
// output path, stderr and the error.
func nixBuildExpr(store, expr string) (string, string, error) {
	out, errOut, err := runErr(nil, "nix-build", "--store", store, "--no-out-link", "-E", expr)
	return strings.TrimSpace(out), errOut, err
}

// realiseAttempts realises fetchIPFS's attempts in order until one succeeds,
// as nixos/README.md tells users to, and returns the index of the one that
// did and its output path.
func realiseAttempts(t *testing.T, store, expr string) (int, string) {
	t.Helper()
	drvs := strings.Fields(run(t, nil, "nix-instantiate", "--store", store, "-E", expr, "-A", "attempts"))
	var errs []string
	for i, drv := range drvs {
		out, errOut, err := runErr(nil, "nix-store", "--store", store, "--realise", drv)
		if err == nil {
			return i, strings.TrimSpace(out)
		}
		errs = append(errs, fmt.Sprintf("attempt %d (%s): %v\n%s", i, drv, err, errOut))
	}
	t.Fatalf("no attempt succeeded:\n%s", strings.Join(errs, "\n"))
	return -1, ""
}

// deadURL is a loopback URL on a port nothing listens on any more.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String()
	l.Close()
	return u
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// checkOutput fails unless the store path out in store holds exactly want,
// with the executable bits set or not as wanted.
func checkOutput(t *testing.T, store, out string, want []byte, executable bool) {
	t.Helper()
	real := filepath.Join(store, out)
	got := readFile(t, real)
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, not the file (%d bytes)", out, len(got), len(want))
	}
	st, err := os.Stat(real)
	if err != nil {
		t.Fatal(err)
	}
	if isExec := st.Mode()&0o111 != 0; isExec != executable {
		t.Fatalf("%s: mode %v, want executable=%v", out, st.Mode(), executable)
	}
}

// TestFetchIPFS builds nixos/fetchipfs.nix with the real Nix into fresh
// chroot stores (Nix sandboxes those builds; fixed-output builds keep the
// host's network, so the builtin fetcher reaches loopback): from a CID on
// the nixipfs gateway with the URL dead, by hash from the gateway's mirror
// layout, from the original URL when the gateway is down or lacks the file,
// and not at all with a wrong hash. Under each Nix version.
func TestFetchIPFS(t *testing.T) { eachNix(t, fetchIPFS) }

func fetchIPFS(t *testing.T) {
	nixEnv(t)

	// A multi-chunk file (1 MiB leaves) published by CID: a single-file
	// store path's root is the file's UnixFS CID.
	content := randomBytes(1<<20 + 300000)
	sum := hexSHA256(content)
	srcFile := filepath.Join(t.TempDir(), "x.tar.gz")
	writeFile(t, srcFile, content)
	pubStore := nixtest.Store(t)
	n := newNode(t, pubStore, nil)
	res := n.publish(t, nixtest.AddPath(t, pubStore, srcFile))
	if len(res) != 1 {
		t.Fatalf("publish: %+v", res)
	}
	fileCID := res[0].Root

	// A second file that the node holds only as a mirrored source (by its
	// flat hash): cache-inputs on a <nix/fetchurl.nix> derivation.
	mirrored := randomBytes(70000)
	mirroredSum := hexSHA256(mirrored)
	origin := newSourceServer(t, map[string][]byte{"m.bin": mirrored})
	drv := strings.TrimSpace(run(t, nil, "nix-instantiate", "--store", pubStore, "-E",
		fmt.Sprintf(`import <nix/fetchurl.nix> { url = "%s/m.bin"; sha256 = "%s"; }`, origin.URL, mirroredSum)))
	n.nixipfs(t, "cache-inputs", drv)
	origin.Close()

	gw := n.daemon(t).url

	t.Run("cid", func(t *testing.T) {
		expr := fetchIPFSCall(fmt.Sprintf(`cid = "%s"; url = "http://127.0.0.1:1/x.tar.gz"; sha256 = "%s"; gateway = "%s";`, fileCID, sum, gw))
		store := nixtest.Store(t)
		out, errOut, err := nixBuildExpr(store, expr)
		if err != nil {
			t.Fatalf("nix-build: %v\n%s", err, errOut)
		}
		checkOutput(t, store, out, content, false)
		// The same store path as <nix/fetchurl.nix> (and nixpkgs' fetchurl)
		// for the same name and hash: either satisfies the other.
		ref := strings.Trim(run(t, nil, "nix-instantiate", "--eval", "-E",
			fmt.Sprintf(`(import <nix/fetchurl.nix> { url = "http://127.0.0.1:1/x.tar.gz"; sha256 = "%s"; }).outPath`, sum)), "\"\n")
		if out != ref {
			t.Errorf("fetchIPFS gave %s, <nix/fetchurl.nix> would give %s", out, ref)
		}
	})

	t.Run("cid-sri-executable", func(t *testing.T) {
		// executable: the hash is the NAR hash of the executable file.
		exe := filepath.Join(t.TempDir(), "tool")
		if err := os.WriteFile(exe, content, 0o755); err != nil {
			t.Fatal(err)
		}
		narHash := strings.TrimSpace(run(t, nil, "nix", "hash", "path", "--type", "sha256", "--sri", exe))
		expr := fetchIPFSCall(fmt.Sprintf(`cid = "ipfs://%s"; hash = "%s"; executable = true; gateway = "%s/";`, fileCID, narHash, gw))
		store := nixtest.Store(t)
		out, errOut, err := nixBuildExpr(store, expr)
		if err != nil {
			t.Fatalf("nix-build: %v\n%s", err, errOut)
		}
		if !strings.HasSuffix(out, "-"+fileCID) {
			t.Errorf("output %s is not named after the CID", out)
		}
		checkOutput(t, store, out, content, true)
	})

	t.Run("wrong-hash", func(t *testing.T) {
		other := hexSHA256([]byte("something else"))
		expr := fetchIPFSCall(fmt.Sprintf(`cid = "%s"; sha256 = "%s"; gateway = "%s"; name = "x.tar.gz";`, fileCID, other, gw))
		store := nixtest.Store(t)
		out, errOut, err := nixBuildExpr(store, expr)
		if err == nil {
			t.Fatalf("nix-build with a wrong hash succeeded: %s", out)
		}
		if !strings.Contains(errOut, "hash mismatch") {
			t.Fatalf("nix-build failed, but not on the hash:\n%s", errOut)
		}
		// Every attempt fails too: the gateway has no file with that hash.
		drvs := strings.Fields(run(t, nil, "nix-instantiate", "--store", store, "-E", expr, "-A", "attempts"))
		if len(drvs) != 2 {
			t.Fatalf("%d attempts, want 2 (CID, hash)", len(drvs))
		}
		for _, d := range drvs {
			if _, _, err := runErr(nil, "nix-store", "--store", store, "--realise", d); err == nil {
				t.Fatalf("attempt %s succeeded with a wrong hash", d)
			}
		}
		// Whatever Nix keeps of the download, the path the expression names
		// is neither there nor valid.
		want := strings.Trim(run(t, nil, "nix-instantiate", "--eval", "-E", "("+expr+").outPath"), "\"\n")
		if _, err := os.Lstat(filepath.Join(store, want)); !os.IsNotExist(err) {
			t.Fatalf("%s is in the store after a hash mismatch (%v)", want, err)
		}
		if _, _, err := runErr(nil, "nix-store", "--store", store, "--check-validity", want); err == nil {
			t.Fatalf("%s is valid after a hash mismatch", want)
		}
	})

	t.Run("hash-layout", func(t *testing.T) {
		// No CID: the first attempt is <gateway>/sha256/<base16>, whatever
		// encoding the hash was given in (here nix32).
		h, _ := hex.DecodeString(mirroredSum)
		expr := fetchIPFSCall(fmt.Sprintf(`url = "http://127.0.0.1:1/m.bin"; sha256 = "%s"; gateway = "%s";`, nixbase32.EncodeToString(h), gw))
		var urls []string
		if err := json.Unmarshal([]byte(run(t, nil, "nix-instantiate", "--eval", "--strict", "--json", "-E", "("+expr+").urls")), &urls); err != nil {
			t.Fatal(err)
		}
		if want := []string{gw + "/sha256/" + mirroredSum, "http://127.0.0.1:1/m.bin"}; strings.Join(urls, " ") != strings.Join(want, " ") {
			t.Fatalf("urls %q, want %q", urls, want)
		}
		store := nixtest.Store(t)
		out, errOut, err := nixBuildExpr(store, expr)
		if err != nil {
			t.Fatalf("nix-build: %v\n%s", err, errOut)
		}
		checkOutput(t, store, out, mirrored, false)
	})

	t.Run("gateway-down", func(t *testing.T) {
		src := newSourceServer(t, map[string][]byte{"x.tar.gz": content})
		expr := fetchIPFSCall(fmt.Sprintf(`cid = "%s"; urls = [ "%s/missing.tar.gz" "%s/x.tar.gz" ]; sha256 = "%s"; gateway = "%s";`,
			fileCID, src.URL, src.URL, sum, deadURL(t)))
		store := nixtest.Store(t)
		// The result alone is one builtin:fetchurl derivation: it tries
		// only the gateway by CID.
		if out, _, err := nixBuildExpr(store, expr); err == nil {
			t.Fatalf("the first attempt alone built %s with the gateway down", out)
		}
		if src.requests.Load() != 0 {
			t.Fatal("the first attempt reached the original URL")
		}
		// Attempts in order: CID, hash (gateway down), a 404 URL, the file.
		i, out := realiseAttempts(t, store, expr)
		if i != 3 {
			t.Fatalf("attempt %d succeeded, want 3 (the second URL)", i)
		}
		if got := src.requests.Load(); got != 2 {
			t.Fatalf("%d requests to the original server, want 2", got)
		}
		checkOutput(t, store, out, content, false)
		// Now the result (and anything depending on it) is valid: nix-build
		// does not fetch again.
		again, errOut, err := nixBuildExpr(store, expr)
		if err != nil || again != out {
			t.Fatalf("nix-build after the fallback: %s %v\n%s", again, err, errOut)
		}
		if got := src.requests.Load(); got != 2 {
			t.Fatalf("nix-build fetched again (%d requests)", got)
		}
	})

	t.Run("gateway-without-file", func(t *testing.T) {
		// The gateway is up but has neither the CID nor the hash: both
		// answer 404 and the original URL serves the file.
		other := randomBytes(5000)
		h := sha256.Sum256(other)
		mh, err := multihash.Sum(other, multihash.SHA2_256, -1)
		if err != nil {
			t.Fatal(err)
		}
		otherCID := gocid.NewCidV1(gocid.Raw, mh).String() // never seen by the node
		// fetchIPFS relies on the gateway answering 404 for a CID it does
		// not have: Nix cuts off a request that gets no answer only after
		// stalled-download-timeout (300 s) and retries it download-attempts
		// (5) times.
		client := &http.Client{Timeout: 30 * time.Second}
		resp, err := client.Get(gw + "/ipfs/" + otherCID)
		if err != nil {
			t.Fatalf("GET /ipfs/<a CID the node lacks>: %v (want a prompt 404)", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GET /ipfs/<a CID the node lacks>: %s, want 404", resp.Status)
		}
		src := newSourceServer(t, map[string][]byte{"o.bin": other})
		expr := fetchIPFSCall(fmt.Sprintf(`cid = "%s"; url = "%s/o.bin"; hash = "sha256-%s"; gateway = "%s";`,
			otherCID, src.URL, base64.StdEncoding.EncodeToString(h[:]), gw))
		store := nixtest.Store(t)
		i, out := realiseAttempts(t, store, expr)
		if i != 2 {
			t.Fatalf("attempt %d succeeded, want 2 (the URL)", i)
		}
		checkOutput(t, store, out, other, false)
	})
}
