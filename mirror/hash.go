package mirror

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// Algos are the hash algorithms a fixed-output source can name, in the order
// tarballs.nixos.org lists them. Every mirrored file is recorded under all of
// them, whichever one its entry gave.
var Algos = []string{"md5", "sha1", "sha256", "sha512"}

// hashSize is the digest length of each algorithm we accept; anything else
// (blake3, sha384...) is unknown to Nix's fetchers and refused.
var hashSize = map[string]int{"md5": md5.Size, "sha1": sha1.Size, "sha256": sha256.Size, "sha512": sha512.Size}

func newHasher(algo string) hash.Hash {
	switch algo {
	case "md5":
		return md5.New()
	case "sha1":
		return sha1.New()
	case "sha256":
		return sha256.New()
	case "sha512":
		return sha512.New()
	}
	panic("mirror: unknown hash algorithm " + algo)
}

// Hash is a digest with its algorithm: the outputHash of a fixed-output
// derivation.
type Hash struct {
	Algo   string // md5, sha1, sha256 or sha512
	Digest []byte
}

// ErrUnknownAlgo is wrapped by errors about hash algorithms Nix's fetchers
// do not use.
var ErrUnknownAlgo = errors.New("unknown hash algorithm")

// ParseHash parses a hash the way Nix does: s is "<algo>-<base64>" (SRI),
// "<algo>:<digest>", or a bare digest in base16, nix32 or base64, told apart
// by its length (the three lengths differ for every algorithm). algo may be
// empty only when s names its own algorithm; when both are given they must
// agree. Base16 may be in either case; nix32 and base64 are case-sensitive.
func ParseHash(s, algo string) (Hash, error) {
	if algo != "" {
		if _, ok := hashSize[algo]; !ok {
			return Hash{}, fmt.Errorf("hash %q: %w %q", s, ErrUnknownAlgo, algo)
		}
	}
	// '-' and ':' occur in none of the digest alphabets, so they can only
	// end an algorithm prefix.
	sri := false
	if i := strings.IndexAny(s, "-:"); i >= 0 {
		prefix := s[:i]
		if _, ok := hashSize[prefix]; !ok {
			return Hash{}, fmt.Errorf("hash %q: %w %q", s, ErrUnknownAlgo, prefix)
		}
		if algo != "" && algo != prefix {
			return Hash{}, fmt.Errorf("hash %q is %s, but %s was expected", s, prefix, algo)
		}
		sri = s[i] == '-'
		algo, s = prefix, s[i+1:]
	}
	if algo == "" {
		return Hash{}, fmt.Errorf("hash %q: no algorithm given (use SRI, \"sha256:...\" or a type)", s)
	}
	size := hashSize[algo]
	var (
		digest []byte
		err    error
	)
	switch {
	case sri:
		// SRI is always base64, whatever its length.
		digest, err = base64.StdEncoding.DecodeString(s)
		if err == nil && len(digest) != size {
			err = fmt.Errorf("decodes to %d bytes, want %d", len(digest), size)
		}
	case len(s) == hex.EncodedLen(size):
		digest, err = hex.DecodeString(s)
	case len(s) == nixbase32.EncodedLen(size):
		digest, err = nixbase32.DecodeString(s)
		if err == nil && len(digest) != size {
			err = fmt.Errorf("decodes to %d bytes, want %d", len(digest), size)
		}
	case len(s) == base64.StdEncoding.EncodedLen(size):
		digest, err = base64.StdEncoding.DecodeString(s)
		if err == nil && len(digest) != size {
			err = fmt.Errorf("decodes to %d bytes, want %d", len(digest), size)
		}
	default:
		return Hash{}, fmt.Errorf("%s hash %q has the wrong length %d (want %d base16, %d nix32 or %d base64 characters)",
			algo, s, len(s), hex.EncodedLen(size), nixbase32.EncodedLen(size), base64.StdEncoding.EncodedLen(size))
	}
	if err != nil {
		return Hash{}, fmt.Errorf("%s hash %q: %w", algo, s, err)
	}
	return Hash{Algo: algo, Digest: digest}, nil
}

// Valid reports whether h has a known algorithm and a digest of its length.
func (h Hash) Valid() bool {
	size, ok := hashSize[h.Algo]
	return ok && len(h.Digest) == size
}

// Equal reports whether two hashes have the same algorithm and digest.
func (h Hash) Equal(o Hash) bool { return h.Algo == o.Algo && bytes.Equal(h.Digest, o.Digest) }

// Hex is the digest in lower-case base16, as tarballs.nixos.org and Nix's
// hashed-mirrors lay files out.
func (h Hash) Hex() string { return hex.EncodeToString(h.Digest) }

// Nix32 is the digest in Nix's base32.
func (h Hash) Nix32() string { return nixbase32.EncodeToString(h.Digest) }

// SRI is "<algo>-<base64>".
func (h Hash) SRI() string { return h.Algo + "-" + base64.StdEncoding.EncodeToString(h.Digest) }

// String is "<algo>:<nix32>", the form Nix prints.
func (h Hash) String() string { return h.Algo + ":" + h.Nix32() }

// MarshalText writes String, so that entries and reports read well as JSON.
// An invalid hash (only a caller can build one) is written "<algo>:<hex>"
// rather than failing, so that a report always encodes.
func (h Hash) MarshalText() ([]byte, error) {
	if !h.Valid() {
		return []byte(h.Algo + ":" + h.Hex()), nil
	}
	return []byte(h.String()), nil
}

// UnmarshalText accepts every form ParseHash does that names its algorithm.
func (h *Hash) UnmarshalText(b []byte) error {
	p, err := ParseHash(string(b), "")
	if err != nil {
		return err
	}
	*h = p
	return nil
}
