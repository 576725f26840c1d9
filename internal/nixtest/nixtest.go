// Package nixtest helps integration tests run the real Nix against throwaway
// stores. It never skips: a test that needs Nix fails loudly without it.
//
// A typical test:
//
//	nixtest.Env(t)
//	store := nixtest.Store(t)                  // a fresh chroot store dir
//	top, all := nixtest.BuildClosure(t, store) // a small graph with references
//
// Store paths are logical (/nix/store/…) even in a chroot store, whose files
// live under <store>/nix/store. Building into a chroot store always uses
// Nix's sandbox (Nix forces it when the real and logical store dirs differ),
// whatever the sandbox setting; that is why the builder is a static busybox
// added to the store rather than a host /bin/sh.
//
// The tools are whichever nix, nix-store, … are on PATH: the host's, or
// another version's after Version.Use (see Versions, which runs a test
// under Debian 12's and Debian 13's Nix).
package nixtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Config is the NIX_CONFIG that Env installs: the nix command enabled and no
// substituters, so nothing tries the network (there is none in CI) and
// results only come from local builds.
const Config = "experimental-features = nix-command\nsubstituters =\n"

// Env checks that the Nix tools are installed and sets NIX_CONFIG to Config
// for the rest of the test (any NIX_CONFIG of the caller is replaced, to keep
// tests hermetic). Because it uses t.Setenv, the test cannot be parallel.
func Env(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"nix", "nix-store", "nix-instantiate"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("nixtest: %s is required for this test: %v", tool, err)
		}
	}
	t.Setenv("NIX_CONFIG", Config)
}

// Run runs a command and returns its trimmed stdout, failing the test with
// the command's stderr if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nixtest: %s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// nixFlags prefixes arguments of the nix command with what it needs even
// when the test did not call Env.
func nixFlags(args ...string) []string {
	return append([]string{"--extra-experimental-features", "nix-command"}, args...)
}

// storeArgs returns the --store flag for a store ("" is the default store).
func storeArgs(store string) []string {
	if store == "" {
		return nil
	}
	return []string{"--store", store}
}

// Store returns the directory of a fresh, empty chroot store (use it as
// --store DIR) that is removed after the test.
func Store(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	// Nix makes store paths read-only; restore write permission so that the
	// temp dir can be removed even when the tests do not run as root.
	// (Cleanups run last-registered first, so this runs before the removal.)
	t.Cleanup(func() { makeWritable(dir) })
	return dir
}

func makeWritable(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
}

// AddPath adds a file or directory to store with nix-store --add and returns
// the store path. For the default store ("") the path is deleted again after
// the test, so give it unique contents (see AddTree) if other tests may add
// the same thing concurrently.
func AddPath(t testing.TB, store, path string) string {
	t.Helper()
	p := Run(t, "nix-store", append(storeArgs(store), "--add", path)...)
	if store == "" {
		t.Cleanup(func() {
			// Best effort: the path may still be in use or referenced.
			_ = exec.Command("nix-store", "--delete", p).Run()
		})
	}
	return p
}

// AddTree writes files (relative path → contents; a name ending in "*" is
// made executable, without the "*") into a directory called name, plus a
// random nonce file so that the store path is unique to this call, adds it
// to store and returns the store path.
func AddTree(t testing.TB, store, name string, files map[string]string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), name)
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	write := func(rel, contents string, mode os.FileMode) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(contents), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(".nonce", hex.EncodeToString(nonce), 0o644)
	for rel, contents := range files {
		if exe, ok := strings.CutSuffix(rel, "*"); ok {
			write(exe, contents, 0o755)
		} else {
			write(rel, contents, 0o644)
		}
	}
	return AddPath(t, store, root)
}

