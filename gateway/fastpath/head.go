package fastpath

import (
	"bytes"
	"errors"
)

// maxHead bounds a request head the fast path parses; a longer one goes to
// net/http, which has its own limit.
const maxHead = 4096

// maxFields bounds the header fields of a request the fast path answers.
const maxFields = 32

// Request is a request the fast path parsed: a keep-alive HTTP/1.1 GET
// with no body and only header fields that cannot change the answer.
type Request struct {
	// Path is the request target: origin-form, no query, and only the
	// characters [A-Za-z0-9._-/].
	Path string
	// AcceptEncoding is the Accept-Encoding field, "" if none.
	AcceptEncoding string
}

// errHandOff means the head is well-formed enough to be left to net/http,
// which answers (or refuses) everything the fast path does not.
var errHandOff = errors.New("not a fast-path request")

// parseHead parses a complete request head (request line and header fields,
// ending with the empty line). Anything outside the narrow grammar below is
// errHandOff: the fast path never refuses a request itself, so net/http's
// answer to an odd or hostile request stays the only one.
//
//	GET SP path SP HTTP/1.1 CRLF
//	*( name ":" OWS value OWS CRLF )
//	CRLF
//
// with exactly one Host and, of the other fields, only those in ignored,
// Accept-Encoding (at most once) and Connection: keep-alive.
func parseHead(head []byte) (Request, error) {
	var r Request
	line, rest, ok := cutCRLF(head)
	if !ok {
		return r, errHandOff
	}
	target, ok := bytes.CutPrefix(line, []byte("GET "))
	if !ok {
		return r, errHandOff
	}
	target, ok = bytes.CutSuffix(target, []byte(" HTTP/1.1"))
	if !ok || len(target) == 0 || target[0] != '/' {
		return r, errHandOff
	}
	for _, c := range target {
		if !pathChar(c) {
			return r, errHandOff
		}
	}
	hosts, encodings, fields := 0, 0, 0
	for {
		line, rest, ok = cutCRLF(rest)
		if !ok {
			return r, errHandOff
		}
		if len(line) == 0 {
			break
		}
		if fields++; fields > maxFields {
			return r, errHandOff
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 {
			return r, errHandOff
		}
		for _, c := range name {
			if !tokenChar(c) {
				return r, errHandOff // also catches obs-fold and space before ':'
			}
		}
		value = bytes.Trim(value, " \t")
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return r, errHandOff
			}
		}
		switch {
		case equalFold(name, "host"):
			for _, c := range value {
				if !hostChar(c) {
					return r, errHandOff
				}
			}
			hosts++
		case equalFold(name, "accept-encoding"):
			r.AcceptEncoding = string(value)
			encodings++
		case equalFold(name, "connection"):
			if !equalFold(value, "keep-alive") {
				return r, errHandOff // close, upgrade, or a list: net/http's
			}
		case ignored(name):
		default:
			return r, errHandOff
		}
	}
	if hosts != 1 || encodings > 1 || len(rest) != 0 {
		return r, errHandOff
	}
	r.Path = string(target)
	return r, nil
}

// ignored are the request fields that cannot change a fast-path answer.
func ignored(name []byte) bool {
	for _, n := range []string{"user-agent", "accept", "accept-language", "cache-control", "pragma"} {
		if equalFold(name, n) {
			return true
		}
	}
	return false
}

func cutCRLF(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	return b[:i-1], b[i+1:], true
}

func pathChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '-' || c == '_' || c == '/'
}

func hostChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '-' || c == ':' || c == '[' || c == ']'
}

// tokenChar is RFC 9110's tchar.
func tokenChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

// equalFold compares an ASCII field name or value with a lower-case word.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
