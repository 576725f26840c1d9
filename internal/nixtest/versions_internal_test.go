package nixtest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestVersionName(t *testing.T) {
	for _, tc := range []struct{ out, name, full string }{
		{"nix (Nix) 2.8.0\n", "nix-2.8", "2.8.0"},
		{"nix-store (Nix) 2.26.3\n", "nix-2.26", "2.26.3"},
		{"nix (Nix) 2.30.0pre20250101_abcdef", "nix-2.30", "2.30.0pre20250101_abcdef"},
	} {
		name, full, err := versionName(tc.out)
		if err != nil || name != tc.name || full != tc.full {
			t.Errorf("versionName(%q) = %q, %q, %v; want %q, %q", tc.out, name, full, err, tc.name, tc.full)
		}
	}
	for _, bad := range []string{"", "nix (Nix)\n", "Lix 2.91.1", "nix (Nix) 2\n"} {
		if name, _, err := versionName(bad); err == nil {
			t.Errorf("versionName(%q) = %q, want an error", bad, name)
		}
	}
}

// fatalRecorder stands in for a test to see how Versions fails: Fatalf
// records the message and ends the goroutine, as testing's does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestVersionsMissingRoot: without the trixie root Versions fails the test,
// naming the install script and the variable that points elsewhere.
func TestVersionsMissingRoot(t *testing.T) {
	t.Setenv(TrixieEnv, filepath.Join(t.TempDir(), "no-such-root"))
	r := &fatalRecorder{TB: t}
	done := make(chan []Version)
	go func() {
		defer close(done)
		done <- Versions(r)
	}()
	if vs, ok := <-done; ok {
		t.Fatalf("Versions = %+v without the trixie root", vs)
	}
	for _, want := range []string{"scripts/install-deps", TrixieEnv, "no-such-root"} {
		if !strings.Contains(r.msg, want) {
			t.Errorf("failure %q does not mention %q", r.msg, want)
		}
	}
}

// TestWriteWrappersBadRoot: a root that is not a usable Debian system is an
// error that says what is missing, not scripts that fail later.
func TestWriteWrappersBadRoot(t *testing.T) {
	root := t.TempDir()
	mk := func(rel string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(t.TempDir(), "bin")
	if err := writeWrappers(bin, root); err == nil || !strings.Contains(err.Error(), "dynamic loader") {
		t.Errorf("no loader: %v", err)
	}
	mk("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
	mk("usr/bin/nix")
	for _, name := range []string{"nix-store", "nix-instantiate"} {
		if err := os.Symlink("nix", filepath.Join(root, "usr/bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeWrappers(bin, root); err == nil || !strings.Contains(err.Error(), "nix-build") {
		t.Errorf("no nix-build: %v", err)
	}
	if err := os.Symlink("nix", filepath.Join(root, "usr/bin/nix-build")); err != nil {
		t.Fatal(err)
	}
	if err := writeWrappers(bin, root); err == nil || !strings.Contains(err.Error(), "sandbox shell") {
		t.Errorf("no bash-static: %v", err)
	}
	mk("usr/bin/bash-static")
	if err := writeWrappers(bin, root); err != nil {
		t.Fatalf("complete root: %v", err)
	}
	script, err := os.ReadFile(filepath.Join(bin, "nix-store"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "--argv0 'nix-store' '" + filepath.Join(root, "usr/bin/nix") + "' \"$@\""; !strings.Contains(string(script), want) {
		t.Errorf("nix-store wrapper:\n%s\nwant it to contain %s", script, want)
	}
	if err := writeWrappers(bin, root+"/it's"); err == nil {
		t.Error("a root with a quote in its path was accepted")
	}
}
