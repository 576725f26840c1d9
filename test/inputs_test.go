package test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixipfs/nixipfs/internal/nixtest"
)

// sourceServer serves files over loopback HTTP and counts requests; Close
// makes every URL dead.
type sourceServer struct {
	*httptest.Server
	files    map[string][]byte
	requests atomic.Int64
}

func newSourceServer(t *testing.T, files map[string][]byte) *sourceServer {
	s := &sourceServer{files: files}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		b, ok := s.files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(s.Close)
	return s
}

// tarballOf makes a real gzip'd tarball of a directory of this repository.
func tarballOf(t *testing.T, dir string) []byte {
	t.Helper()
	f := filepath.Join(t.TempDir(), "src.tar.gz")
	run(t, nil, "tar", "czf", f, "-C", repoRoot, dir)
	return readFile(t, f)
}

func hexSHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestCacheInputs: cache-inputs on a derivation with three fixed-output
// inputs (two flat, one recursive) lets a builder in a separate store
// realise it with every source URL dead, fetching only from the gateway.
// Then a second node that only follows the first serves a flat input to
// stock nix through hashed-mirrors. Under each Nix version (for cache-inputs
// reading its derivations, and the stock nix of both steps).
func TestCacheInputs(t *testing.T) { eachNix(t, cacheInputs) }

func cacheInputs(t *testing.T) {
	nixEnv(t)
	tgz := tarballOf(t, "ipldnar")
	plain := make([]byte, 100000)
	rand.Read(plain)
	script := []byte("#!/bin/sh\necho recursive\n")
	src := newSourceServer(t, map[string][]byte{"src.tar.gz": tgz, "plain.bin": plain, "tool.sh": script})

	// The recursive (executable) input's hash is its NAR hash: let Nix say it.
	scriptFile := filepath.Join(t.TempDir(), "tool.sh")
	if err := os.WriteFile(scriptFile, script, 0o755); err != nil {
		t.Fatal(err)
	}
	recHash := strings.TrimSpace(run(t, nil, "nix-hash", "--type", "sha256", "--base32", scriptFile))

	storeA := nixtest.Store(t)
	bb := nixtest.Busybox(t)
	expr := fmt.Sprintf(`
let bb = builtins.path { path = %q; name = "busybox"; };
    fetch = import <nix/fetchurl.nix>;
    tgz = fetch { url = "%s/src.tar.gz"; sha256 = "%s"; };
    bin = fetch { url = "%s/plain.bin"; sha256 = "%s"; };
    tool = fetch { url = "%s/tool.sh"; sha256 = "%s"; executable = true; };
in derivation { name = "uses-inputs"; system = builtins.currentSystem;
  builder = "${bb}/bin/sh"; PATH = "${bb}/bin";
  args = [ "-c" "cat ${tgz} ${bin} ${tool} | wc -c > $out" ]; }
`, bb, src.URL, hexSHA256(tgz), src.URL, hexSHA256(plain), src.URL, recHash)
	nixFile := filepath.Join(t.TempDir(), "inputs.nix")
	writeFile(t, nixFile, []byte(expr))
	drv := strings.TrimSpace(run(t, nil, "nix-instantiate", "--store", storeA, nixFile))

	key, pub := newKey(t, "nixipfs-test-1")
	a := newNode(t, storeA, nil)
	var inputs []struct {
		Output    string `json:"output"`
		Hash      string `json:"hash"`
		Realised  bool   `json:"realised"`
		Published struct {
			Root string `json:"root"`
		} `json:"published"`
	}
	out := a.nixipfs(t, "cache-inputs", "--json", "--sign-key", key, drv)
	if err := json.Unmarshal([]byte(out), &inputs); err != nil {
		t.Fatalf("cache-inputs --json: %v: %s", err, out)
	}
	if len(inputs) != 3 {
		t.Fatalf("cache-inputs found %d fixed-output inputs, want 3: %s", len(inputs), out)
	}
	for _, in := range inputs {
		if !in.Realised || in.Published.Root == "" {
			t.Errorf("input %+v not realised and published", in)
		}
	}
	gwA := a.daemon(t)
	src.Close() // every source URL is dead from here on
	before := src.requests.Load()

	// A builder with its own store gets the .drv closure, then builds with
	// the gateway as its only substituter.
	storeB := nixtest.Store(t)
	run(t, nil, "nix", "--extra-experimental-features", "nix-command", "copy", "--no-check-sigs", "--derivation",
		"--from", storeA, "--to", storeB, drv)
	t.Setenv("NIX_CONFIG", nixtest.Config+"\nsubstituters = "+gwA.url+"\nrequire-sigs = true\ntrusted-public-keys = "+pub+"\n")
	outB := strings.TrimSpace(run(t, nil, "nix-store", "--store", storeB, "--realise", drv))
	if got := strings.TrimSpace(string(readFile(t, filepath.Join(storeB, outB)))); got != fmt.Sprint(len(tgz)+len(plain)+len(script)) {
		t.Fatalf("built output says %q", got)
	}
	if src.requests.Load() != before {
		t.Fatal("the builder reached the source server")
	}

	// Node C follows A only; stock nix fetches the tarball from C through
	// hashed-mirrors when its URL is dead.
	c := newNode(t, "", nil)
	var aPeer string
	for _, p := range gwA.peers {
		if strings.HasPrefix(p, "/ip4/127.0.0.1/tcp/") {
			aPeer = p
		}
	}
	gwC := c.daemon(t, "--peer", aPeer, "--follow", a.manifestName(t)).url
	waitServed(t, gwC, inputs[0].Output, 30*time.Second)
	t.Setenv("NIX_CONFIG", nixtest.Config+"\nhashed-mirrors = "+gwC+"\n")
	storeD := nixtest.Store(t)
	fetchExpr := fmt.Sprintf(`import <nix/fetchurl.nix> { url = "http://127.0.0.1:1/src.tar.gz"; sha256 = "%s"; }`, hexSHA256(tgz))
	got := strings.TrimSpace(run(t, nil, "nix-build", "--store", storeD, "--no-out-link", "-E", fetchExpr))
	if !strings.HasSuffix(got, "-src.tar.gz") || hexSHA256(readFile(t, filepath.Join(storeD, got))) != hexSHA256(tgz) {
		t.Fatalf("hashed-mirror fetch gave %s", got)
	}
}
