package nixstore_test

// Integration tests against the real Nix. They use throwaway chroot stores
// (--store DIR) so they do not depend on the machine's store, except
// TestDefaultStore, which adds (and afterwards deletes) a unique path there.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/internal/nixtest"
)

// A syntactically valid store path that no store has.
const missing = "/nix/store/00000000000000000000000000000000-missing"

// fixture is a chroot store holding the busybox graph and a plain tree.
type fixture struct {
	dir   string // --store argument
	store *nixstore.Store
	top   string
	all   []string // outputs in top's closure, sorted
	tree  string   // added with nix-store --add
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	nixtest.Env(t)
	dir := nixtest.Store(t)
	top, all := nixtest.BuildClosure(t, dir)
	tree := nixtest.AddTree(t, dir, "tree", map[string]string{
		"a":         "hello\n",
		"sub/b":     "b\n",
		"bin/run*":  "#!/bin/sh\n",
		"empty-dir": "",
	})
	return &fixture{dir: dir, store: nixstore.New(dir), top: top, all: all, tree: tree}
}

func (f *fixture) byName(t *testing.T, name string) string {
	t.Helper()
	for _, p := range f.all {
		if strings.HasSuffix(p, "-"+name) {
			return p
		}
	}
	t.Fatalf("no %s in %v", name, f.all)
	return ""
}

func dumpAll(t *testing.T, s *nixstore.Store, path string) []byte {
	t.Helper()
	r, err := s.Dump(context.Background(), path)
	if err != nil {
		t.Fatalf("Dump(%s): %v", path, err)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("Dump(%s): read: %v", path, err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Dump(%s): close: %v", path, err)
	}
	return data
}

// checkAgainstDump checks an info's NarHash and NarSize against the NAR
// that Dump produces, which is what a binary cache will serve.
func checkAgainstDump(t *testing.T, s *nixstore.Store, info nixstore.PathInfo) {
	t.Helper()
	nar := dumpAll(t, s, info.Path)
	if !bytes.HasPrefix(nar, []byte("\x0d\x00\x00\x00\x00\x00\x00\x00nix-archive-1")) {
		t.Errorf("Dump(%s) is not a NAR: %q", info.Path, nar[:min(len(nar), 32)])
	}
	sum := sha256.Sum256(nar)
	if want := "sha256:" + nixbase32.EncodeToString(sum[:]); info.NarHash != want {
		t.Errorf("%s: NarHash = %s, sha256 of dump = %s", info.Path, info.NarHash, want)
	}
	if info.NarSize != uint64(len(nar)) {
		t.Errorf("%s: NarSize = %d, dump has %d bytes", info.Path, info.NarSize, len(nar))
	}
}

func TestPathInfos(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	dep, left, right := f.byName(t, "dep"), f.byName(t, "left"), f.byName(t, "right")
	sorted := func(p ...string) []string { slices.Sort(p); return p }

	for _, tc := range []struct {
		path     string
		refs     []string
		deriver  string // suffix
		caPrefix string
	}{
		{path: f.top, refs: sorted(left, right), deriver: "-top.drv"},
		{path: left, refs: []string{dep}, deriver: "-left.drv"},
		{path: right, refs: []string{dep}, deriver: "-right.drv"},
		{path: dep, refs: []string{}, deriver: "-dep.drv"},
		// Added paths are content-addressed and have no deriver.
		{path: f.tree, refs: []string{}, caPrefix: "fixed:r:sha256:"},
	} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			infos, err := f.store.PathInfos(ctx, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if len(infos) != 1 {
				t.Fatalf("got %d infos, want 1", len(infos))
			}
			info := infos[0]
			if info.Path != tc.path {
				t.Errorf("Path = %s, want %s", info.Path, tc.path)
			}
			if !slices.Equal(info.References, tc.refs) {
				t.Errorf("References = %v, want %v", info.References, tc.refs)
			}
			if tc.deriver == "" && info.Deriver != "" || !strings.HasSuffix(info.Deriver, tc.deriver) {
				t.Errorf("Deriver = %q, want …%s", info.Deriver, tc.deriver)
			}
			if tc.caPrefix == "" && info.CA != "" || !strings.HasPrefix(info.CA, tc.caPrefix) {
				t.Errorf("CA = %q, want %s…", info.CA, tc.caPrefix)
			}
			if len(info.Signatures) != 0 {
				t.Errorf("Signatures = %v, want none before signing", info.Signatures)
			}
			checkAgainstDump(t, f.store, info)
		})
	}

	// Several paths at once come back in the order asked, duplicates included.
	ask := []string{f.tree, f.top, dep, f.top}
	infos, err := f.store.PathInfos(ctx, ask...)
	if err != nil {
		t.Fatal(err)
	}
	for i, info := range infos {
		if info.Path != ask[i] {
			t.Errorf("PathInfos(%v)[%d] = %s", ask, i, info.Path)
		}
	}
}

