package upload

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/ulikunitz/xz"

	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/ipldnar"
)

const (
	token = "a-test-token-0123456789"
	path1 = "/nix/store/7m1vq1gq2ghyqbh3jfbb9ip5m3kd6xmm-hello"
	hash1 = "7m1vq1gq2ghyqbh3jfbb9ip5m3kd6xmm"
)

// memStore imports into memory (the real importer) and remembers what was
// recorded and discarded.
type memStore struct {
	mu        sync.Mutex
	recorded  []nixstore.PathInfo
	discarded int
	reject    error // Record's error, if set
	dropped   chan struct{}
}

func (s *memStore) Import(ctx context.Context, r io.Reader) (Pending, error) {
	res, err := ipldnar.Import(ctx, r, mdtest.Mock())
	if err != nil {
		return nil, err
	}
	return &memPending{s: s, res: res}, nil
}

type memPending struct {
	s   *memStore
	res ipldnar.Result
}

func (p *memPending) Result() ipldnar.Result { return p.res }

func (p *memPending) Record(_ context.Context, ni nixstore.PathInfo) error {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	if p.s.reject != nil {
		return p.s.reject
	}
	p.s.recorded = append(p.s.recorded, ni)
	return nil
}

func (p *memPending) Discard() {
	p.s.mu.Lock()
	p.s.discarded++
	p.s.mu.Unlock()
	if p.s.dropped != nil {
		p.s.dropped <- struct{}{}
	}
}

func (s *memStore) counts() (recorded, discarded int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.recorded), s.discarded
}

