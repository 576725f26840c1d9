package nixtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TrixieEnv names the environment variable holding the root directory of a
// Debian 13 (trixie) system with its nix-bin installed; scripts/install-deps
// makes one at DefaultTrixieRoot.
const TrixieEnv = "NIXIPFS_NIX_TRIXIE"

// DefaultTrixieRoot is where scripts/install-deps keeps the trixie root when
// TrixieEnv is unset: outside the checkout, so it outlives fresh clones.
const DefaultTrixieRoot = "/var/cache/nixipfs/nix-trixie"

// Version is one installation of Nix that tests can run as if it were the
// host's: the same tool names on PATH, the same meaning of every host path.
type Version struct {
	// Name is "nix-" and the major.minor version `nix --version` reports,
	// such as "nix-2.8" or "nix-2.26": a subtest name.
	Name string
	// Version is the full version, such as "2.26.3".
	Version string
	// bin is the directory Use puts first on PATH ("" for the host's Nix).
	bin string
}

// Versions returns the Nix versions the tests run under: the host's (Debian
// 12's 2.8), then Debian 13's from the trixie root (TrixieEnv, or
// DefaultTrixieRoot). A missing Nix of either kind fails the test.
//
//	for _, nx := range nixtest.Versions(t) {
//		t.Run(nx.Name, func(t *testing.T) {
//			nx.Use(t)
//			…
//		})
//	}
func Versions(t testing.TB) []Version {
	t.Helper()
	host, err := probe("")
	if err != nil {
		t.Fatalf("nixtest: the host's Nix (Debian's nix-bin): %v", err)
	}
	root := os.Getenv(TrixieEnv)
	if root == "" {
		root = DefaultTrixieRoot
	}
	if !filepath.IsAbs(root) {
		t.Fatalf("nixtest: %s=%q: want an absolute path", TrixieEnv, root)
	}
	if _, err := os.Stat(filepath.Join(root, "usr", "bin", "nix")); err != nil {
		t.Fatalf("nixtest: Debian 13's Nix is missing (%v): run scripts/install-deps to make the trixie root, or set %s to one", err, TrixieEnv)
	}
	bin := filepath.Join(t.TempDir(), "nix-trixie-bin")
	if err := writeWrappers(bin, root); err != nil {
		t.Fatalf("nixtest: Debian 13's Nix in %s: %v", root, err)
	}
	trixie, err := probe(bin)
	if err != nil {
		t.Fatalf("nixtest: Debian 13's Nix in %s: %v", root, err)
	}
	return []Version{host, trixie}
}

// Use makes v the Nix of the rest of the test: nix, nix-store, nix-build,
// nix-instantiate (and the other tools) on PATH are v's, for the test's own
// commands and for the nixipfs processes it starts. Because it uses
// t.Setenv, the test cannot be parallel.
func (v Version) Use(t testing.TB) {
	t.Helper()
	path := os.Getenv("PATH")
	if v.bin != "" {
		path = v.bin + string(os.PathListSeparator) + path
	}
	t.Setenv("PATH", path)
}

// probe asks the nix in bin (on PATH if bin is "") for its version.
func probe(bin string) (Version, error) {
	nix := "nix"
	if bin != "" {
		nix = filepath.Join(bin, "nix")
	}
	out, err := exec.Command(nix, "--version").CombinedOutput()
	if err != nil {
		return Version{}, fmt.Errorf("%s --version: %w: %s", nix, err, strings.TrimSpace(string(out)))
	}
	name, full, err := versionName(string(out))
	if err != nil {
		return Version{}, err
	}
	return Version{Name: name, Version: full, bin: bin}, nil
}

var versionRE = regexp.MustCompile(`\(Nix\) ((\d+)\.(\d+)\S*)\s*$`)

// versionName turns `nix --version` output ("nix (Nix) 2.26.3") into the
// subtest name ("nix-2.26") and the full version ("2.26.3").
func versionName(out string) (name, full string, err error) {
	m := versionRE.FindStringSubmatch(strings.TrimSpace(out))
	if m == nil {
		return "", "", fmt.Errorf("nix --version printed %q, not \"nix (Nix) X.Y…\"", out)
	}
	return "nix-" + m[2] + "." + m[3], m[1], nil
}

// writeWrappers fills bin with one script per Nix tool of the trixie root
// (nix and its multi-call names: nix-store, nix-build, nix-instantiate, …)
// that runs the root's nix under the root's own dynamic loader and
// libraries, so that it runs on this host as it is.
//
// Why this and not a chroot: the tests hand Nix host paths everywhere
// (chroot stores in temp dirs, expression files, the repository's
// fetchipfs.nix, sockets of the daemons they start), and the nixipfs
// processes they start run nix too. Through the loader every such path
// keeps its meaning, with no list of directories to bind-mount, no mount
// namespace per command, and no root needed. What depends on Nix's own
// location is set here, ahead of the caller's NIX_CONFIG (which may still
// override it):
//   - build-hook: Nix 2.26 re-executes itself (/proc/self/exe, here the
//     loader) as the remote-build hook; the tests have no remote builders,
//     so there is no hook.
//   - sandbox-paths: Debian 13's sandbox shell is its bash-static, which
//     lives in the root. (Chroot stores always build in the sandbox.)
//
// Nix 2.26 embeds its corepkgs (<nix/fetchurl.nix>) and reads nothing from
// /usr/share; configuration comes from the host's /etc/nix, as it would
// for a Nix installed on the host.
func writeWrappers(bin, root string) error {
	if strings.ContainsAny(root, "'\n") {
		return fmt.Errorf("root %q: quote or newline in the path", root)
	}
	loaders, _ := filepath.Glob(filepath.Join(root, "usr", "lib", "*-linux-gnu*", "ld-linux*.so.[0-9]"))
	if len(loaders) != 1 {
		return fmt.Errorf("want one dynamic loader in usr/lib/<triplet>/, found %v", loaders)
	}
	loader := loaders[0]
	libDir := filepath.Dir(loader)
	entries, err := os.ReadDir(filepath.Join(root, "usr", "bin"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	nix := filepath.Join(root, "usr", "bin", "nix")
	for _, e := range entries {
		name := e.Name()
		if name != "nix" && !strings.HasPrefix(name, "nix-") {
			continue
		}
		// Only the multi-call names (symlinks to nix), not other scripts.
		if target, err := filepath.EvalSymlinks(filepath.Join(root, "usr", "bin", name)); err != nil || filepath.Base(target) != "nix" {
			continue
		}
		script := fmt.Sprintf(`#!/bin/sh
# %s of Debian 13's Nix in %s (see internal/nixtest/versions.go).
NIX_CONFIG='build-hook =
sandbox-paths = /bin/sh=%s'"
${NIX_CONFIG-}"
export NIX_CONFIG
exec '%s' --library-path '%s' --argv0 '%s' '%s' "$@"
`, name, root, filepath.Join(root, "usr", "bin", "bash-static"), loader, libDir, name, nix)
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			return err
		}
	}
	for _, tool := range []string{"nix", "nix-store", "nix-build", "nix-instantiate"} {
		if _, err := os.Stat(filepath.Join(bin, tool)); err != nil {
			return fmt.Errorf("no %s in usr/bin", tool)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "usr", "bin", "bash-static")); err != nil {
		return fmt.Errorf("no sandbox shell: %w", err)
	}
	return nil
}
