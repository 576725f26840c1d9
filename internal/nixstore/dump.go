package nixstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
)

// Dump streams the NAR serialisation of a store path, like `nix-store --dump`.
//
// It runs `nix store dump-path` rather than `nix-store --dump`: the latter
// ignores --store and dumps whatever file system path it is given, which for
// a chroot store is the wrong tree (or none), and it does not check that the
// path is valid. A .drv path is dumped itself, not its outputs.
//
// Dump returns once Nix has started writing, so an invalid path or another
// early failure is reported by Dump itself. If Nix fails later, Read returns
// the error instead of io.EOF, so a truncated NAR cannot pass for a whole one.
// Close waits for Nix and returns that error; closing before the end stops
// Nix and is not an error.
func (s *Store) Dump(ctx context.Context, path string) (io.ReadCloser, error) {
	p, err := s.Resolve(ctx, path)
	if err != nil {
		return nil, err
	}
	// Checked first: for an invalid path `nix store dump-path` would ask
	// every substituter about it before failing (see query).
	invalid, err := s.invalid(ctx, []string{p})
	if err != nil {
		return nil, err
	}
	if len(invalid) > 0 {
		return nil, s.invalidError(invalid)
	}
	args := []string{"store", "dump-path"}
	if strings.HasSuffix(p, ".drv") {
		args = append(args, "--derivation") // see query for why
	}
	args = append(args, "--", p)

	d := &dump{what: "nix store dump-path " + p, ctx: ctx, store: s, stderr: &tailBuffer{max: stderrTail}}
	d.cmd = s.command(ctx, "nix", args...)
	d.cmd.Stderr = d.stderr
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.what, err)
	}
	if err := d.cmd.Start(); err != nil {
		return nil, s.cmdError(ctx, d.what, err, d.stderr)
	}
	d.r = bufio.NewReaderSize(stdout, 64<<10)
	// A NAR is never empty, so waiting for its first byte separates "Nix
	// could not start dumping" (reported here) from a stream to hand out.
	if _, err := d.r.Peek(1); err != nil {
		if err := d.finish(false); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s: no output", d.what)
	}
	return d, nil
}

type dump struct {
	what   string
	ctx    context.Context
	store  *Store
	cmd    *exec.Cmd
	stderr *tailBuffer
	r      *bufio.Reader

	once sync.Once
	err  error // result of finish
	eof  bool  // stdout reached its end
}

func (d *dump) Read(p []byte) (int, error) {
	if d.eof {
		return 0, d.endErr()
	}
	n, err := d.r.Read(p)
	if err == nil {
		return n, nil
	}
	// Any read error, EOF included, means Nix is done or broken: find out
	// which before telling the caller the stream ended cleanly.
	d.eof = true
	if err := d.finish(false); err != nil {
		return n, err
	}
	if !errors.Is(err, io.EOF) {
		return n, fmt.Errorf("%s: read: %w", d.what, err)
	}
	return n, io.EOF
}

func (d *dump) endErr() error {
	if d.err != nil {
		return d.err
	}
	return io.EOF
}

// Close stops Nix if the stream was not read to its end, then waits for it.
func (d *dump) Close() error {
	if d.eof {
		return d.finish(false)
	}
	d.eof = true
	return d.finish(true)
}

// finish waits for Nix once and records its outcome. When abandon is set the
// caller gave up on the stream: Nix is killed and its failure (a broken pipe
// or the signal) is expected, not an error.
func (d *dump) finish(abandon bool) error {
	d.once.Do(func() {
		if abandon {
			_ = d.cmd.Process.Kill()
			_ = d.cmd.Wait()
			return
		}
		if err := d.cmd.Wait(); err != nil {
			d.err = d.store.cmdError(d.ctx, d.what, err, d.stderr)
		}
	})
	return d.err
}
