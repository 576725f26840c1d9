// Package publish puts store paths from the local Nix store into IPFS: each
// path's NAR becomes a UnixFS DAG, is verified against the NarHash Nix
// recorded, pinned, and described by a signed PathInfo in the manifest.
package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"slices"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/ipldnar"
	"github.com/nixipfs/nixipfs/manifests"
)

// Status says what publishing did to one path.
type Status string

const (
	Published Status = "published" // imported, pinned and recorded
	Unchanged Status = "unchanged" // already recorded: re-publishing is a no-op
	Signed    Status = "signed"    // already recorded; our signature was added
)

// Result is one published store path.
type Result struct {
	StorePath string  `json:"storePath"`
	Root      cid.Cid `json:"root"`
	PathInfo  cid.Cid `json:"pathInfo"`
	NarSize   int64   `json:"narSize"`
	Status    Status  `json:"status"`
}

// MarshalJSON writes CIDs as plain strings, as people script against them.
func (r Result) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		StorePath string `json:"storePath"`
		Root      string `json:"root"`
		PathInfo  string `json:"pathInfo"`
		NarSize   int64  `json:"narSize"`
		Status    Status `json:"status"`
	}{r.StorePath, r.Root.String(), r.PathInfo.String(), r.NarSize, r.Status})
}

// flushEvery bounds how many published paths may wait for a manifest
// update: a crash loses at most that many records (their DAGs stay pinned
// and a re-run records them quickly).
const flushEvery = 64

// Event reports progress: path Done of Total is being worked on.
type Event struct {
	Done, Total int
	StorePath   string
	NarSize     int64
}

// Publisher publishes closures.
type Publisher struct {
	Node     *ipfsnode.Node
	Store    *nixstore.Store
	Manifest *manifests.Local
	SignKey  *signature.SecretKey // nil: keep the signatures the paths have, add none
	// Progress, if set, is called before each path of the closure.
	Progress func(Event)
}

// Publish publishes the closures of paths, dependencies first. Every path is
// recorded only after its DAG is complete, verified and pinned, so a crash or
// an error leaves each path either fully published or not recorded at all;
// running again completes the rest.
func (p *Publisher) Publish(ctx context.Context, paths ...string) ([]Result, error) {
	closure, err := p.Store.Closure(ctx, paths...)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	cur, err := p.Manifest.Current(ctx)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	infos := make(map[string]cid.Cid, len(closure)) // basename -> PathInfo CID
	results := make([]Result, 0, len(closure))
	puts := map[string]cid.Cid{}
	changed := false
	flush := func() error {
		if len(puts) == 0 {
			return nil
		}
		m, err := p.Manifest.Update(ctx, puts, nil)
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		cur, puts, changed = m, map[string]cid.Cid{}, true
		return nil
	}
	for i, pi := range closure {
		if p.Progress != nil {
			p.Progress(Event{Done: i, Total: len(closure), StorePath: pi.Path, NarSize: int64(pi.NarSize)})
		}
		res, rec, err := p.one(ctx, cur, pi, infos)
		if err != nil {
			if ferr := flush(); ferr != nil {
				err = errors.Join(err, ferr)
			}
			return results, err
		}
		if rec != nil {
			for _, k := range manifests.KeysFor(rec) {
				puts[k] = res.PathInfo
			}
		}
		infos[path.Base(pi.Path)] = res.PathInfo
		results = append(results, res)
		if len(puts) >= 3*flushEvery {
			if err := flush(); err != nil {
				return results, err
			}
		}
	}
	if err := flush(); err != nil {
		return results, err
	}
	if changed {
		// One IPNS update for the whole run, however many paths it added.
		name, err := p.Manifest.Publish(ctx)
		if err != nil {
			return results, fmt.Errorf("publish: %w", err)
		}
		slog.Info("manifest published", "ipns", name, "version", cur.Version(), "paths", cur.Info().Count)
	}
	if p.Progress != nil {
		p.Progress(Event{Done: len(closure), Total: len(closure)})
	}
	return results, nil
}

