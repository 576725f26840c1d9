package publish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/wire"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/ipldnar"
	"github.com/nixipfs/nixipfs/manifests"
	"github.com/nixipfs/nixipfs/mirror"
)

// MirrorSink stores verified downloads for mirror.Mirror: each file is
// imported exactly as a flat store path holding it would be (so the tarball
// and a fetchurl output share one CID), pinned, and recorded under each of
// its hashes. Records are written in batches; Close writes the rest and
// re-publishes the manifest on IPNS once.
type MirrorSink struct {
	Node     *ipfsnode.Node
	Manifest *manifests.Local
	// FlushEvery bounds how many files may wait for a manifest update: a
	// crash loses at most that many records (the files stay pinned and a
	// re-run records them again).
	FlushEvery int

	mu      sync.Mutex
	cur     *manifests.Manifest
	pending map[string]cid.Cid
	files   int
	changed bool
}

var _ mirror.Sink = (*MirrorSink)(nil)

// Has reports whether a file with this hash is recorded (in the manifest,
// or waiting in this run's batch).
func (s *MirrorSink) Has(ctx context.Context, h mirror.Hash) (bool, error) {
	key := manifests.KeySource(h.Algo, h.Digest)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pending[key]; ok {
		return true, nil
	}
	if s.cur == nil {
		m, err := s.Manifest.Current(ctx)
		if err != nil {
			return false, err
		}
		s.cur = m
	}
	_, err := s.cur.Get(ctx, key)
	if errors.Is(err, manifests.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Add imports a verified file and queues its records.
func (s *MirrorSink) Add(ctx context.Context, e mirror.Entry, r io.Reader, size int64, hashes map[string][]byte) error {
	nar, narSize := flatNAR(r, size)
	res, err := ImportNAR(ctx, s.Node, nar, func(res ipldnar.Result) error {
		if res.NarSize != narSize {
			return fmt.Errorf("file is not %d bytes", size)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mirror %s: %w", e.Name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		s.pending = map[string]cid.Cid{}
	}
	for algo, d := range hashes {
		s.pending[manifests.KeySource(algo, d)] = res.Root
	}
	s.files++
	every := s.FlushEvery
	if every <= 0 {
		every = 64
	}
	if s.files%every == 0 {
		return s.flushLocked(ctx)
	}
	return nil
}

func (s *MirrorSink) flushLocked(ctx context.Context) error {
	if len(s.pending) == 0 {
		return nil
	}
	m, err := s.Manifest.Update(ctx, s.pending, nil)
	if err != nil {
		return fmt.Errorf("mirror: record: %w", err)
	}
	s.cur, s.pending, s.changed = m, nil, true
	return nil
}

// Close records what is pending and re-publishes the manifest if this run
// changed it.
func (s *MirrorSink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.flushLocked(ctx); err != nil {
		return err
	}
	if !s.changed {
		return nil
	}
	if _, err := s.Manifest.Publish(ctx); err != nil {
		return fmt.Errorf("mirror: %w", err)
	}
	return nil
}

// flatNAR frames a file as the NAR of a flat store path holding it, the
// form ipldnar imports (its root is then the file's UnixFS CID), and
// returns the NAR's size.
func flatNAR(r io.Reader, size int64) (io.Reader, uint64) {
	var head, tail bytes.Buffer
	for _, tok := range []string{"nix-archive-1", "(", "type", "regular", "contents"} {
		_ = wire.WriteString(&head, tok) // a bytes.Buffer does not fail
	}
	_ = wire.WriteUint64(&head, uint64(size))
	tail.Write(make([]byte, (8-size%8)%8))
	_ = wire.WriteString(&tail, ")")
	total := uint64(head.Len()) + uint64(size) + uint64(tail.Len())
	return io.MultiReader(&head, io.LimitReader(r, size), &tail), total
}