// narOf is the NAR of a single regular file.
func narOf(t testing.TB, contents []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := nar.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeRegular, Size: int64(len(contents))}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(contents); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compress(t testing.TB, ext string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch ext {
	case "":
		return b
	case "xz":
		w, err = xz.NewWriter(&buf)
	case "zst":
		w, err = zstd.NewWriter(&buf)
	case "gz":
		w = gzip.NewWriter(&buf)
	default:
		t.Fatalf("no compressor for %q in the test", ext)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type fixture struct {
	h     *Handler
	store *memStore
	sk    signature.SecretKey
}

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	sk, pk, err := signature.GenerateKeypair("test-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	store := &memStore{}
	cfg := Config{Token: token, Store: store, Trusted: []signature.PublicKey{pk}, Logger: discard}
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{h: h, store: store, sk: sk}
}

func (f *fixture) put(name, auth string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPut, "/"+name, bytes.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec
}

// upload is one NAR file and the narinfo that describes it.
type upload struct {
	url     string
	file    []byte
	narinfo string
}

// newUpload compresses nar with ext and writes a narinfo for path1 signed
// by sk; edit, if set, changes the narinfo's fields before signing.
func newUpload(t testing.TB, sk signature.SecretKey, nar []byte, ext string, edit func(map[string]string)) upload {
	t.Helper()
	file := compress(t, ext, nar)
	fh, nh := sha256.Sum256(file), sha256.Sum256(nar)
	u := "nar/" + nixbase32.EncodeToString(fh[:]) + ".nar"
	if ext != "" {
		u += "." + ext
	}
	f := map[string]string{
		"StorePath": path1, "URL": u, "Compression": compressions[ext],
		"FileHash": "sha256:" + nixbase32.EncodeToString(fh[:]), "FileSize": fmt.Sprint(len(file)),
		"NarHash": "sha256:" + nixbase32.EncodeToString(nh[:]), "NarSize": fmt.Sprint(len(nar)),
		"References": "",
	}
	if edit != nil {
		edit(f)
	}
	if _, ok := f["Sig"]; !ok {
		fp := fmt.Sprintf("1;%s;%s;%s;", f["StorePath"], f["NarHash"], f["NarSize"])
		sig, err := sk.Sign(nil, fp)
		if err != nil {
			t.Fatal(err)
		}
		f["Sig"] = sig.String()
	}
	var b strings.Builder
	for _, k := range []string{"StorePath", "URL", "Compression", "FileHash", "FileSize", "NarHash", "NarSize", "References", "Sig"} {
		if v, ok := f[k]; ok && (v != "" || k == "References") {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	return upload{url: u, file: file, narinfo: b.String()}
}

func bearer(tok string) string { return "Bearer " + tok }

func TestUploadCompressions(t *testing.T) {
	for _, ext := range []string{"", "xz", "zst", "gz"} {
		t.Run("ext="+ext, func(t *testing.T) {
			f := newFixture(t, nil)
			u := newUpload(t, f.sk, narOf(t, bytes.Repeat([]byte("hello "), 5000)), ext, nil)
			if rec := f.put(u.url, bearer(token), u.file); rec.Code != http.StatusOK {
				t.Fatalf("PUT %s: %d %s", u.url, rec.Code, rec.Body)
			}
			if rec := f.put(hash1+".narinfo", BasicAuth(token), []byte(u.narinfo)); rec.Code != http.StatusOK {
				t.Fatalf("PUT narinfo: %d %s", rec.Code, rec.Body)
			}
			if n, _ := f.store.counts(); n != 1 {
				t.Fatalf("%d paths recorded, want 1", n)
			}
			got := f.store.recorded[0]
			if got.Path != path1 || len(got.Signatures) != 1 || !strings.HasPrefix(got.Signatures[0], "test-1:") {
				t.Errorf("recorded %+v", got)
			}
		})
	}
}

// TestUploadRefused: every bad upload gets a 4xx that says why, and nothing
// is recorded.
func TestUploadRefused(t *testing.T) {
	content := narOf(t, []byte("some file contents\n"))
	other, _, err := signature.GenerateKeypair("other-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		auth     string
		nar      []byte // default: content
		ext      string
		fileName string // default: the NAR's URL
		edit     func(map[string]string)
		sk       *signature.SecretKey
		skipNAR  bool
		kept     bool // the NAR still waits for a narinfo
		code     int
		says     string
	}{
		{name: "no credential", auth: "-", code: 401, says: "credential"},
		{name: "wrong bearer", auth: bearer("a-test-token-0123456780"), code: 401},
		{name: "wrong password", auth: BasicAuth("nope"), code: 401},
		{name: "other file", fileName: "log/abc.drv", code: 403, says: "not a NAR"},
		{name: "listing", fileName: hash1 + ".ls", code: 403},
		{name: "not a NAR", nar: []byte("garbage, not a NAR at all"), code: 400, says: "not a valid NAR"},
		{name: "file hash differs from its name", fileName: "nar/" + strings.Repeat("0", 52) + ".nar", code: 400, says: "SHA-256"},
		{name: "trailing data", nar: append(append([]byte(nil), content...), 'x'), code: 400, says: "trailing data"},
		{name: "NarHash differs", edit: func(f map[string]string) {
			f["NarHash"] = "sha256:" + nixbase32.EncodeToString(make([]byte, 32))
		}, code: 400, says: "NarHash"},
		{name: "NarSize differs", edit: func(f map[string]string) { f["NarSize"] = "7" }, code: 400, says: "NarHash"},
		{name: "FileSize differs", ext: "xz", edit: func(f map[string]string) { f["FileSize"] = "7" }, code: 400, says: "FileSize"},
		{name: "Compression differs", ext: "xz", edit: func(f map[string]string) { f["Compression"] = "zstd" }, code: 400, says: "Compression"},
		{name: "NAR never uploaded", skipNAR: true, code: 400, says: "was not uploaded here"},
		{name: "store path of another hash", edit: func(f map[string]string) {
			f["StorePath"] = "/nix/store/00000000000000000000000000000000-hello"
		}, code: 400, says: "not the path"},
		{name: "other store dir", edit: func(f map[string]string) {
			f["StorePath"] = "/gnu/store/" + hash1 + "-hello"
		}, code: 400, says: "not in /nix/store"},
		{name: "bad reference", edit: func(f map[string]string) { f["References"] = "../../etc/passwd" }, code: 400, says: "reference"},
		{name: "untrusted signature only", sk: &other, code: 400, says: "no signature by a trusted key"},
		{name: "forged trusted signature", edit: func(f map[string]string) {
			f["Sig"] = "test-1:" + strings.Repeat("A", 86) + "=="
		}, code: 400, says: "does not verify"},
		{name: "not a narinfo", edit: func(f map[string]string) { f["NarSize"] = "many" }, kept: true, code: 400, says: "not a narinfo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			sk := f.sk
			if tc.sk != nil {
				sk = *tc.sk
			}
			n := tc.nar
			if n == nil {
				n = content
			}
			u := newUpload(t, sk, n, tc.ext, tc.edit)
			auth := BasicAuth(token)
			if tc.auth == "-" {
				auth = ""
			} else if tc.auth != "" {
				auth = tc.auth
			}
			name := u.url
			if tc.fileName != "" {
				name = tc.fileName
			}
			var rec *httptest.ResponseRecorder
			if !tc.skipNAR {
				rec = f.put(name, auth, u.file)
			}
			if rec == nil || (rec.Code == http.StatusOK && tc.fileName == "") {
				rec = f.put(hash1+".narinfo", auth, []byte(u.narinfo))
			}
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.says) {
				t.Errorf("got %d %q, want %d saying %q", rec.Code, rec.Body, tc.code, tc.says)
			}
			if n, _ := f.store.counts(); n != 0 {
				t.Errorf("%d paths recorded", n)
			}
			if tc.code == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
			f.h.mu.Lock()
			left := len(f.h.pending)
			f.h.mu.Unlock()
			if want := map[bool]int{true: 1}[tc.kept]; left != want {
				t.Errorf("%d NARs pending after a refused upload, want %d", left, want)
			}
		})
	}
}

// TestUploadRecordRejected: the store's refusal (a missing reference) is a
// 400 with its reason; its failure a 500.
func TestUploadRecordRejected(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{Rejected(fmt.Errorf("reference /nix/store/x is not in this cache")), 400},
		{fmt.Errorf("datastore full"), 500},
	} {
		f := newFixture(t, nil)
		f.store.reject = tc.err
		u := newUpload(t, f.sk, narOf(t, []byte("x")), "", nil)
		f.put(u.url, bearer(token), u.file)
		rec := f.put(hash1+".narinfo", bearer(token), []byte(u.narinfo))
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.err.Error()) {
			t.Errorf("Record error %v: got %d %q, want %d", tc.err, rec.Code, rec.Body, tc.code)
		}
	}
}

