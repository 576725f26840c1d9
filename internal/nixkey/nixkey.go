// Package nixkey writes Nix signing key pairs: the files
// `nix-store --generate-binary-cache-key` writes, which Nix reads as
// secret-key-files and trusted-public-keys.
package nixkey

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// Files are the two files of a key pair and the public key.
type Files struct {
	Secret string `json:"secretKeyFile"` // name.sec, mode 0600
	Public string `json:"publicKeyFile"` // name.pub, mode 0644
	Key    string `json:"publicKey"`     // name:base64, for trusted-public-keys
}

// CheckName refuses key names Nix could not use or that would not make a
// plain file name: empty, with ':', '/', spaces or control characters, or
// starting with '.'.
func CheckName(name string) error {
	if name == "" {
		return errors.New("key name is empty")
	}
	if strings.HasPrefix(name, ".") {
		return fmt.Errorf("key name %q starts with '.'", name)
	}
	for _, r := range name {
		if r == ':' || r == '/' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("key name %q: %q is not allowed in a key name", name, r)
		}
	}
	return nil
}

// Generate writes a new Ed25519 key pair called name into dir as name.sec
// and name.pub, each "name:base64" with no newline, as Nix writes them. It
// refuses to overwrite either file, and leaves nothing behind on error.
func Generate(dir, name string) (Files, error) {
	if err := CheckName(name); err != nil {
		return Files{}, err
	}
	if st, err := os.Stat(dir); err != nil {
		return Files{}, fmt.Errorf("key directory: %w", err)
	} else if !st.IsDir() {
		return Files{}, fmt.Errorf("key directory %s is not a directory", dir)
	}
	f := Files{Secret: filepath.Join(dir, name+".sec"), Public: filepath.Join(dir, name+".pub")}
	// Check both first, so an existing .pub is not found after the .sec
	// was written; O_EXCL below closes the race.
	for _, p := range []string{f.Secret, f.Public} {
		if _, err := os.Lstat(p); err == nil {
			return Files{}, fmt.Errorf("%s exists: refusing to overwrite a key file", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return Files{}, fmt.Errorf("check %s: %w", p, err)
		}
	}
	sk, pk, err := signature.GenerateKeypair(name, rand.Reader)
	if err != nil {
		return Files{}, fmt.Errorf("generate key %s: %w", name, err)
	}
	if err := writeNew(f.Secret, sk.String(), 0o600); err != nil {
		return Files{}, err
	}
	if err := writeNew(f.Public, pk.String(), 0o644); err != nil {
		os.Remove(f.Secret)
		return Files{}, err
	}
	f.Key = pk.String()
	return f, nil
}

// writeNew creates path (which must not exist) with exactly mode, whatever
// the umask, and writes s to it; on error the file is removed.
func writeNew(path, s string, mode os.FileMode) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists: refusing to overwrite a key file", path)
		}
		return fmt.Errorf("create %s: %w", path, err)
	}
	err = fh.Chmod(mode)
	if err == nil {
		_, err = fh.WriteString(s)
	}
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