// A .drv must be described and dumped as itself: `nix` on its own would take
// the argument to mean the derivation's outputs.
func TestDerivationPaths(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	infos, err := f.store.PathInfos(ctx, f.top)
	if err != nil {
		t.Fatal(err)
	}
	drv := infos[0].Deriver

	drvInfos, err := f.store.PathInfos(ctx, drv, f.top)
	if err != nil {
		t.Fatal(err)
	}
	if drvInfos[0].Path != drv || drvInfos[1].Path != f.top {
		t.Fatalf("PathInfos(drv, top) = %s, %s", drvInfos[0].Path, drvInfos[1].Path)
	}
	if !strings.HasPrefix(drvInfos[0].CA, "text:sha256:") {
		t.Errorf("drv CA = %q, want text:sha256:…", drvInfos[0].CA)
	}
	checkAgainstDump(t, f.store, drvInfos[0])

	// The build-time closure: the four .drv files and busybox.
	closure, err := f.store.Closure(ctx, drv)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, info := range closure {
		names = append(names, info.Path[len("/nix/store/")+33:])
	}
	want := []string{"busybox", "dep.drv", "left.drv", "right.drv", "top.drv"}
	if got := slices.Sorted(slices.Values(names)); !slices.Equal(got, want) {
		t.Errorf("Closure(%s) = %v, want %v", drv, names, want)
	}
	if names[0] != "busybox" || names[len(names)-1] != "top.drv" {
		t.Errorf("Closure(%s) order = %v, want busybox first and top.drv last", drv, names)
	}
}

func TestClosure(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	dep, left, right := f.byName(t, "dep"), f.byName(t, "left"), f.byName(t, "right")
	// left and right only depend on dep, so the smaller path goes first.
	mid := []string{left, right}
	slices.Sort(mid)

	for _, tc := range []struct {
		name     string
		paths    []string
		want     []string
		anyOrder bool
	}{
		{name: "top", paths: []string{f.top}, want: []string{dep, mid[0], mid[1], f.top}},
		{name: "top and its deps, twice", paths: []string{dep, f.top, left, f.top}, want: []string{dep, mid[0], mid[1], f.top}},
		{name: "leaf", paths: []string{dep}, want: []string{dep}},
		{name: "siblings", paths: []string{right, left}, want: []string{dep, mid[0], mid[1]}},
		{name: "disjoint", paths: []string{f.tree, left}, want: []string{dep, left, f.tree}, anyOrder: true},
		{name: "nothing", want: []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			infos, err := f.store.Closure(ctx, tc.paths...)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]string, len(infos))
			seen := map[string]bool{}
			for i, info := range infos {
				got[i] = info.Path
				for _, r := range info.References {
					if r != info.Path && !seen[r] {
						t.Errorf("%s comes before its reference %s", info.Path, r)
					}
				}
				seen[info.Path] = true
			}
			if tc.anyOrder {
				// Which part comes first depends on the hashes; the
				// loop above checked the order is topological.
				got = slices.Sorted(slices.Values(got))
				tc.want = slices.Sorted(slices.Values(tc.want))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Closure(%v) =\n  %v\nwant\n  %v", tc.paths, got, tc.want)
			}
		})
	}
}

func TestSignatures(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	pub := nixtest.Sign(t, f.dir, "test-key-1", f.top)

	infos, err := f.store.PathInfos(ctx, f.top)
	if err != nil {
		t.Fatal(err)
	}
	info := infos[0]
	if len(info.Signatures) != 1 {
		t.Fatalf("Signatures = %v, want one", info.Signatures)
	}
	// Verifying Nix's signature over our Fingerprint checks that NarHash,
	// NarSize and References are exactly what Nix signs.
	name, sig64, _ := strings.Cut(info.Signatures[0], ":")
	keyName, key64, _ := strings.Cut(pub, ":")
	if name != keyName {
		t.Errorf("signature key name = %q, want %q", name, keyName)
	}
	sig, err1 := base64.StdEncoding.DecodeString(sig64)
	key, err2 := base64.StdEncoding.DecodeString(key64)
	if err := errors.Join(err1, err2); err != nil || len(key) != ed25519.PublicKeySize {
		t.Fatalf("decode signature %q / key %q: %v", info.Signatures[0], pub, err)
	}
	if !ed25519.Verify(key, []byte(info.Fingerprint()), sig) {
		t.Errorf("signature %s does not verify over %q", info.Signatures[0], info.Fingerprint())
	}
}

