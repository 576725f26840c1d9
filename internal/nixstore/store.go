// Package nixstore reads path infos, closures, signatures and NAR dumps from
// a Nix store by running the Nix command-line tools (nix, nix-store).
//
// It works for the default store and for any store URI Nix accepts, notably
// "chroot" stores given as a plain directory (--store /tmp/x): their logical
// store directory is still /nix/store, while the files live under
// /tmp/x/nix/store. Store paths passed to and returned by this package are
// always logical paths.
//
// Commands inherit the caller's environment unchanged (NIX_CONFIG included);
// the nix-command experimental feature is enabled per command with
// --extra-experimental-features, which adds to the configured features rather
// than replacing them.
package nixstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/storepath"
)

// ErrInvalidPath is wrapped by errors about a store path that is not valid
// (not present) in the store, so callers can tell "missing" from "broken".
var ErrInvalidPath = errors.New("path not valid")

// Store is a Nix store reached through the Nix CLI. The zero value is not
// usable; use New. A Store is safe for concurrent use.
type Store struct {
	uri string

	mu       sync.Mutex
	storeDir string // cached answer of StoreDir
}

// New returns the store with the given URI, passed to Nix as --store.
// The empty URI means Nix's default store (whatever the configuration says).
func New(uri string) *Store {
	return &Store{uri: uri}
}

// URI returns the store URI given to New ("" for the default store).
func (s *Store) URI() string { return s.uri }

// String names the store in error messages.
func (s *Store) String() string {
	if s.uri == "" {
		return "default store"
	}
	return "store " + s.uri
}

// StoreDir returns the logical store directory, normally "/nix/store", as
// Nix itself reports it (it honours NIX_STORE_DIR and ?store= settings).
// The answer is cached after the first success.
func (s *Store) StoreDir(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.storeDir != "" {
		return s.storeDir, nil
	}
	out, err := s.run(ctx, "nix eval builtins.storeDir", "nix", "eval", "--raw", "--expr", "builtins.storeDir")
	if err != nil {
		return "", err
	}
	dir := strings.TrimSpace(string(out))
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("nix eval builtins.storeDir (%s): unexpected answer %q", s, dir)
	}
	s.storeDir = filepath.Clean(dir)
	return s.storeDir, nil
}

// Resolve returns the store path that p denotes: p itself if it is a store
// path; the enclosing store path if p lies inside one (/nix/store/x-foo/bin);
// the target of a chain of symlinks ending in the store (./result); or, for a
// chroot store given as a directory, the logical path of a physical one
// (/tmp/x/nix/store/x-foo). It does not check that the path is valid.
func (s *Store) Resolve(ctx context.Context, p string) (string, error) {
	dir, err := s.StoreDir(ctx)
	if err != nil {
		return "", err
	}
	return s.resolveIn(dir, p)
}

// ResolveStatic is Resolve without asking Nix for the store directory: it
// takes $NIX_STORE_DIR, else /nix/store. It runs no process, for callers
// that must return at once (a post-build-hook queueing paths).
func (s *Store) ResolveStatic(p string) (string, error) {
	dir := "/nix/store"
	if d := os.Getenv("NIX_STORE_DIR"); d != "" {
		dir = filepath.Clean(d)
	}
	return s.resolveIn(dir, p)
}

func (s *Store) resolveIn(dir, p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", p, err)
	}
	realDir := ""
	if root := s.chrootDir(); root != "" {
		realDir = filepath.Join(root, dir)
	}
	// 40 hops is the kernel's own symlink limit (MAXSYMLINKS).
	for range 40 {
		if sp, ok, err := inDir(dir, dir, abs); ok {
			return sp, err
		}
		if realDir != "" {
			if sp, ok, err := inDir(realDir, dir, abs); ok {
				return sp, err
			}
		}
		fi, err := os.Lstat(abs)
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", p, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return "", fmt.Errorf("resolve %s: %s is not in the Nix store %s", p, abs, dir)
		}
		target, err := os.Readlink(abs)
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", p, err)
		}
		// Relative targets are relative to the link's directory; like Nix's
		// followLinksToStore this is done lexically.
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(abs), target)
		}
		abs = filepath.Clean(target)
	}
	return "", fmt.Errorf("resolve %s: too many levels of symbolic links", p)
}

// inDir reports whether p lies inside dir; if so it returns the store path
// (under storeDir) of its first component, validated with go-nix's storepath.
func inDir(dir, storeDir, p string) (string, bool, error) {
	rest, ok := strings.CutPrefix(p, dir+"/")
	if !ok {
		return "", false, nil
	}
	base, _, _ := strings.Cut(rest, "/")
	if _, err := storepath.FromString(base); err != nil {
		return "", true, fmt.Errorf("%s: not a valid store path name: %w", p, err)
	}
	return storeDir + "/" + base, true, nil
}