// one publishes a single path; rec is the record to put in the manifest, or
// nil when the manifest already has it as it is.
func (p *Publisher) one(ctx context.Context, cur *manifests.Manifest, ni nixstore.PathInfo, infos map[string]cid.Cid) (Result, *manifests.PathInfo, error) {
	hashPart := manifests.HashPart(ni.Path)
	api := p.Node.API
	if c, err := cur.Get(ctx, manifests.KeyStorePath(hashPart)); err == nil {
		rec, err := manifests.Load(ctx, api, c)
		if err == nil && rec.StorePath == ni.Path && rec.NarHashString() == ni.NarHash {
			return p.resign(ctx, rec, c, ni.Signatures)
		}
		// A record we cannot load or that disagrees with Nix is replaced.
		slog.Warn("replacing manifest entry", "path", ni.Path, "entry", c, "err", err)
	} else if !errors.Is(err, manifests.ErrNotFound) {
		return Result{}, nil, fmt.Errorf("publish %s: %w", ni.Path, err)
	}

	res, err := p.importNAR(ctx, ni)
	if err != nil {
		return Result{}, nil, err
	}
	rec, err := p.newRecord(ni, res, func(name string) (cid.Cid, bool) {
		c, ok := infos[name]
		return c, ok
	})
	if err != nil {
		return Result{}, nil, err
	}
	c, err := manifests.Store(ctx, api, rec)
	if err != nil {
		return Result{}, nil, err
	}
	return Result{StorePath: ni.Path, Root: rec.Root, PathInfo: c, NarSize: rec.NarSize, Status: Published}, rec, nil
}

// newRecord describes an imported path: ni as Nix (or an uploader) knows
// it, res its DAG. info gives each reference's PathInfo CID by basename;
// a reference without one is an error. The record is signed with SignKey.
func (p *Publisher) newRecord(ni nixstore.PathInfo, res ipldnar.Result, info func(name string) (cid.Cid, bool)) (*manifests.PathInfo, error) {
	rec := &manifests.PathInfo{
		StorePath:  ni.Path,
		NarHash:    res.NarHash[:],
		NarSize:    int64(res.NarSize),
		Blake3:     res.Blake3[:],
		Root:       res.Root,
		Signatures: append([]string(nil), ni.Signatures...),
		Profile:    ipldnar.Profile,
	}
	for _, ref := range ni.References {
		name := path.Base(ref)
		r := manifests.Reference{Name: name}
		if ref != ni.Path {
			c, ok := info(name)
			if !ok {
				return nil, fmt.Errorf("publish %s: reference %s was not published first", ni.Path, ref)
			}
			r.Info = &c
		}
		rec.References = append(rec.References, r)
	}
	if ni.Deriver != "" {
		d := path.Base(ni.Deriver)
		rec.Deriver = &d
	}
	if ni.CA != "" {
		ca := ni.CA
		rec.ContentAddress = &ca
	}
	if p.SignKey != nil {
		if _, err := rec.Sign(*p.SignKey); err != nil {
			return nil, err
		}
	}
	return rec, nil
}

// resign updates an already published path's signatures: those Nix has
// gained since (e.g. `nix store sign`) and ours if it lacks it. With nothing
// new it is a no-op.
func (p *Publisher) resign(ctx context.Context, rec *manifests.PathInfo, c cid.Cid, nixSigs []string) (Result, *manifests.PathInfo, error) {
	res := Result{StorePath: rec.StorePath, Root: rec.Root, PathInfo: c, NarSize: rec.NarSize, Status: Unchanged}
	changed := false
	for _, s := range nixSigs {
		if !slices.Contains(rec.Signatures, s) {
			rec.Signatures = append(rec.Signatures, s)
			changed = true
		}
	}
	if p.SignKey != nil {
		signed, err := rec.Sign(*p.SignKey)
		if err != nil {
			return res, nil, err
		}
		changed = changed || signed
	}
	if !changed {
		return res, nil, nil
	}
	nc, err := manifests.Store(ctx, p.Node.API, rec)
	if err != nil {
		return Result{}, nil, err
	}
	res.PathInfo, res.Status = nc, Signed
	return res, rec, nil
}