func TestResolve(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	dir := t.TempDir()
	link := func(name, target string) string {
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	result := link("result", f.top) // as nix-build --store DIR makes it
	chain := link("chain", "result")
	inner := link("inner", f.top+"/left")
	dangling := link("dangling", filepath.Join(dir, "nowhere"))
	loop := link("loop", "loop")
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)

	for _, tc := range []struct {
		name, in, want, wantErr string
	}{
		{name: "store path", in: f.top, want: f.top},
		{name: "inside a store path", in: f.top + "/bin/hi", want: f.top},
		{name: "symlink", in: result, want: f.top},
		{name: "relative symlink chain", in: chain, want: f.top},
		{name: "relative to cwd", in: "./result", want: f.top},
		{name: "symlink into a store path", in: inner, want: f.top},
		{name: "physical path in the chroot", in: filepath.Join(f.dir, f.top, "msg"), want: f.top},
		{name: "missing path is not checked", in: missing, want: missing},
		{name: "plain file", in: plain, wantErr: "not in the Nix store"},
		{name: "dangling", in: dangling, wantErr: "no such file"},
		{name: "loop", in: loop, wantErr: "too many levels"},
		{name: "bad name", in: "/nix/store/foo", wantErr: "not a valid store path name"},
		{name: "store dir itself", in: "/nix/store", wantErr: "not in the Nix store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.store.Resolve(ctx, tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.in) {
					t.Fatalf("Resolve(%s) = %q, %v; want an error naming it, containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Resolve(%s) = %q, %v; want %s", tc.in, got, err, tc.want)
			}
		})
	}

	// The other methods resolve too.
	infos, err := f.store.PathInfos(ctx, "result", chain)
	if err != nil || infos[0].Path != f.top || infos[1].Path != f.top {
		t.Errorf("PathInfos(result, chain) = %v, %v", infos, err)
	}
	if nar := dumpAll(t, f.store, "result"); len(nar) == 0 {
		t.Error("Dump(result) is empty")
	}
}

func TestInvalidPaths(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	check := func(what string, err error, wantInvalid bool) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s succeeded", what)
		}
		if !strings.Contains(err.Error(), missing) {
			t.Errorf("%s: error does not name %s: %v", what, missing, err)
		}
		t.Logf("%s: %v", what, err)
		if wantInvalid && !errors.Is(err, nixstore.ErrInvalidPath) {
			t.Errorf("%s: error is not ErrInvalidPath: %v", what, err)
		}
	}
	_, err := f.store.PathInfos(ctx, f.top, missing)
	check("PathInfos", err, true)
	_, err = f.store.PathInfos(ctx, missing+".drv")
	if !errors.Is(err, nixstore.ErrInvalidPath) {
		t.Errorf("PathInfos(missing .drv) = %v, want ErrInvalidPath", err)
	}
	_, err = f.store.Closure(ctx, f.top, missing)
	check("Closure", err, true)
	_, err = f.store.Dump(ctx, missing)
	check("Dump", err, true)

	// Paths valid in the store but not on the host, and the reverse.
	valid, err := f.store.Valid(ctx, f.top)
	if err != nil || !valid {
		t.Errorf("Valid(%s) = %v, %v; want true", f.top, valid, err)
	}
	valid, err = f.store.Valid(ctx, missing)
	if err != nil || valid {
		t.Errorf("Valid(%s) = %v, %v; want false", missing, valid, err)
	}
	if _, err := nixstore.New("").PathInfos(ctx, f.tree); !errors.Is(err, nixstore.ErrInvalidPath) {
		t.Errorf("default store PathInfos(%s) = %v, want ErrInvalidPath", f.tree, err)
	}

	// Asking about a missing path must not make Nix query substituters
	// (one that refuses connections costs seconds of retries).
	t.Setenv("NIX_CONFIG", nixtest.Config+"substituters = http://127.0.0.1:1\n")
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"PathInfos", func() error { _, err := f.store.PathInfos(ctx, missing); return err }},
		{"Closure", func() error { _, err := f.store.Closure(ctx, missing); return err }},
		{"Dump", func() error { _, err := f.store.Dump(ctx, missing); return err }},
	} {
		start := time.Now()
		err := tc.call()
		if !errors.Is(err, nixstore.ErrInvalidPath) {
			t.Errorf("%s(missing) with a substituter = %v, want ErrInvalidPath", tc.name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s(missing) took %v: substituters were queried", tc.name, d)
		}
	}
}