// chrootDir returns the root directory of a local chroot store URI ("/tmp/x"
// or "local?root=/tmp/x"), or "" when the store is not one.
func (s *Store) chrootDir() string {
	u, err := url.Parse(s.uri)
	if err != nil || u.Scheme != "" {
		return ""
	}
	switch {
	case strings.HasPrefix(u.Path, "/"):
		return filepath.Clean(u.Path)
	case u.Path == "local":
		if root := u.Query().Get("root"); strings.HasPrefix(root, "/") {
			return filepath.Clean(root)
		}
	}
	return ""
}

// LocalPath returns where the files of store path p lie on this machine when
// Nix keeps the store in a local directory: the default store (and auto,
// local, daemon, unix://) at p itself, a chroot store under its root. ok is
// false for other stores (ssh://, https://, ...). Nothing is checked here:
// whoever reads the files must compare what they read with the NarHash Nix
// recorded, and fall back to Nix's own dump.
func (s *Store) LocalPath(p string) (string, bool) {
	if root := s.chrootDir(); root != "" {
		return filepath.Join(root, p), true
	}
	switch {
	case s.uri == "", s.uri == "auto", s.uri == "local", s.uri == "daemon", strings.HasPrefix(s.uri, "unix://"):
		return p, true
	}
	return "", false
}

// Add copies a file or directory tree into the store (nix-store --add, which
// hashes recursively, i.e. the NAR) and returns its store path. The store
// path's name is the base name of path.
func (s *Store) Add(ctx context.Context, path string) (string, error) {
	out, err := s.run(ctx, "nix-store --add "+path, "nix-store", "--add", path)
	if err != nil {
		return "", err
	}
	return singleLine("nix-store --add "+path, out)
}

// Realise builds (or checks) the derivation drv in the store and returns its
// output paths. No GC root is registered: callers that need the outputs to
// survive a garbage collection must root them themselves.
func (s *Store) Realise(ctx context.Context, drv string) ([]string, error) {
	drv, err := s.Resolve(ctx, drv)
	if err != nil {
		return nil, err
	}
	out, err := s.run(ctx, "nix-store --realise "+drv, "nix-store", "--realise", drv)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}

// Valid reports whether path (resolved as by Resolve) is valid in the store.
func (s *Store) Valid(ctx context.Context, path string) (bool, error) {
	p, err := s.Resolve(ctx, path)
	if err != nil {
		return false, err
	}
	invalid, err := s.invalid(ctx, []string{p})
	if err != nil {
		return false, err
	}
	return len(invalid) == 0, nil
}

func singleLine(what string, out []byte) (string, error) {
	line := strings.TrimSpace(string(out))
	if line == "" || strings.ContainsAny(line, "\n") {
		return "", fmt.Errorf("%s: unexpected output %q", what, out)
	}
	return line, nil
}

// command prepares a Nix tool invocation against s. The environment is
// inherited as is so that the caller's NIX_CONFIG, NIX_REMOTE etc. apply.
func (s *Store) command(ctx context.Context, tool string, args ...string) *exec.Cmd {
	var a []string
	if tool == "nix" {
		a = append(a, "--extra-experimental-features", "nix-command")
	}
	if s.uri != "" {
		a = append(a, "--store", s.uri)
	}
	cmd := exec.CommandContext(ctx, tool, append(a, args...)...)
	// If a grandchild (a builder, say) keeps stdout/stderr open after Nix
	// exits or is killed, don't let Wait hang on it forever.
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// run runs a Nix tool and returns its stdout. what describes the operation
// for the error message, which also carries the tail of stderr.
func (s *Store) run(ctx context.Context, what, tool string, args ...string) ([]byte, error) {
	var stdout bytes.Buffer
	stderr := &tailBuffer{max: stderrTail}
	cmd := s.command(ctx, tool, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = stderr
	if err := cmd.Run(); err != nil {
		return nil, s.cmdError(ctx, what, err, stderr)
	}
	return stdout.Bytes(), nil
}

// cmdError builds the error for a failed command: what failed, why
// (the context's error if it was cancelled), and what Nix said.
func (s *Store) cmdError(ctx context.Context, what string, err error, stderr *tailBuffer) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		err = fmt.Errorf("%w (%v)", ctxErr, err)
	}
	if s.uri != "" {
		what += " (" + s.String() + ")"
	}
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		return fmt.Errorf("%s: %w: %s", what, err, msg)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// stderrTail bounds how much of a command's stderr is kept for errors: build
// logs can be long, and Nix prints its error last.
const stderrTail = 16 << 10

// tailBuffer is an io.Writer keeping only the last max bytes written.
type tailBuffer struct {
	max int
	mu  sync.Mutex // exec may write from its copying goroutine while we read
	buf []byte
	cut bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
		b.cut = true
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cut {
		return "..." + string(b.buf)
	}
	return string(b.buf)
}

// describe shortens a list of paths for messages.
func describe(paths []string) string {
	const show = 3
	if len(paths) <= show {
		return strings.Join(paths, " ")
	}
	return fmt.Sprintf("%s (and %d more)", strings.Join(paths[:show], " "), len(paths)-show)
}