// importNAR imports the path's NAR into IPFS, checks it against what Nix
// recorded and pins the DAG. A store kept in a local directory is read
// straight from its files (one Nix process per path costs more than
// importing a small path); if that fails in any way, Nix's own dump is used.
func (p *Publisher) importNAR(ctx context.Context, ni nixstore.PathInfo) (ipldnar.Result, error) {
	check := func(res ipldnar.Result) error {
		got := "sha256:" + nixbase32.EncodeToString(res.NarHash[:])
		if got != ni.NarHash || res.NarSize != ni.NarSize {
			return fmt.Errorf("NAR is %s (%d bytes) but Nix recorded %s (%d bytes); not recorded",
				got, res.NarSize, ni.NarHash, ni.NarSize)
		}
		return nil
	}
	if dir, ok := p.Store.LocalPath(ni.Path); ok {
		res, err := importDAG(ctx, p.Node, func(dst ipld.DAGService) (ipldnar.Result, error) {
			return ipldnar.ImportPath(ctx, dir, dst)
		}, check)
		if err == nil {
			return res, nil
		}
		if ctx.Err() != nil {
			return ipldnar.Result{}, fmt.Errorf("publish %s: %w", ni.Path, err)
		}
		slog.Debug("reading the store path's files failed; asking Nix for its NAR", "path", ni.Path, "dir", dir, "err", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	nar, err := p.Store.Dump(ctx, ni.Path)
	if err != nil {
		return ipldnar.Result{}, fmt.Errorf("publish %s: %w", ni.Path, err)
	}
	res, err := ImportNAR(ctx, p.Node, nar, func(res ipldnar.Result) error {
		// The dump must end cleanly before its bytes are trusted.
		if err := nar.Close(); err != nil {
			return err
		}
		return check(res)
	})
	if err != nil {
		cancel()
		nar.Close()
		return ipldnar.Result{}, fmt.Errorf("publish %s: %w", ni.Path, err)
	}
	return res, nil
}

// ImportNAR streams a NAR into the node as a UnixFS DAG, runs check on the
// result, and pins the DAG only if check passes. On any error nothing is
// pinned: the blocks already written are unpinned garbage for kubo's GC.
func ImportNAR(ctx context.Context, node *ipfsnode.Node, nar io.Reader, check func(ipldnar.Result) error) (ipldnar.Result, error) {
	return importDAG(ctx, node, func(dst ipld.DAGService) (ipldnar.Result, error) {
		return ipldnar.Import(ctx, nar, dst)
	}, check)
}

// importDAG runs an import into the node, then check, and pins the root only
// if both pass. The repo's GC is held off from the first block to the pin,
// so the pin need not read the DAG back.
func importDAG(ctx context.Context, node *ipfsnode.Node, imp func(ipld.DAGService) (ipldnar.Result, error), check func(ipldnar.Result) error) (ipldnar.Result, error) {
	unlock := node.PinLock(ctx)
	defer unlock()
	bw, err := node.NewBlockWriter(ctx)
	if err != nil {
		return ipldnar.Result{}, err
	}
	res, err := imp(ipfsnode.DAGWriter{BlockWriter: bw})
	if err != nil {
		bw.Abort()
		return ipldnar.Result{}, err
	}
	if err := bw.Close(); err != nil {
		return ipldnar.Result{}, err
	}
	if check != nil {
		if err := check(res); err != nil {
			return ipldnar.Result{}, err
		}
	}
	if err := node.PinWritten(ctx, res.Root); err != nil {
		return ipldnar.Result{}, err
	}
	// The import hashed the very bytes it chunked.
	recordRendered(ctx, node, res.Root, int64(res.NarSize), res.NarHash[:])
	return res, nil
}

// recordRendered records that root renders to the NAR of size bytes and
// SHA-256 narHash just hashed (ipfsnode.Node.SetRendered), so that the
// node's gateway need not hash its first render. Only that depends on the
// record: failing to write it is not an error.
func recordRendered(ctx context.Context, node *ipfsnode.Node, root cid.Cid, size int64, narHash []byte) {
	if err := node.SetRendered(ctx, root, size, narHash); err != nil {
		slog.Warn("NAR not recorded as verified; the gateway will hash its first render", "root", root, "err", err)
	}
}
