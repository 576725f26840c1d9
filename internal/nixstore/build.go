package nixstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
)

// BuildOptions are the settings of one Build. Remote builders are always
// off: a distributed-build worker builds locally.
type BuildOptions struct {
	// Substituters replaces Nix's substituters (nil keeps the configured
	// ones; an empty non-nil slice turns them off).
	Substituters []string
	// TrustedKeys replaces trusted-public-keys when set.
	TrustedKeys []string
	// SystemFeatures replaces system-features when set.
	SystemFeatures []string
	// GCRoot, if set, is an indirect GC root to register for the outputs
	// (<GCRoot>, or <GCRoot>-<output> for several).
	GCRoot string
	// Log receives Nix's stderr, build log included, as it is written.
	Log io.Writer
}

// BuildError is a build that Nix ran and that failed (the builder exited
// non-zero, timed out, or produced the wrong hash): retrying elsewhere will
// not help. Other errors (missing inputs, a dead substituter) are not
// BuildErrors.
type BuildError struct {
	Drv      string
	ExitCode int // 100–107, as nix-store documents
}

func (e *BuildError) Error() string {
	return fmt.Sprintf("build of %s failed (nix-store exit code %d)", e.Drv, e.ExitCode)
}

// Build realises drv with nix-store --realise and returns its output paths.
func (s *Store) Build(ctx context.Context, drv string, o BuildOptions) ([]string, error) {
	// No remote builders: the build hook declines everything. (An empty
	// build-hook makes Nix 2.8 try to execute "".)
	args := []string{"--realise", drv, "--option", "builders", "", "--option", "narinfo-cache-negative-ttl", "0"}
	if o.Substituters != nil {
		args = append(args, "--option", "substituters", strings.Join(o.Substituters, " "))
	}
	if o.TrustedKeys != nil {
		args = append(args, "--option", "trusted-public-keys", strings.Join(o.TrustedKeys, " "))
	}
	if o.SystemFeatures != nil {
		args = append(args, "--option", "system-features", strings.Join(o.SystemFeatures, " "))
	}
	if o.GCRoot != "" {
		args = append(args, "--add-root", o.GCRoot)
	}
	var stdout strings.Builder
	stderr := &tailBuffer{max: stderrTail}
	cmd := s.command(ctx, "nix-store", args...)
	cmd.Stdout = &stdout
	cmd.Stderr = stderr
	if o.Log != nil {
		cmd.Stderr = io.MultiWriter(stderr, o.Log)
	}
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ctx.Err() == nil && ee.ExitCode() >= 100 && ee.ExitCode() <= 107 {
			return nil, &BuildError{Drv: drv, ExitCode: ee.ExitCode()}
		}
		return nil, s.cmdError(ctx, "nix-store --realise "+drv, err, stderr)
	}
	if o.GCRoot != "" {
		// With --add-root nix-store prints the roots, not the outputs.
		return s.outputs(ctx, drv)
	}
	return strings.Fields(stdout.String()), nil
}

func (s *Store) outputs(ctx context.Context, drv string) ([]string, error) {
	out, err := s.run(ctx, "nix-store --query --outputs "+drv, "nix-store", "--query", "--outputs", drv)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}

// CopyFrom copies paths and their closures from the binary cache at url
// into this store (nix copy --from). A .drv path is copied itself, not its
// outputs. noCheckSigs accepts unsigned paths; trustedKeys, if set, replaces
// trusted-public-keys for the copy.
func (s *Store) CopyFrom(ctx context.Context, url string, paths []string, noCheckSigs bool, trustedKeys []string) error {
	// The cache here is a gateway whose contents grow by the second: a
	// "not there" remembered for an hour (Nix's default) would be wrong.
	args := []string{"copy", "--from", url, "--option", "narinfo-cache-negative-ttl", "0"}
	if slices.ContainsFunc(paths, func(p string) bool { return strings.HasSuffix(p, ".drv") }) {
		// Without it Nix 2.8 takes a .drv to mean its outputs.
		args = append(args, "--derivation")
	}
	if s.uri != "" {
		args = append(args, "--to", s.uri)
	}
	if noCheckSigs {
		args = append(args, "--no-check-sigs")
	}
	if trustedKeys != nil {
		args = append(args, "--option", "trusted-public-keys", strings.Join(trustedKeys, " "))
	}
	_, err := s.run(ctx, "nix copy --from "+url+" "+describe(paths), "nix", append(append(args, "--"), paths...)...)
	return err
}

// Invalid returns those of paths (store paths) that are not valid in the
// store.
func (s *Store) Invalid(ctx context.Context, paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	return s.invalid(ctx, paths)
}
