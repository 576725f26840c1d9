package mirror

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestParseListForms(t *testing.T) {
	h := hashOf("sha256", []byte("hello"))
	s1 := hashOf("sha1", []byte("old"))
	doc := `[
	  {"urls": ["mirror://gnu/hello/hello-2.12.tar.gz", "https://example.org/hello-2.12.tar.gz"],
	   "hash": "` + h.Nix32() + `", "isPatch": false, "type": "sha256", "name": "hello-2.12.tar.gz"},
	  {"urls": ["https://example.org/p.patch"], "hash": "` + h.SRI() + `", "isPatch": true, "type": null, "name": "p.patch"},
	  {"url": "http://example.org/old/old-1.0.tar.bz2", "hash": "` + s1.Hex() + `", "type": "sha1"},
	  {"url": "ftp://ftp.example.org/pub/x.tgz", "hash": "` + s1.String() + `", "type": null, "name": "x"},
	  {"urls": ["git://example.org/repo", "https://example.org/y.tar.xz"], "hash": "` + h.SRI() + `", "type": "sha256", "extra": 1}
	]`
	entries, bad, err := ParseList(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 0 {
		t.Fatalf("bad entries: %v", bad)
	}
	if len(entries) != 5 {
		t.Fatalf("%d entries, want 5", len(entries))
	}
	want := []struct {
		name    string
		urls    int
		hash    Hash
		isPatch bool
	}{
		{"hello-2.12.tar.gz", 2, h, false},
		{"p.patch", 1, h, true},
		{"old-1.0.tar.bz2", 1, s1, false}, // old form, no name: the URL's base name
		{"x", 1, s1, false},
		{"repo", 2, h, false}, // the git URL stays, so the report says it was not tried
	}
	for i, w := range want {
		e := entries[i]
		if e.Index != i || e.Name != w.name || len(e.URLs) != w.urls || !e.Hash.Equal(w.hash) || e.IsPatch != w.isPatch {
			t.Errorf("entry %d = %+v, want %+v", i, e, w)
		}
	}
}

func TestParseListBadEntries(t *testing.T) {
	h := hashOf("sha256", []byte("x"))
	good := `{"urls": ["https://example.org/a.tar.gz"], "hash": "` + h.Nix32() + `", "type": "sha256", "name": "a"}`
	doc := `[
	  ` + good + `,
	  {"urls": ["https://example.org/b"], "type": "sha256"},
	  {"urls": ["https://example.org/c"], "hash": "nothex", "type": "sha256"},
	  {"urls": "https://example.org/d", "hash": "` + h.Nix32() + `", "type": "sha256"},
	  {"urls": ["https://example.org/e"], "hash": "` + h.Hex() + `", "type": "sha384"},
	  "just a string",
	  {"urls": ["file:///etc/passwd", "data:,hello"], "hash": "` + h.Nix32() + `", "type": "sha256"},
	  {"urls": [], "hash": "` + h.Nix32() + `", "type": "sha256"},
	  {"urls": ["https://example.org/f"], "hash": "` + h.Hex() + `", "type": null},
	  {"urls": ["https://example.org/g"], "hash": "` + h.Nix32() + `", "type": "sha256", "isPatch": "yes"},
	  {"hash": "` + h.Nix32() + `", "type": "sha256"},
	  {"urls": [1, 2], "hash": "` + h.Nix32() + `", "type": "sha256"},
	  {"urls": ["https://example.org/h"], "hash": "` + h.SRI() + `", "type": "sha1"},
	  null,
	  ` + good + `
	]`
	entries, bad, err := ParseList(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Index != 0 || entries[1].Index != 14 {
		t.Fatalf("entries %+v, want indices 0 and 14", entries)
	}
	wantBad := map[int]string{
		1:  "no hash",
		2:  "wrong length",
		3:  `field "urls" is a JSON string, want a list of strings`,
		4:  "unknown hash algorithm",
		5:  "not a JSON object",
		6:  "no http, https, ftp or mirror:// URL",
		7:  "urls is empty",
		8:  "no algorithm given",
		9:  `field "isPatch" is a JSON string, want a boolean`,
		10: "no urls",
		11: "is a JSON number, want a string",
		12: "but sha1 was expected",
		13: "not a JSON object",
	}
	if len(bad) != len(wantBad) {
		t.Errorf("%d bad entries, want %d: %v", len(bad), len(wantBad), bad)
	}
	for _, b := range bad {
		want, ok := wantBad[b.Index]
		if !ok {
			t.Errorf("unexpected bad entry %v", b)
			continue
		}
		msg := fmt.Sprint(b) // as a caller prints them
		if !strings.HasPrefix(msg, "entry ") || !strings.Contains(msg, want) {
			t.Errorf("bad entry %d: %q, want %q in it", b.Index, msg, want)
		}
	}
}

func TestParseListDocumentErrors(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"object", `{"urls": []}`, "not a JSON list"},
		{"string", `"x"`, "not a JSON list"},
		{"number", `42`, "not a JSON list"},
		{"empty", ``, "empty input"},
		{"truncated", `[{"urls": ["https://a/b"], "hash": "x"`, "entry 0"},
		{"unclosed", `[`, "EOF"},
		{"garbage", `[}`, "invalid character"},
		{"trailing", `[] []`, "data after the list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseList(strings.NewReader(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseList(%q) error %v, want %q in it", tc.doc, err, tc.want)
			}
		})
	}
	entries, bad, err := ParseList(strings.NewReader(" [ ] \n"))
	if err != nil || len(entries) != 0 || len(bad) != 0 {
		t.Errorf("empty list: %v %v %v", entries, bad, err)
	}
}

// spaces yields n bytes of JSON whitespace without holding them.
type spaces struct{ n int64 }

func (s *spaces) Read(p []byte) (int, error) {
	if s.n <= 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), s.n)
	for i := range p[:k] {
		p[i] = ' '
	}
	s.n -= k
	return int(k), nil
}

func TestParseListTooLarge(t *testing.T) {
	// The real byte limit: a list padded past 256 MiB, generated on the fly.
	r := io.MultiReader(strings.NewReader("["), &spaces{n: maxListBytes}, strings.NewReader("]"))
	_, _, err := ParseList(r)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("256 MiB + 2 bytes: %v, want ErrTooLarge", err)
	}

	// The limits, lowered so that the rest stays small. Exactly at the
	// byte limit is fine, one more is not.
	defer func(b int64, n int) { maxListBytes, maxListEntries = b, n }(maxListBytes, maxListEntries)
	maxListBytes = 1 << 10
	r = io.MultiReader(strings.NewReader("["), &spaces{n: maxListBytes - 2}, strings.NewReader("]"))
	if _, _, err := ParseList(r); err != nil {
		t.Fatalf("1 KiB list, 1 KiB limit: %v", err)
	}
	r = io.MultiReader(strings.NewReader("["), &spaces{n: maxListBytes - 1}, strings.NewReader("]"))
	if _, _, err := ParseList(r); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("1 KiB + 1 list, 1 KiB limit: %v", err)
	}
	maxListEntries = 3
	h := hashOf("md5", nil)
	e := `{"url": "https://a/b", "hash": "` + h.Hex() + `", "type": "md5"}`
	if _, _, err := ParseList(strings.NewReader("[" + strings.Repeat(e+",", 2) + e + "]")); err != nil {
		t.Fatalf("3 entries: %v", err)
	}
	_, _, err = ParseList(strings.NewReader("[" + strings.Repeat(e+",", 3) + e + "]"))
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "entries") {
		t.Fatalf("4 entries: %v, want ErrTooLarge", err)
	}
}
