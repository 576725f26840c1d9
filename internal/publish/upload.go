package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"sync"
	"sync/atomic"

	"github.com/ipfs/go-cid"
	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/ipldnar"
	"github.com/nixipfs/nixipfs/manifests"
)

// Upload is a NAR a client sent (the gateway's side of `nix copy --to`),
// imported as a DAG but neither pinned nor recorded yet: Nix sends the NAR
// first and the narinfo that describes it after. Record pins and records
// it once that narinfo checks out; Discard drops it. Until one of them, the
// embedded repo's GC is held off, so the unpinned blocks stay.
type Upload struct {
	Result ipldnar.Result
	p      *Publisher
	// release ends the GC hold (once, however often it is called); claimed
	// is set by the first Record or Discard.
	release func()
	claimed atomic.Bool
}

// ImportUpload streams nar into the node as a UnixFS DAG. On error nothing
// is kept: the blocks written are unpinned garbage for the repo's GC.
func (p *Publisher) ImportUpload(ctx context.Context, nar io.Reader) (*Upload, error) {
	unlock := p.Node.PinLock(ctx)
	bw, err := p.Node.NewBlockWriter(ctx)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("import upload: %w", err)
	}
	res, err := ipldnar.Import(ctx, nar, ipfsnode.DAGWriter{BlockWriter: bw})
	if err != nil {
		bw.Abort()
		unlock()
		return nil, fmt.Errorf("import upload: %w", err)
	}
	if err := bw.Close(); err != nil {
		unlock()
		return nil, fmt.Errorf("import upload: %w", err)
	}
	return &Upload{Result: res, p: p, release: sync.OnceFunc(unlock)}, nil
}

// Discard drops an upload that will not be recorded.
func (u *Upload) Discard() {
	u.claimed.Store(true)
	u.release()
}

// InvalidUploadError is a Record error that is the upload's fault (its NAR
// or its references), not ours.
type InvalidUploadError struct{ Err error }

func (e *InvalidUploadError) Error() string { return e.Err.Error() }
func (e *InvalidUploadError) Unwrap() error { return e.Err }

// ErrRecorded is returned by Record for an upload already recorded or
// discarded.
var ErrRecorded = errors.New("upload already recorded or discarded")

// Record checks that the upload is the NAR ni describes (NarHash, NarSize),
// pins its DAG and records ni in the manifest, signed with SignKey, without
// publishing the manifest on IPNS (the caller batches that). Every
// reference but the path itself must already be served: in our manifest,
// or found by lookup (a followed manifest's record). On any error nothing
// is recorded and the upload is discarded.
func (u *Upload) Record(ctx context.Context, ni nixstore.PathInfo, lookup func(ctx context.Context, hashPart string) (*manifests.PathInfo, error)) (Result, error) {
	p, api := u.p, u.p.Node.API
	if u.claimed.Swap(true) {
		return Result{}, ErrRecorded
	}
	// The GC hold ends once the DAG is pinned (or on any error before):
	// the manifest update takes the pin lock itself, and a second hold on
	// it would deadlock behind a waiting GC.
	defer u.release()

	got := "sha256:" + nixbase32.EncodeToString(u.Result.NarHash[:])
	if got != ni.NarHash || u.Result.NarSize != ni.NarSize {
		return Result{}, &InvalidUploadError{fmt.Errorf("record %s: the NAR uploaded is %s (%d bytes) but its narinfo says %s (%d bytes)",
			ni.Path, got, u.Result.NarSize, ni.NarHash, ni.NarSize)}
	}
	cur, err := p.Manifest.Current(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("record %s: %w", ni.Path, err)
	}
	if c, err := cur.Get(ctx, manifests.KeyStorePath(manifests.HashPart(ni.Path))); err == nil {
		if rec, err := manifests.Load(ctx, api, c); err == nil && rec.StorePath == ni.Path && rec.NarHashString() == ni.NarHash {
			u.release()
			res, rec, err := p.resign(ctx, rec, c, ni.Signatures)
			if err != nil || rec == nil {
				return res, err
			}
			return res, p.put(ctx, rec, res.PathInfo)
		}
	}
	refs := map[string]cid.Cid{}
	for _, ref := range ni.References {
		if ref == ni.Path {
			continue
		}
		c, err := referenceInfo(ctx, api, cur, ref, lookup)
		if err != nil {
			return Result{}, fmt.Errorf("record %s: %w", ni.Path, err)
		}
		refs[path.Base(ref)] = c
	}
	rec, err := p.newRecord(ni, u.Result, func(name string) (cid.Cid, bool) {
		c, ok := refs[name]
		return c, ok
	})
	if err != nil {
		return Result{}, err
	}
	// The DAG is pinned before the record exists, as in Publish: a crash
	// in between leaves a pin without a record, never the reverse.
	if err := p.Node.PinWritten(ctx, u.Result.Root); err != nil {
		return Result{}, fmt.Errorf("record %s: %w", ni.Path, err)
	}
	u.release()
	c, err := manifests.Store(ctx, api, rec)
	if err != nil {
		return Result{}, fmt.Errorf("record %s: %w", ni.Path, err)
	}
	if err := p.put(ctx, rec, c); err != nil {
		return Result{}, err
	}
	return Result{StorePath: ni.Path, Root: rec.Root, PathInfo: c, NarSize: rec.NarSize, Status: Published}, nil
}

// put files rec (stored as c) under all its keys in our manifest.
func (p *Publisher) put(ctx context.Context, rec *manifests.PathInfo, c cid.Cid) error {
	puts := map[string]cid.Cid{}
	for _, k := range manifests.KeysFor(rec) {
		puts[k] = c
	}
	if _, err := p.Manifest.Update(ctx, puts, nil); err != nil {
		return fmt.Errorf("record %s: %w", rec.StorePath, err)
	}
	return nil
}

// referenceInfo returns the PathInfo CID of a reference: ours if our
// manifest has it, else the record lookup finds (stored locally, so that
// ours can link to it).
func referenceInfo(ctx context.Context, api coreiface.CoreAPI, cur *manifests.Manifest, ref string, lookup func(ctx context.Context, hashPart string) (*manifests.PathInfo, error)) (cid.Cid, error) {
	hash := manifests.HashPart(ref)
	if c, err := cur.Get(ctx, manifests.KeyStorePath(hash)); err == nil {
		return c, nil
	} else if !errors.Is(err, manifests.ErrNotFound) {
		return cid.Undef, fmt.Errorf("reference %s: %w", ref, err)
	}
	if lookup != nil {
		if rec, err := lookup(ctx, hash); err == nil && rec.StorePath == ref {
			c, err := manifests.Store(ctx, api, rec)
			if err != nil {
				return cid.Undef, fmt.Errorf("reference %s: %w", ref, err)
			}
			return c, nil
		}
	}
	slog.Debug("upload names a reference this gateway does not serve", "reference", ref)
	return cid.Undef, &InvalidUploadError{fmt.Errorf("reference %s is not in this cache: upload it first (nix copy sends references before the paths that use them)", ref)}
}