// Busybox returns a directory bbdir/bin holding a static busybox and its
// applets (sh, cat, mkdir, ln, echo, printf, chmod, wc, sleep), to be added to a
// store with builtins.path as a builder toolchain. It is named bbdir.
func Busybox(t testing.TB) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		bb = "/bin/busybox"
	}
	dir := filepath.Join(t.TempDir(), "bbdir")
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatalf("nixtest: a static busybox is required to build test derivations: %v", err)
	}
	if err := os.WriteFile(filepath.Join(bin, "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "cat", "mkdir", "ln", "echo", "printf", "chmod", "wc", "sleep"} {
		if err := os.Symlink("busybox", filepath.Join(bin, applet)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Prelude opens a Nix let-block for test derivations with no nixpkgs: bb is
// the busybox toolchain (./bbdir beside the file, see Busybox) and
// mk name script is a derivation running script with it. Continue with
// more bindings and an "in".
const Prelude = `
let
  bb = builtins.path { path = ./bbdir; name = "busybox"; };
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "${bb}/bin/sh";
    args = [ "-c" script ];
    PATH = "${bb}/bin";
  };
`

// graph is the derivation graph BuildClosure builds: a diamond
// top → {left, right} → dep, with references made by symlinks and by
// writing store paths into files (how real packages reference each other).
// Nothing references busybox at run time, so it is only in the build-time
// closure (the closure of the .drv files).
const graph = Prelude + `
  dep = mk "dep" "echo dep > $out";
  left = mk "left" "mkdir -p $out; ln -s ${dep} $out/dep";
  right = mk "right" "mkdir -p $out/share; echo ${dep} > $out/share/dep-path";
in mk "top" ''
  mkdir -p $out/bin
  cat ${dep} > $out/msg
  ln -s ${left} $out/left
  echo ${right} > $out/right-path
  printf '#!/bin/sh\necho hi\n' > $out/bin/hi
  chmod +x $out/bin/hi
''
`

// BuildClosure builds a small derivation graph into store (a chroot store
// directory, or "" for the default store) and returns the output path of its
// top derivation and all output paths of top's closure, sorted:
//
//	top → left  → dep
//	top → right → dep
//
// It needs a static busybox (/bin/busybox or on PATH) as the builder.
// The .drv of top is the Deriver in top's path info.
func BuildClosure(t testing.TB, store string) (top string, all []string) {
	t.Helper()
	bbdir := Busybox(t)
	dir := filepath.Dir(bbdir)
	nixFile := filepath.Join(dir, "graph.nix")
	if err := os.WriteFile(nixFile, []byte(graph), 0o644); err != nil {
		t.Fatal(err)
	}

	// Instantiating straight into the target store writes the .drv files
	// (and busybox) there only, without touching the default store;
	// this replaces nix-instantiate + nix copy --derivation.
	drv := Run(t, "nix-instantiate", append(storeArgs(store), nixFile)...)
	top = Run(t, "nix-store", append(storeArgs(store), "--realise", drv)...)
	closure := Run(t, "nix-store", append(storeArgs(store), "--query", "--requisites", top)...)
	all = strings.Fields(closure)
	slices.Sort(all)
	if len(all) != 4 {
		t.Fatalf("nixtest: closure of %s has %d paths, want 4: %v", top, len(all), all)
	}
	return top, all
}

// Sign signs paths (not their closures) in store with a fresh key called
// keyName and returns the public key, "keyName:base64".
func Sign(t testing.TB, store, keyName string, paths ...string) string {
	t.Helper()
	secret := Run(t, "nix", nixFlags("key", "generate-secret", "--key-name", keyName)...)
	keyFile := filepath.Join(t.TempDir(), "secret-key")
	if err := os.WriteFile(keyFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nix", nixFlags("key", "convert-secret-to-public")...)
	cmd.Stdin = strings.NewReader(secret)
	public, err := cmd.Output()
	if err != nil {
		t.Fatalf("nixtest: nix key convert-secret-to-public: %v", err)
	}
	Run(t, "nix", nixFlags(append(append(storeArgs(store), "store", "sign", "--key-file", keyFile), paths...)...)...)
	return strings.TrimSpace(string(public))
}
