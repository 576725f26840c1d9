package docs

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// pages are the Markdown files whose links are checked, relative to this
// directory: the top-level README, this directory's pages and the nixos/
// README they link to.
func pages(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join("..", "README.md"), filepath.Join("..", "nixos", "README.md"))
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Fatal(err)
		}
	}
	if len(files) < 4 {
		t.Fatalf("only %d Markdown files: %v", len(files), files)
	}
	return files
}

var (
	fence      = regexp.MustCompile("^ {0,3}(```+|~~~+)")
	heading    = regexp.MustCompile(`^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$`)
	codeSpan   = regexp.MustCompile("`+[^`]*`+")
	inlineLink = regexp.MustCompile(`!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*(<[^>]*>|[^)\s]*)(?:\s+"[^"]*")?\s*\)`)
	refDef     = regexp.MustCompile(`^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)`)
	htmlAnchor = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
)

// page is what the test needs of a Markdown file: its links, with the line
// each is on, and the anchors its headings give.
type page struct {
	links   []link
	anchors map[string]bool
}

type link struct {
	line   int
	target string
}

func parse(text string) page {
	p := page{anchors: map[string]bool{}}
	seen := map[string]int{}
	var inFence string
	for i, line := range strings.Split(text, "\n") {
		if m := fence.FindStringSubmatch(line); m != nil {
			// A fence closes with the same character, at least as
			// many, and nothing after them.
			rest := strings.TrimSpace(line)
			switch {
			case inFence == "":
				inFence = m[1]
			case m[1][0] == inFence[0] && len(m[1]) >= len(inFence) && rest == m[1]:
				inFence = ""
			}
			continue
		}
		if inFence != "" {
			continue
		}
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			p.anchors[m[1]] = true
		}
		if m := heading.FindStringSubmatch(line); m != nil {
			s := slug(m[2])
			if n := seen[s]; n > 0 {
				p.anchors[s+"-"+strconv.Itoa(n)] = true
			} else {
				p.anchors[s] = true
			}
			seen[s]++
		}
		plain := codeSpan.ReplaceAllString(line, "")
		for _, m := range inlineLink.FindAllStringSubmatch(plain, -1) {
			p.links = append(p.links, link{i + 1, strings.Trim(m[2], "<>")})
		}
		if m := refDef.FindStringSubmatch(plain); m != nil {
			p.links = append(p.links, link{i + 1, strings.Trim(m[1], "<>")})
		}
	}
	return p
}

// slug is GitHub's anchor for a heading: the text without its Markdown
// (code spans keep their content, links their text), lower case, with
// everything but letters, digits, spaces, '-' and '_' removed and each
// space turned into '-'.
func slug(h string) string {
	h = inlineLink.ReplaceAllString(h, "$1")
	h = strings.NewReplacer("`", "", "*", "", "<", "", ">", "").Replace(h)
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// TestLinks checks that every relative link in the README and the docs
// leads to a file or directory that exists and, when it names an anchor in
// a Markdown file, that the file has a heading with that anchor.
func TestLinks(t *testing.T) {
	files := pages(t)
	parsed := map[string]page{}
	load := func(f string) (page, error) {
		f = filepath.Clean(f)
		if p, ok := parsed[f]; ok {
			return p, nil
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return page{}, err
		}
		p := parse(string(b))
		parsed[f] = p
		return p, nil
	}
	checked := 0
	for _, f := range files {
		p, err := load(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range p.links {
			u, err := url.Parse(l.target)
			if err != nil {
				t.Errorf("%s:%d: link %q: %v", f, l.line, l.target, err)
				continue
			}
			if u.Scheme != "" || u.Host != "" || strings.HasPrefix(l.target, "//") {
				continue // absolute: not ours to check
			}
			checked++
			target := filepath.Clean(f)
			if u.Path != "" {
				if strings.HasPrefix(u.Path, "/") {
					t.Errorf("%s:%d: link %q is absolute on this machine; use a relative path", f, l.line, l.target)
					continue
				}
				target = filepath.Join(filepath.Dir(f), filepath.FromSlash(u.Path))
				if _, err := os.Stat(target); err != nil {
					t.Errorf("%s:%d: link %q: no such file (%s)", f, l.line, l.target, target)
					continue
				}
			}
			if u.Fragment == "" {
				continue
			}
			if !strings.HasSuffix(target, ".md") {
				continue // anchors into other files (code lines) are GitHub's business
			}
			tp, err := load(target)
			if err != nil {
				t.Errorf("%s:%d: link %q: %v", f, l.line, l.target, err)
				continue
			}
			if !tp.anchors[u.Fragment] {
				t.Errorf("%s:%d: link %q: %s has no heading with anchor #%s", f, l.line, l.target, target, u.Fragment)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative links found: is the parser broken?")
	}
	t.Logf("%d relative links in %d files", checked, len(files))
}

// TestSlug pins the anchors GitHub gives a few kinds of heading.
func TestSlug(t *testing.T) {
	for h, want := range map[string]string{
		"Quick start":                                "quick-start",
		"Share a cache between machines":             "share-a-cache-between-machines",
		"`fetchIPFS` and `cache-inputs`":             "fetchipfs-and-cache-inputs",
		"Publish from CI: the post-build-hook":       "publish-from-ci-the-post-build-hook",
		"NixOS module, from the flake":               "nixos-module-from-the-flake",
		"Gateway (Nix binary-cache protocol)":        "gateway-nix-binary-cache-protocol",
		"Design notes (where this differs, and why)": "design-notes-where-this-differs-and-why",
		"[Links](other.md) and **bold** text":        "links-and-bold-text",
		"Über_all 2.0":                               "über_all-20",
	} {
		if got := slug(h); got != want {
			t.Errorf("slug(%q) = %q, want %q", h, got, want)
		}
	}
	p := parse("# A\n\n## A\n\n```\n# not a heading\n[x](nowhere.md)\n```\n\n### A\n[y](there.md#a-1) `[z](code.md)`\n")
	for _, a := range []string{"a", "a-1", "a-2"} {
		if !p.anchors[a] {
			t.Errorf("anchor %q missing: %v", a, p.anchors)
		}
	}
	if p.anchors["not-a-heading"] {
		t.Error("a line in a code block counted as a heading")
	}
	if len(p.links) != 1 || p.links[0].target != "there.md#a-1" {
		t.Errorf("links %v, want only there.md#a-1", p.links)
	}
}
