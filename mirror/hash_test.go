package mirror

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

func TestParseHashEncodings(t *testing.T) {
	data := []byte("hello, nixipfs\n")
	for _, algo := range Algos {
		want := hashOf(algo, data)
		hx := hex.EncodeToString(want.Digest)
		n32 := nixbase32.EncodeToString(want.Digest)
		b64 := base64.StdEncoding.EncodeToString(want.Digest)
		forms := []struct {
			name, s, algo string
		}{
			{"base16", hx, algo},
			{"BASE16", strings.ToUpper(hx), algo},
			{"nix32", n32, algo},
			{"base64", b64, algo},
			{"sri", algo + "-" + b64, ""},
			{"sri+type", algo + "-" + b64, algo},
			{"prefixed base16", algo + ":" + hx, ""},
			{"prefixed nix32", algo + ":" + n32, ""},
			{"prefixed base64", algo + ":" + b64, ""},
			{"prefixed+type", algo + ":" + n32, algo},
		}
		for _, f := range forms {
			t.Run(algo+"/"+f.name, func(t *testing.T) {
				got, err := ParseHash(f.s, f.algo)
				if err != nil {
					t.Fatalf("ParseHash(%q, %q): %v", f.s, f.algo, err)
				}
				if !got.Equal(want) {
					t.Fatalf("ParseHash(%q, %q) = %s, want %s", f.s, f.algo, got.Hex(), want.Hex())
				}
				// Round trips through every output form.
				for _, out := range []struct{ s, algo string }{
					{got.Hex(), algo}, {got.Nix32(), algo}, {got.SRI(), ""}, {got.String(), ""},
				} {
					back, err := ParseHash(out.s, out.algo)
					if err != nil || !back.Equal(want) {
						t.Errorf("round trip of %q: %v, %v", out.s, back, err)
					}
				}
				if got.Hex() != hx || got.Nix32() != n32 || got.SRI() != algo+"-"+b64 || got.String() != algo+":"+n32 {
					t.Errorf("encodings: %s %s %s %s", got.Hex(), got.Nix32(), got.SRI(), got)
				}
			})
		}
	}
}

func TestParseHashErrors(t *testing.T) {
	d := hashOf("sha256", []byte("x"))
	hx, n32, b64 := d.Hex(), d.Nix32(), base64.StdEncoding.EncodeToString(d.Digest)
	sha1b64 := base64.StdEncoding.EncodeToString(hashOf("sha1", []byte("x")).Digest)
	for _, tc := range []struct {
		name, s, algo, want string
		unknown             bool
	}{
		{"no algo", hx, "", "no algorithm", false},
		{"unknown type", hx, "sha384", "unknown hash algorithm", true},
		{"unknown sri", "blake3-" + b64, "", "unknown hash algorithm", true},
		{"unknown prefix", "sha384:" + hx, "", "unknown hash algorithm", true},
		{"uppercase type", hx, "SHA256", "unknown hash algorithm", true},
		{"empty", "", "sha256", "wrong length", false},
		{"hex short", hx[1:], "sha256", "wrong length", false},
		{"hex long", hx + "0", "sha256", "wrong length", false},
		{"nix32 short", n32[1:], "sha256", "wrong length", false},
		{"base64 no padding", strings.TrimRight(b64, "="), "sha256", "wrong length", false},
		{"md5 length for sha256", hashOf("md5", nil).Hex(), "sha256", "wrong length", false},
		{"hex bad char", "g" + hx[1:], "sha256", "invalid byte", false},
		{"nix32 bad char e", "e" + n32[1:], "sha256", "not in Nix alphabet", false},
		{"nix32 uppercase", strings.ToUpper(n32), "sha256", "not in Nix alphabet", false},
		{"nix32 padding bits", "z" + n32[1:], "sha256", "padding", false},
		{"base64 bad char", "*" + b64[1:], "sha256", "illegal base64", false},
		{"sri wrong size", "sha256-" + sha1b64, "", "decodes to 20 bytes", false},
		{"sri bad base64", "sha256-" + "!" + b64[1:], "", "illegal base64", false},
		{"sri type mismatch", "sha256-" + b64, "sha512", "but sha512 was expected", false},
		{"prefix type mismatch", "sha256:" + hx, "sha1", "but sha1 was expected", false},
		{"prefixed wrong length", "sha512:" + hx, "", "wrong length", false},
		{"space", " " + hx[1:], "sha256", "invalid byte", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHash(tc.s, tc.algo)
			if err == nil {
				t.Fatalf("ParseHash(%q, %q) = %v, want an error", tc.s, tc.algo, h)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseHash(%q, %q): %v, want %q in it", tc.s, tc.algo, err, tc.want)
			}
			if errors.Is(err, ErrUnknownAlgo) != tc.unknown {
				t.Errorf("errors.Is(ErrUnknownAlgo) = %v, want %v", !tc.unknown, tc.unknown)
			}
		})
	}
}

// TestHashAgainstNix checks our encodings against the real Nix's, for every
// algorithm: nix-hash --to-base32 and nix hash to-sri.
func TestHashAgainstNix(t *testing.T) {
	for _, tool := range []string{"nix-hash", "nix"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (apt-get install nix-bin): %v", tool, err)
		}
	}
	// A fixed vector first: sha256("abc") as Nix prints it.
	abc := hashOf("sha256", []byte("abc"))
	if got := abc.Nix32(); got != "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s" {
		t.Errorf("sha256(abc) nix32 = %s", got)
	}
	for _, algo := range Algos {
		h := hashOf(algo, []byte("nixipfs "+algo))
		// Stdout only: without a network Nix warns on stderr.
		out, err := exec.Command("nix-hash", "--type", algo, "--to-base32", h.Hex()).Output()
		if err != nil {
			t.Fatalf("nix-hash: %v: %s", err, stderrOf(err))
		}
		if got := strings.TrimSpace(string(out)); got != h.Nix32() {
			t.Errorf("%s: nix-hash says %s, we say %s", algo, got, h.Nix32())
		}
		if got := nixbase32.EncodeToString(h.Digest); got != h.Nix32() {
			t.Errorf("%s: go-nix says %s, we say %s", algo, got, h.Nix32())
		}
		cmd := exec.Command("nix", "hash", "to-sri", "--type", algo, h.Nix32())
		cmd.Env = append(os.Environ(), "NIX_CONFIG=experimental-features = nix-command")
		out, err = cmd.Output()
		if err != nil {
			t.Fatalf("nix hash to-sri: %v: %s", err, stderrOf(err))
		}
		if got := strings.TrimSpace(string(out)); got != h.SRI() {
			t.Errorf("%s: nix says %s, we say %s", algo, got, h.SRI())
		}
	}
}

func stderrOf(err error) []byte {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.Stderr
	}
	return nil
}

func TestHashJSON(t *testing.T) {
	h := hashOf("sha512", []byte("json"))
	b, err := json.Marshal(struct{ H Hash }{h})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"H":"` + h.String() + `"}`; string(b) != want {
		t.Errorf("JSON %s, want %s", b, want)
	}
	var back struct{ H Hash }
	if err := json.Unmarshal(b, &back); err != nil || !back.H.Equal(h) {
		t.Errorf("unmarshal: %v %v", back.H, err)
	}
	// An invalid hash still encodes (a report must), and does not parse back.
	b, err = json.Marshal(Hash{Algo: "sha256", Digest: []byte{1}})
	if err != nil || string(b) != `"sha256:01"` {
		t.Errorf("invalid hash: %s %v", b, err)
	}
	if err := json.Unmarshal(b, &back.H); err == nil {
		t.Error("an invalid hash parsed back")
	}
}
