package mirror

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A piece of nixpkgs' pkgs/build-support/fetchurl/mirrors.nix, in its shape:
// an attribute set of lists, comments, a let binding and list concatenation.
const mirrorsNix = `
let
  gnuBase = "https://ftpmirror.gnu.org/";
in
{
  # GNU (https://www.gnu.org/prep/ftp.html).
  gnu = [
    gnuBase
    "https://ftp.nluug.nl/pub/gnu/"
    "ftp://ftp.funet.fi/pub/mirrors/ftp.gnu.org/gnu/"
  ];
  savannah = [ "https://download.savannah.gnu.org/releases" ] ++ [ "https://mirror.example.org/savannah/" ];
  odd = [ "git://example.org/" "https://ok.example.org/" ];
}
`

func TestLoadMirrorsNix(t *testing.T) {
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		t.Fatalf("nix-instantiate is needed (apt-get install nix-bin): %v", err)
	}
	file := filepath.Join(t.TempDir(), "mirrors.nix")
	if err := os.WriteFile(file, []byte(mirrorsNix), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := LoadMirrors(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Expand("mirror://gnu/hello/hello-2.12.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"https://ftpmirror.gnu.org/hello/hello-2.12.tar.gz",
		"https://ftp.nluug.nl/pub/gnu/hello/hello-2.12.tar.gz",
		"ftp://ftp.funet.fi/pub/mirrors/ftp.gnu.org/gnu/hello/hello-2.12.tar.gz",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Expand = %q, want %q", got, want)
	}
	// A base without a trailing slash still gets one.
	got, _ = m.Expand("mirror://savannah/x/x-1.tar.gz")
	if want := []string{"https://download.savannah.gnu.org/releases/x/x-1.tar.gz", "https://mirror.example.org/savannah/x/x-1.tar.gz"}; !slices.Equal(got, want) {
		t.Errorf("Expand savannah = %q, want %q", got, want)
	}
	// The git base is dropped at load time.
	if got := m["odd"]; !slices.Equal(got, []string{"https://ok.example.org/"}) {
		t.Errorf("odd = %q", got)
	}

	// A Nix file that does not evaluate is an error with Nix's message.
	bad := filepath.Join(t.TempDir(), "bad.nix")
	if err := os.WriteFile(bad, []byte("{ gnu = [ ; }"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadMirrors(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Errorf("bad .nix: %v", err)
	}
}

func TestLoadMirrorsJSON(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mirrors.json")
	doc := `{"gnu": ["https://ftpmirror.gnu.org/", "http://ftp.gnu.org/gnu/"], "hashedMirrors": ["https://tarballs.nixos.org"], "notalist": 3}`
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := LoadMirrors(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Expand("mirror://gnu/hello/hello-2.12.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"https://ftpmirror.gnu.org/hello/hello-2.12.tar.gz", "http://ftp.gnu.org/gnu/hello/hello-2.12.tar.gz"}; !slices.Equal(got, want) {
		t.Errorf("Expand = %q, want %q", got, want)
	}
	if _, ok := m["notalist"]; ok {
		t.Error("a non-list attribute was kept")
	}

	for name, doc := range map[string]string{"list": `["https://a/"]`, "garbage": `{`, "strings": `{"gnu": "https://a/"}`} {
		f := filepath.Join(dir, name+".json")
		if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := LoadMirrors(context.Background(), f)
		if name == "strings" {
			// Not a list: dropped, so mirror://gnu is then unknown.
			if _, err := m.Expand("mirror://gnu/a"); err == nil {
				t.Errorf("%s: mirror://gnu expanded", name)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := LoadMirrors(context.Background(), filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file: no error")
	}
}

func TestExpand(t *testing.T) {
	m := Mirrors{"gnu": {"https://ftpmirror.gnu.org/", "ftp://ftp.gnu.org/gnu"}, "empty": {}}
	for _, ok := range []string{"https://example.org/a.tar.gz", "http://example.org/a", "ftp://example.org/pub/a", "HTTPS://example.org/a"} {
		got, err := m.Expand(ok)
		if err != nil || !slices.Equal(got, []string{ok}) {
			t.Errorf("Expand(%q) = %q, %v", ok, got, err)
		}
	}
	got, err := m.Expand("mirror://gnu/hello/hello-2.12.tar.gz")
	if want := []string{"https://ftpmirror.gnu.org/hello/hello-2.12.tar.gz", "ftp://ftp.gnu.org/gnu/hello/hello-2.12.tar.gz"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Expand gnu = %q, %v", got, err)
	}
	for _, tc := range []struct{ url, want string }{
		{"mirror://sourceforge/foo/foo-1.tar.gz", `unknown mirror "sourceforge"`},
		{"mirror://empty/a", "no usable URLs"},
		{"mirror://gnu", "want mirror://NAME/path"},
		{"mirror://gnu/", "want mirror://NAME/path"},
		{"mirror:gnu/a", "want mirror://NAME/path"},
		{"mirror:///a", "want mirror://NAME/path"},
		{"https:///nohost", "no host"},
		{"http://[::1/", "bad URL"},
	} {
		if _, err := m.Expand(tc.url); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Expand(%q): %v, want %q", tc.url, err, tc.want)
		}
	}
	for _, bad := range []string{"file:///etc/passwd", "data:,hello", "git://example.org/r", "gopher://x/y", "/etc/passwd", "", "ssh://u@h/p"} {
		if _, err := m.Expand(bad); !errors.Is(err, ErrScheme) {
			t.Errorf("Expand(%q): %v, want ErrScheme", bad, err)
		}
	}
	if _, err := Mirrors(nil).Expand("mirror://gnu/a"); err == nil {
		t.Error("nil Mirrors expanded a mirror:// URL")
	}
	// The password of a refused URL is not repeated in the error.
	if _, err := m.Expand("sftp://user:secret@example.org/a"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("error shows the password: %v", err)
	}
}
