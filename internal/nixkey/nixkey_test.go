package nixkey

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

func TestGenerate(t *testing.T) {
	// A permissive umask must not widen the secret key's mode, and a
	// strict one must not narrow the public key's.
	for _, umask := range []int{0, 0o077} {
		old := syscall.Umask(umask)
		dir := t.TempDir()
		f, err := Generate(dir, "cache.example.org-1")
		syscall.Umask(old)
		if err != nil {
			t.Fatal(err)
		}
		for p, mode := range map[string]os.FileMode{f.Secret: 0o600, f.Public: 0o644} {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != mode {
				t.Errorf("umask %o: %s has mode %o, want %o", umask, p, st.Mode().Perm(), mode)
			}
		}
		sec, _ := os.ReadFile(f.Secret)
		pub, _ := os.ReadFile(f.Public)
		sk, err := signature.LoadSecretKey(string(sec))
		if err != nil {
			t.Fatal(err)
		}
		if sk.ToPublicKey().String() != string(pub) || f.Key != string(pub) || !strings.HasPrefix(string(pub), "cache.example.org-1:") {
			t.Fatalf("public key %q does not match secret key's %q", pub, sk.ToPublicKey())
		}
	}
}

func TestGenerateRefuses(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"", ".hidden", "a:b", "a/b", "a b", "a\x00b"} {
		if _, err := Generate(dir, name); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
	if _, err := Generate(filepath.Join(dir, "missing"), "k"); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing directory: %v", err)
	}
	// An existing .pub alone stops it before a .sec is written.
	pub := filepath.Join(dir, "k.pub")
	if err := os.WriteFile(pub, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(dir, "k"); err == nil || !strings.Contains(err.Error(), pub) {
		t.Fatalf("existing %s: %v", pub, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "k.sec")); err == nil {
		t.Fatal("k.sec written although k.pub exists")
	}
	if b, _ := os.ReadFile(pub); string(b) != "keep me" {
		t.Fatalf("k.pub changed: %q", b)
	}
	// A second run over a complete pair changes nothing.
	f, err := Generate(dir, "k2")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(f.Secret)
	if _, err := Generate(dir, "k2"); err == nil || !strings.Contains(err.Error(), f.Secret) {
		t.Fatalf("second run: %v", err)
	}
	if after, _ := os.ReadFile(f.Secret); string(after) != string(before) {
		t.Fatal("secret key overwritten")
	}
}
