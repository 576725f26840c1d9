package test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/gateway/upload"
	"github.com/nixipfs/nixipfs/internal/nixtest"
)

// TestUpload is `nix copy --to` the gateway with stock Nix: refused without
// the credential and for a NAR that is not what its narinfo says, with
// nothing recorded either time; taken with it; and then substituted by
// another store, with require-sigs, from a second node that follows the
// first and fetches the blocks (empty files included) from it. Under
// Debian 12's Nix and Debian 13's.
func TestUpload(t *testing.T) {
	nixEnv(t)
	eachNix(t, uploadScenario)
}

func uploadScenario(t *testing.T) {
	storeA := nixtest.Store(t)
	top, all := nixtest.BuildClosure(t, storeA)
	// Beside the built closure, a path shaped like real ones: empty files
	// and directories, symlinks, a multi-block file, many small files.
	dir := filepath.Join(t.TempDir(), "content")
	realTree(t, dir, 3<<20, 500)
	content := nixtest.AddPath(t, storeA, dir)
	uploaded := append(slices.Clone(all), content)
	origPub := nixtest.Sign(t, storeA, "uploader-1", uploaded...)
	// A second trusted key, for the hand-made uploads below.
	sk, pk, err := signature.GenerateKeypair("test-upload-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	dir = t.TempDir()
	token := "s3cret-upload-token-0123456789"
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, []byte(token+"\n"))
	if err := os.Chmod(tokenFile, 0o600); err != nil {
		t.Fatal(err)
	}
	netrc := filepath.Join(dir, "netrc")
	writeFile(t, netrc, []byte("machine 127.0.0.1 login nixipfs password "+token+"\n"))

	uploadNode := func() (*node, running) {
		n := newNode(t, nixtest.Store(t), nil)
		return n, n.daemon(t, "--upload-token-file", tokenFile, "--trusted-key", origPub, "--trusted-key", pk.String())
	}
	a, da := uploadNode()
	served := func(gw, p string) bool {
		return status(t, gw+"/"+strings.SplitN(filepath.Base(p), "-", 2)[0]+".narinfo") == http.StatusOK
	}
	nixCopyTo := func(gw, conf string, compression string) error {
		to := gw
		if compression != "" {
			to += "?compression=" + compression
		}
		_, errOut, err := runErr([]string{"NIX_CONFIG=" + nixtest.Config + conf},
			"nix", "--extra-experimental-features", "nix-command", "copy", "--from", storeA, "--to", to, top, content)
		if err != nil {
			return fmt.Errorf("%v: %s", err, errOut)
		}
		return nil
	}

	t.Run("no credential", func(t *testing.T) {
		err := nixCopyTo(da.url, "", "")
		if err == nil {
			t.Fatal("nix copy --to the gateway without the token succeeded")
		}
		if !strings.Contains(err.Error(), "401") {
			t.Errorf("the refusal does not say 401: %v", err)
		}
		for _, p := range uploaded {
			if served(da.url, p) {
				t.Errorf("%s recorded by an upload without the credential", p)
			}
		}
	})

	t.Run("NAR not what its narinfo says", func(t *testing.T) {
		// A real path's NAR, uploaded as Nix does, then a narinfo signed
		// by a trusted key whose NarHash is another NAR's.
		var victim string // dep: a path with no references
		for _, p := range all {
			if strings.HasSuffix(p, "-dep") {
				victim = p
			}
		}
		nar := dumpNAR(t, filepath.Join(storeA, victim))
		sum := sha256.Sum256(nar)
		url := "nar/" + nixbase32.EncodeToString(sum[:]) + ".nar"
		if code, body := put(t, da.url+"/"+url, token, nar); code != http.StatusOK {
			t.Fatalf("PUT %s: %d %s", url, code, body)
		}
		other := sha256.Sum256(append(nar, 0))
		ni := signedNarinfo(t, sk, victim, url, "sha256:"+nixbase32.EncodeToString(other[:]), len(nar))
		code, body := put(t, da.url+"/"+strings.SplitN(filepath.Base(victim), "-", 2)[0]+".narinfo", token, ni)
		if code != http.StatusBadRequest || !strings.Contains(body, "NarHash") {
			t.Errorf("narinfo with the wrong NarHash: %d %q, want 400 naming the NarHash", code, body)
		}
		if served(da.url, victim) {
			t.Errorf("%s recorded although its NAR did not match", victim)
		}
		// The NAR cannot be recorded later with a correct narinfo either:
		// it was dropped.
		ni = signedNarinfo(t, sk, victim, url, "sha256:"+nixbase32.EncodeToString(sum[:]), len(nar))
		if code, _ := put(t, da.url+"/"+strings.SplitN(filepath.Base(victim), "-", 2)[0]+".narinfo", token, ni); code != http.StatusBadRequest {
			t.Errorf("a narinfo for a rejected NAR: %d, want 400", code)
		}
	})

	t.Run("nix copy", func(t *testing.T) {
		start := time.Now()
		if err := nixCopyTo(da.url, "netrc-file = "+netrc+"\n", ""); err != nil {
			t.Fatalf("nix copy --to the gateway with the token: %v\n%s", err, da.log())
		}
		t.Logf("nix copy --to the gateway: %s", time.Since(start).Round(time.Millisecond))
		for _, p := range uploaded {
			if !served(da.url, p) {
				t.Errorf("%s not served after the upload", p)
			}
		}
		// A NAR and a narinfo per path; the refusals above were counted.
		m := scrape(t, da.url)
		if ok := m[sample("nixipfs_http_requests_total", "code", "200", "endpoint", "upload")]; ok != float64(2*len(uploaded)+1) {
			t.Errorf("%v uploads answered 200, want %d", ok, 2*len(uploaded)+1)
		}
	})

	// Nix's default above is xz; the others Nix can send, each to a node
	// of its own.
	for _, c := range []string{"zstd", "bzip2", "none"} {
		t.Run("compression="+c, func(t *testing.T) {
			_, d := uploadNode()
			if err := nixCopyTo(d.url, "netrc-file = "+netrc+"\n", c); err != nil {
				t.Fatalf("nix copy --to the gateway?compression=%s: %v\n%s", c, err, d.log())
			}
			for _, p := range uploaded {
				if !served(d.url, p) {
					t.Errorf("%s not served after the upload", p)
				}
			}
		})
	}

	// With --sign-key and no --trusted-key, any upload with the token is
	// taken and gets our signature beside the ones it had.
	t.Run("sign-key", func(t *testing.T) {
		keyFile, _ := newKey(t, "gateway-1")
		n := newNode(t, nixtest.Store(t), nil)
		d := n.daemon(t, "--upload-token-file", tokenFile, "--sign-key", keyFile)
		if err := nixCopyTo(d.url, "netrc-file = "+netrc+"\n", ""); err != nil {
			t.Fatalf("nix copy: %v\n%s", err, d.log())
		}
		sigs := narinfo(t, d.url, top)["Sig"]
		var names []string
		for _, s := range sigs {
			names = append(names, strings.SplitN(s, ":", 2)[0])
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"gateway-1", "uploader-1"}) {
			t.Errorf("narinfo signed by %v, want the uploader and the gateway", names)
		}
	})

	// B follows A; another store substitutes the closure from B and checks
	// the uploader's signatures.
	b := newNode(t, "", nil)
	db := b.daemon(t, "--peer", loopbackPeer(t, da), "--follow", a.manifestName(t))
	waitServed(t, db.url, top, 30*time.Second)
	waitServed(t, db.url, content, 30*time.Second)
	storeB := nixtest.Store(t)
	nixCopyBounded(t, []string{"NIX_CONFIG=" + nixtest.Config + "\nrequire-sigs = true\ntrusted-public-keys = " + origPub + "\n"},
		3*time.Minute, "--from", db.url, "--to", storeB, top, content)
	for _, p := range uploaded {
		if pa, pb := pathInfo(t, storeA, p), pathInfo(t, storeB, p); pa.NarHash != pb.NarHash || pa.NarSize != pb.NarSize {
			t.Errorf("%s: %s/%d through B, %s/%d in A", p, pb.NarHash, pb.NarSize, pa.NarHash, pa.NarSize)
		}
	}
}

// put PUTs body to url with the upload token as basic auth, as Nix does
// from a netrc-file, and returns the status and the answer's text.
func put(t testing.TB, url, token string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", upload.BasicAuth(token))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", url, err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(text)
}

// signedNarinfo is the narinfo of a path with no references and an
// uncompressed NAR at url, signed by sk.
func signedNarinfo(t testing.TB, sk signature.SecretKey, storePath, url, narHash string, narSize int) []byte {
	t.Helper()
	fp := fmt.Sprintf("1;%s;%s;%d;", storePath, narHash, narSize)
	sig, err := sk.Sign(nil, fp)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Appendf(nil, "StorePath: %s\nURL: %s\nCompression: none\nNarHash: %s\nNarSize: %d\nReferences: \nSig: %s\n",
		storePath, url, narHash, narSize, sig)
}

// dumpNAR is the NAR of a file tree, from nix-store --dump.
func dumpNAR(t testing.TB, p string) []byte {
	t.Helper()
	out, err := exec.Command("nix-store", "--dump", p).Output()
	if err != nil {
		t.Fatalf("nix-store --dump %s: %v", p, err)
	}
	return out
}
