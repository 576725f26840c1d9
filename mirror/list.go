package mirror

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
)

// Entry is one fixed-output source from find-tarballs.nix.
type Entry struct {
	Index   int      `json:"index"` // position in the list, from 0
	Name    string   `json:"name"`  // the derivation's name, or the first URL's base name
	URLs    []string `json:"urls"`  // in the order fetchurl tries them
	Hash    Hash     `json:"hash"`
	IsPatch bool     `json:"isPatch,omitempty"` // the output is not the downloaded file (postFetch)
}

// EntryError is a list entry that could not be used.
type EntryError struct {
	Index int
	Err   error
}

// Error and Unwrap have value receivers so that the values ParseList
// returns print and unwrap as errors.
func (e EntryError) Error() string { return fmt.Sprintf("entry %d: %v", e.Index, e.Err) }
func (e EntryError) Unwrap() error { return e.Err }

// Limits on what ParseList reads. A nixpkgs-wide list is about 20 MB and
// 50k entries; the limits only stop a runaway or hostile input from
// taking the machine's memory.
var (
	maxListBytes   int64 = 256 << 20
	maxListEntries       = 1 << 20
)

const (
	maxURLsPerEntry = 256
	maxURLLen       = 8 << 10
	maxNameLen      = 1 << 10
)

// ErrTooLarge is wrapped by ParseList's error when the input is over its
// size or entry limit.
var ErrTooLarge = errors.New("list too large")

// rawEntry takes both forms find-tarballs.nix has printed: the current
// {urls, hash, isPatch, type, name} and the older {url, hash, type[, name]}.
// Pointers tell a missing or null field from an empty one.
type rawEntry struct {
	URLs    *[]string `json:"urls"`
	URL     *string   `json:"url"`
	Hash    *string   `json:"hash"`
	Type    *string   `json:"type"`
	Name    *string   `json:"name"`
	IsPatch *bool     `json:"isPatch"`
}

// ParseList reads the JSON list printed by nixpkgs'
// maintainers/scripts/find-tarballs.nix. Entries that cannot be used
// (missing or malformed hash, urls not a list of strings, unknown type, no
// URL with a scheme we fetch...) are left out and reported, each with its
// index, so one bad entry does not stop a run over tens of thousands. The
// error is for the document itself: not a JSON list, invalid JSON, or over
// 256 MiB or 2^20 entries.
func ParseList(r io.Reader) ([]Entry, []EntryError, error) {
	lr := &io.LimitedReader{R: r, N: maxListBytes + 1}
	tooLarge := func() error {
		return fmt.Errorf("parse list: %w (over %d bytes)", ErrTooLarge, maxListBytes)
	}
	dec := json.NewDecoder(lr)
	tok, err := dec.Token()
	if err != nil {
		if lr.N <= 0 {
			return nil, nil, tooLarge()
		}
		if err == io.EOF {
			return nil, nil, errors.New("parse list: empty input, want a JSON list")
		}
		return nil, nil, fmt.Errorf("parse list: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, nil, fmt.Errorf("parse list: the document is not a JSON list (it starts with %v)", tok)
	}
	var (
		entries []Entry
		bad     []EntryError
	)
	for i := 0; dec.More(); i++ {
		if i >= maxListEntries {
			return nil, nil, fmt.Errorf("parse list: %w (over %d entries)", ErrTooLarge, maxListEntries)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if lr.N <= 0 {
				return nil, nil, tooLarge()
			}
			// A syntax error leaves no way to find the next entry.
			return nil, nil, fmt.Errorf("parse list: entry %d: %w", i, err)
		}
		e, err := parseEntry(raw)
		if err != nil {
			bad = append(bad, EntryError{Index: i, Err: err})
			continue
		}
		e.Index = i
		entries = append(entries, e)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		if lr.N <= 0 {
			return nil, nil, tooLarge()
		}
		return nil, nil, fmt.Errorf("parse list: %w", err)
	}
	_, err = dec.Token()
	if lr.N <= 0 { // one byte over the limit, even if the list ended there
		return nil, nil, tooLarge()
	}
	if err != io.EOF {
		return nil, nil, errors.New("parse list: data after the list")
	}
	return entries, bad, nil
}

func parseEntry(raw json.RawMessage) (Entry, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return Entry{}, errors.New("not a JSON object")
	}
	var r rawEntry
	if err := json.Unmarshal(raw, &r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return Entry{}, fmt.Errorf("field %q is a JSON %s, want %s", te.Field, te.Value, jsonKind(te.Type.String()))
		}
		return Entry{}, err
	}
	var e Entry
	switch {
	case r.URLs != nil:
		e.URLs = *r.URLs
	case r.URL != nil:
		e.URLs = []string{*r.URL}
	default:
		return Entry{}, errors.New("no urls")
	}
	if len(e.URLs) == 0 {
		return Entry{}, errors.New("urls is empty")
	}
	if len(e.URLs) > maxURLsPerEntry {
		return Entry{}, fmt.Errorf("%d urls, at most %d allowed", len(e.URLs), maxURLsPerEntry)
	}
	usable := 0
	for _, u := range e.URLs {
		if u == "" || len(u) > maxURLLen {
			return Entry{}, fmt.Errorf("url of %d bytes (want 1 to %d)", len(u), maxURLLen)
		}
		if fetchable(u) {
			usable++
		}
	}
	// Unsupported URLs beside a usable one stay in the entry, so that the
	// report says they were not tried.
	if usable == 0 {
		return Entry{}, fmt.Errorf("no http, https, ftp or mirror:// URL in %q", e.URLs)
	}
	if r.Hash == nil || *r.Hash == "" {
		return Entry{}, errors.New("no hash")
	}
	algo := ""
	if r.Type != nil {
		algo = *r.Type
	}
	h, err := ParseHash(*r.Hash, algo)
	if err != nil {
		return Entry{}, err
	}
	e.Hash = h
	if r.IsPatch != nil {
		e.IsPatch = *r.IsPatch
	}
	if r.Name != nil {
		e.Name = *r.Name
	} else {
		e.Name = baseName(e.URLs[0])
	}
	if len(e.Name) > maxNameLen {
		return Entry{}, fmt.Errorf("name of %d bytes, at most %d allowed", len(e.Name), maxNameLen)
	}
	return e, nil
}

// jsonKind names a Go type the way the list's author thinks of it.
func jsonKind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list of strings"
	case goType == "bool":
		return "a boolean"
	default:
		return "a string"
	}
}

// baseName is what fetchurl names a file when no name is given: the last
// component of the URL's path.
func baseName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Path == "" {
		return ""
	}
	return path.Base(u.Path)
}
