package nixtest_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nixipfs/nixipfs/internal/nixtest"
)

// TestBuildClosure pins down the graph that other packages' tests rely on.
func TestBuildClosure(t *testing.T) {
	nixtest.Env(t)
	store := nixtest.Store(t)
	top, all := nixtest.BuildClosure(t, store)

	names := map[string]string{} // name → path
	for _, p := range all {
		names[p[len("/nix/store/")+33:]] = p
	}
	if got := slices.Sorted(maps.Keys(names)); !slices.Equal(got, []string{"dep", "left", "right", "top"}) {
		t.Fatalf("closure names = %v", got)
	}
	if names["top"] != top {
		t.Errorf("top = %s, closure has %s", top, names["top"])
	}
	refs := func(p string) []string {
		out := strings.Fields(nixtest.Run(t, "nix-store", "--store", store, "--query", "--references", p))
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"top", []string{names["left"], names["right"]}},
		{"left", []string{names["dep"]}},
		{"right", []string{names["dep"]}},
		{"dep", nil},
	} {
		want := slices.Sorted(slices.Values(tc.want))
		if got := refs(names[tc.name]); !slices.Equal(got, want) {
			t.Errorf("references of %s = %v, want %v", tc.name, got, want)
		}
	}
	// Files live under the chroot, not in the host's /nix/store.
	if _, err := os.Stat(filepath.Join(store, top, "bin", "hi")); err != nil {
		t.Errorf("built file missing from the chroot store: %v", err)
	}
}

func TestAddTreeUnique(t *testing.T) {
	nixtest.Env(t)
	store := nixtest.Store(t)
	files := map[string]string{"a": "x", "bin/run*": "#!/bin/sh\n"}
	p1 := nixtest.AddTree(t, store, "t", files)
	p2 := nixtest.AddTree(t, store, "t", files)
	if p1 == p2 || !strings.HasSuffix(p1, "-t") {
		t.Errorf("AddTree twice = %s, %s; want two distinct …-t paths", p1, p2)
	}
	fi, err := os.Stat(filepath.Join(store, p1, "bin", "run"))
	if err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("bin/run: %v, %v; want an executable", fi, err)
	}
	if pub := nixtest.Sign(t, store, "k-1", p1); !strings.HasPrefix(pub, "k-1:") {
		t.Errorf("Sign public key = %q", pub)
	}
}

// TestVersions: the host's Nix, then Debian 13's; after Use every tool on
// PATH is that version's, and it builds into a chroot store (the sandbox),
// signs, and fetches with builtins.fetchurl and <nix/fetchurl.nix>.
func TestVersions(t *testing.T) {
	vs := nixtest.Versions(t)
	if len(vs) != 2 || vs[0].Name == vs[1].Name {
		t.Fatalf("Versions = %+v, want the host's and Debian 13's", vs)
	}
	for _, nx := range vs {
		t.Run(nx.Name, func(t *testing.T) {
			nx.Use(t)
			if !strings.HasPrefix(nx.Name, "nix-") || !strings.HasPrefix(nx.Version, strings.TrimPrefix(nx.Name, "nix-")+".") {
				t.Errorf("Name %q, Version %q", nx.Name, nx.Version)
			}
			for _, tool := range []string{"nix", "nix-store", "nix-build", "nix-instantiate"} {
				if got, want := nixtest.Run(t, tool, "--version"), tool+" (Nix) "+nx.Version; got != want {
					t.Errorf("%s --version = %q, want %q", tool, got, want)
				}
			}
			nixtest.Env(t)
			store := nixtest.Store(t)
			top, _ := nixtest.BuildClosure(t, store)
			if _, err := os.Stat(filepath.Join(store, top, "bin", "hi")); err != nil {
				t.Errorf("built file missing: %v", err)
			}
			if pub := nixtest.Sign(t, store, "k-1", top); !strings.HasPrefix(pub, "k-1:") {
				t.Errorf("Sign public key = %q", pub)
			}

			// Fetching over loopback HTTP, at evaluation time and in a
			// builtin:fetchurl build (Nix's fetcher cache is per test).
			t.Setenv("XDG_CACHE_HOME", t.TempDir())
			const body = "fetched by nix\n"
			sum := sha256.Sum256([]byte(body))
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
			defer srv.Close()
			args := fmt.Sprintf(`{ url = "%s/f"; sha256 = "%x"; }`, srv.URL, sum)
			if got := nixtest.Run(t, "nix-instantiate", "--store", store, "--read-write-mode", "--eval", "-E",
				"builtins.readFile (builtins.fetchurl "+args+")"); got != strconv.Quote(body) {
				t.Errorf("builtins.fetchurl read %s, want %q", got, body)
			}
			out := nixtest.Run(t, "nix-build", "--store", store, "--no-out-link", "-E", "import <nix/fetchurl.nix> "+args)
			if got, err := os.ReadFile(filepath.Join(store, out)); err != nil || string(got) != body {
				t.Errorf("<nix/fetchurl.nix> built %s: %q, %v", out, got, err)
			}
		})
	}
}
