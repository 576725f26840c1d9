package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Mirrors maps a mirror name (the NAME in mirror://NAME/path) to its base
// URLs, in the order fetchurl tries them: nixpkgs'
// pkgs/build-support/fetchurl/mirrors.nix.
type Mirrors map[string][]string

// ErrScheme is wrapped by errors about URLs we do not fetch.
var ErrScheme = errors.New("unsupported URL scheme (only http, https, ftp and mirror://)")

// maxMirrorsBytes bounds a mirrors list; nixpkgs' is about 20 KB.
const maxMirrorsBytes = 16 << 20

// LoadMirrors reads a mirrors list: a JSON object {name: [base URL...]}, or,
// for a file ending in .nix, nixpkgs' mirrors.nix, evaluated with the real
// Nix (`nix-instantiate --eval --strict --json`) since only Nix evaluates Nix.
// Attributes that are not lists of strings (mirrors.nix has none today) and
// base URLs that are not http, https or ftp are dropped with a warning.
func LoadMirrors(ctx context.Context, file string) (Mirrors, error) {
	var data []byte
	if strings.HasSuffix(file, ".nix") {
		abs, err := filepath.Abs(file) // so nix-instantiate reads a path, never a <lookup> or an option
		if err != nil {
			return nil, fmt.Errorf("load mirrors %s: %w", file, err)
		}
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, "nix-instantiate", "--eval", "--strict", "--json", abs)
		cmd.Stderr = &stderr
		data, err = cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("load mirrors: nix-instantiate --eval %s: %w: %s", file, err, strings.TrimSpace(stderr.String()))
		}
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("load mirrors: %w", err)
		}
		defer f.Close()
		data, err = io.ReadAll(io.LimitReader(f, maxMirrorsBytes+1))
		if err != nil {
			return nil, fmt.Errorf("load mirrors %s: %w", file, err)
		}
		if len(data) > maxMirrorsBytes {
			return nil, fmt.Errorf("load mirrors %s: over %d bytes", file, maxMirrorsBytes)
		}
	}
	m, err := parseMirrors(data)
	if err != nil {
		return nil, fmt.Errorf("load mirrors %s: %w", file, err)
	}
	return m, nil
}

func parseMirrors(data []byte) (Mirrors, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("want a JSON object of lists of URLs: %w", err)
	}
	m := Mirrors{}
	for name, v := range raw {
		var bases []string
		if err := json.Unmarshal(v, &bases); err != nil {
			slog.Warn("mirrors: not a list of URLs, ignored", "name", name)
			continue
		}
		kept := bases[:0]
		for _, b := range bases {
			if s := scheme(b); s == "http" || s == "https" || s == "ftp" {
				kept = append(kept, b)
			} else {
				slog.Warn("mirrors: base URL not fetched, ignored", "name", name, "url", b)
			}
		}
		m[name] = kept
	}
	return m, nil
}

// scheme is the lower-cased scheme of a URL, or "" if it has none.
func scheme(raw string) string {
	i := strings.Index(raw, ":")
	if i <= 0 {
		return ""
	}
	return strings.ToLower(raw[:i])
}

// fetchable reports whether a URL has a scheme we fetch (before expansion).
func fetchable(raw string) bool {
	switch scheme(raw) {
	case "http", "https", "ftp", "mirror":
		return true
	}
	return false
}

// Expand returns the URLs to try for raw, in order: for mirror://NAME/path
// each base URL of mirror NAME followed by path, as fetchurl does; any
// other http, https or ftp URL unchanged. Other schemes (file:, data:,
// git:...) are refused, as are URLs with no host.
func (m Mirrors) Expand(raw string) ([]string, error) {
	switch scheme(raw) {
	case "http", "https", "ftp":
		if err := checkURL(raw); err != nil {
			return nil, err
		}
		return []string{raw}, nil
	case "mirror":
	default:
		return nil, fmt.Errorf("%s: %w", redact(raw), ErrScheme)
	}
	rest, ok := strings.CutPrefix(raw[len("mirror:"):], "//")
	if !ok {
		return nil, fmt.Errorf("%s: want mirror://NAME/path", raw)
	}
	name, file, ok := strings.Cut(rest, "/")
	if !ok || name == "" || file == "" {
		return nil, fmt.Errorf("%s: want mirror://NAME/path", raw)
	}
	bases, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("%s: unknown mirror %q (not in the mirrors list)", raw, name)
	}
	var out []string
	for _, b := range bases {
		if !strings.HasSuffix(b, "/") {
			b += "/"
		}
		u := b + file
		if err := checkURL(u); err != nil {
			return nil, fmt.Errorf("%s: %w", raw, err)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: mirror %q has no usable URLs", raw, name)
	}
	return out, nil
}

// checkURL refuses what http.Client or the FTP client would choke on later
// with a less helpful message.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("bad URL: %w", err)
	}
	switch u.Scheme {
	case "http", "https", "ftp":
	default:
		return fmt.Errorf("%s: %w", u.Redacted(), ErrScheme)
	}
	if u.Host == "" {
		return fmt.Errorf("%s: no host", u.Redacted())
	}
	return nil
}

// redact hides a password in a URL for messages and logs.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Redacted()
}