func TestDumpEarlyClose(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	r, err := f.store.Dump(ctx, f.top)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close before the end = %v, want nil", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if r, err := f.store.Dump(cctx, f.top); err == nil {
		r.Close()
		t.Error("Dump with a cancelled context succeeded")
	}

	// A dump cut short must end in an error, not in a clean EOF that would
	// pass a truncated NAR off as whole. Busybox (in the build closure of
	// the .drv) is large enough not to fit in the pipe buffers.
	drvClosure, err := f.store.Closure(ctx, f.byName(t, "dep"))
	if err != nil {
		t.Fatal(err)
	}
	infos, err := f.store.PathInfos(ctx, drvClosure[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := f.store.Closure(ctx, infos[0].Deriver)
	if err != nil || !strings.HasSuffix(bb[0].Path, "-busybox") || bb[0].NarSize < 1<<20 {
		t.Fatalf("Closure(%s) = %v, %v; want busybox first", infos[0].Deriver, bb, err)
	}
	cctx, cancel = context.WithCancel(ctx)
	defer cancel()
	r, err = f.store.Dump(cctx, bb[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	n, err := io.Copy(io.Discard, r)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("reading on after cancel: %d more bytes, err = %v; want context.Canceled", n, err)
	}
	if err := r.Close(); !errors.Is(err, context.Canceled) {
		t.Errorf("Close after a cut-short dump = %v, want context.Canceled", err)
	}
}

func TestAddRealise(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	src := filepath.Join(t.TempDir(), "added")
	if err := os.MkdirAll(filepath.Join(src, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "d", "f"), []byte("contents"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := f.store.Add(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p, "/nix/store/") || !strings.HasSuffix(p, "-added") {
		t.Errorf("Add = %q", p)
	}
	if valid, err := f.store.Valid(ctx, p); err != nil || !valid {
		t.Errorf("Valid(%s) = %v, %v", p, valid, err)
	}
	if _, err := os.Stat(filepath.Join(f.dir, p, "d", "f")); err != nil {
		t.Errorf("added file not in the chroot store: %v", err)
	}

	infos, err := f.store.PathInfos(ctx, f.top)
	if err != nil {
		t.Fatal(err)
	}
	outs, err := f.store.Realise(ctx, infos[0].Deriver)
	if err != nil || !slices.Equal(outs, []string{f.top}) {
		t.Errorf("Realise(%s) = %v, %v; want [%s]", infos[0].Deriver, outs, err, f.top)
	}
	if _, err := f.store.Realise(ctx, missing+".drv"); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Realise(missing) = %v, want an error naming it", err)
	}
	if _, err := f.store.Add(ctx, filepath.Join(t.TempDir(), "nonexistent")); err == nil {
		t.Error("Add(nonexistent) succeeded")
	}
}

func TestDefaultStore(t *testing.T) {
	nixtest.Env(t)
	ctx := context.Background()
	s := nixstore.New("")
	dir, err := s.StoreDir(ctx)
	if err != nil || dir != "/nix/store" {
		t.Fatalf("StoreDir = %q, %v", dir, err)
	}
	p := nixtest.AddTree(t, "", "nixstore-test", map[string]string{"x": "default store\n"})
	infos, err := s.PathInfos(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if infos[0].Path != p || !strings.HasPrefix(infos[0].CA, "fixed:r:sha256:") {
		t.Errorf("PathInfos(%s) = %+v", p, infos[0])
	}
	checkAgainstDump(t, s, infos[0])
	closure, err := s.Closure(ctx, p)
	if err != nil || len(closure) != 1 || closure[0].Path != p {
		t.Errorf("Closure(%s) = %v, %v", p, closure, err)
	}
	if valid, err := s.Valid(ctx, p); err != nil || !valid {
		t.Errorf("Valid(%s) = %v, %v", p, valid, err)
	}
}

func TestNIXCONFIGKept(t *testing.T) {
	nixtest.Env(t)
	// A store setting that only reaches Nix through NIX_CONFIG: if the
	// environment were dropped, the default store would be used instead.
	dir := nixtest.Store(t)
	p := nixtest.AddTree(t, dir, "via-config", map[string]string{"x": "y"})
	t.Setenv("NIX_CONFIG", nixtest.Config+"store = "+dir+"\n")
	infos, err := nixstore.New("").PathInfos(context.Background(), p)
	if err != nil || infos[0].Path != p {
		t.Fatalf("PathInfos(%s) with store set in NIX_CONFIG = %v, %v", p, infos, err)
	}
}