// TestUploadPendingExpires: a NAR whose narinfo never comes is dropped.
func TestUploadPendingExpires(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.PendingTTL = 50 * time.Millisecond })
	f.store.dropped = make(chan struct{}, 1)
	u := newUpload(t, f.sk, narOf(t, []byte("x")), "", nil)
	if rec := f.put(u.url, bearer(token), u.file); rec.Code != http.StatusOK {
		t.Fatalf("PUT NAR: %d", rec.Code)
	}
	select {
	case <-f.store.dropped:
	case <-time.After(10 * time.Second):
		t.Fatal("the pending NAR was not discarded")
	}
	if rec := f.put(hash1+".narinfo", bearer(token), []byte(u.narinfo)); rec.Code != http.StatusBadRequest {
		t.Errorf("narinfo after the NAR expired: %d, want 400", rec.Code)
	}
}

// TestUploadBounds: too many waiting NARs get 503, a NAR over the size
// bound 400.
func TestUploadBounds(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxPending = 1; c.MaxNARSize = 4096 })
	a := newUpload(t, f.sk, narOf(t, []byte("a")), "", nil)
	if rec := f.put(a.url, bearer(token), a.file); rec.Code != http.StatusOK {
		t.Fatalf("PUT: %d", rec.Code)
	}
	b := newUpload(t, f.sk, narOf(t, []byte("b")), "", nil)
	if rec := f.put(b.url, bearer(token), b.file); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("a second waiting NAR over MaxPending: %d, want 503", rec.Code)
	}
	f.put(hash1+".narinfo", bearer(token), []byte(a.narinfo))
	big := newUpload(t, f.sk, narOf(t, make([]byte, 8192)), "zst", nil)
	if rec := f.put(big.url, bearer(token), big.file); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "larger than") {
		t.Errorf("a NAR over MaxNARSize: %d %s", rec.Code, rec.Body)
	}
}

// FuzzNarinfo: whatever narinfo arrives after a good NAR, the handler
// answers without panicking, and records only a narinfo that describes
// that NAR and carries a trusted signature.
func FuzzNarinfo(f *testing.F) {
	sk, pk, err := signature.GenerateKeypair("test-1", bytes.NewReader(make([]byte, 64)))
	if err != nil {
		f.Fatal(err)
	}
	content := narOf(f, []byte("fuzz"))
	good := newUpload(f, sk, content, "", nil)
	f.Add([]byte(good.narinfo))
	f.Add([]byte("StorePath: " + path1 + "\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, ni []byte) {
		store := &memStore{}
		h, err := New(Config{Token: token, Store: store, Trusted: []signature.PublicKey{pk}, Logger: discard})
		if err != nil {
			t.Fatal(err)
		}
		fx := &fixture{h: h, store: store}
		if rec := fx.put(good.url, bearer(token), good.file); rec.Code != http.StatusOK {
			t.Fatalf("PUT NAR: %d", rec.Code)
		}
		rec := fx.put(hash1+".narinfo", bearer(token), ni)
		if n, _ := store.counts(); n > 0 {
			got := store.recorded[0]
			nh := sha256.Sum256(content)
			if rec.Code != http.StatusOK || got.Path != path1 || got.NarHash != "sha256:"+nixbase32.EncodeToString(nh[:]) {
				t.Fatalf("recorded %+v (answer %d)", got, rec.Code)
			}
		}
	})
}

var discard = slog.New(slog.DiscardHandler)
