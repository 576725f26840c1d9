package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	bpath "github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/ipfs/kubo/core/coreiface/options"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nixipfs/nixipfs/manifests"
	"github.com/nixipfs/nixipfs/nixstore"
	"github.com/nixipfs/nixipfs/publish"
)

// Watch modes for --watch-store.
const (
	WatchSigned = "signed" // only paths signed by a trusted key
	WatchAll    = "all"    // every valid path
)

// watchStore publishes new valid store paths as they appear. It looks at
// the store only when Nix's database changed (a stat per interval), then
// lists the store directory for names it has not seen. A restart sees every
// path once more; publishing what is already published is a no-op.
func watchStore(ctx context.Context, pub *publish.Publisher, mode string, keys []signature.PublicKey, interval time.Duration) {
	storeDir, dbDir := pub.Store.Dirs()
	seen := map[string]bool{}
	var lastDB string
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if sig := dbState(dbDir); sig != lastDB {
			if err := watchOnce(ctx, pub, mode, keys, storeDir, seen); err != nil {
				if ctx.Err() != nil {
					return
				}
				slog.Warn("watch-store", "err", err)
			} else {
				lastDB = sig
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// dbState summarises the database files' sizes and times: it changes
// whenever Nix registers a path.
func dbState(dbDir string) string {
	var b strings.Builder
	for _, f := range []string{"db.sqlite", "db.sqlite-wal"} {
		if fi, err := os.Stat(filepath.Join(dbDir, f)); err == nil {
			fmt.Fprintf(&b, "%d/%d;", fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return b.String()
}

func watchOnce(ctx context.Context, pub *publish.Publisher, mode string, keys []signature.PublicKey, storeDir string, seen map[string]bool) error {
	ents, err := os.ReadDir(storeDir)
	if err != nil {
		return err
	}
	var fresh []string
	for _, e := range ents {
		n := e.Name()
		if seen[n] || strings.HasPrefix(n, ".") {
			continue
		}
		fresh = append(fresh, "/nix/store/"+n)
	}
	if len(fresh) == 0 {
		return nil
	}
	infos, err := pathInfos(ctx, pub.Store, fresh)
	if err != nil {
		return err
	}
	var selected []string
	for _, pi := range infos {
		seen[filepath.Base(pi.Path)] = true
		if mode == WatchAll || signedBy(pi, keys) {
			selected = append(selected, pi.Path)
		}
	}
	if len(selected) == 0 {
		return nil
	}
	res, err := pub.Publish(ctx, selected...)
	if err != nil {
		return err
	}
	slog.Info("watch-store published", "paths", len(selected), "closure", len(res))
	return nil
}

// pathInfos returns the infos of the paths that are valid; a path still
// being added (not registered yet) is left for a later round.
func pathInfos(ctx context.Context, st *nixstore.Store, paths []string) ([]nixstore.PathInfo, error) {
	infos, err := st.PathInfos(ctx, paths...)
	if err == nil || !errors.Is(err, nixstore.ErrInvalidPath) {
		return infos, err
	}
	infos = infos[:0]
	for _, p := range paths {
		pi, err := st.PathInfos(ctx, p)
		if errors.Is(err, nixstore.ErrInvalidPath) {
			continue
		}
		if err != nil {
			return nil, err
		}
		infos = append(infos, pi...)
	}
	return infos, nil
}

func signedBy(pi nixstore.PathInfo, keys []signature.PublicKey) bool {
	var sigs []signature.Signature
	for _, s := range pi.Signatures {
		if sig, err := signature.ParseSignature(s); err == nil {
			sigs = append(sigs, sig)
		}
	}
	return signature.VerifyFirst(pi.Fingerprint(), sigs, keys)
}

// keeper adds paths this node served from a followed manifest to its own
// manifest and pins them, so they stay servable here when their publisher
// leaves. Batched: one manifest update per round.
type keeper struct {
	api   coreiface.CoreAPI
	local *manifests.Local
	in    chan *manifests.PathInfo
}

func newKeeper(api coreiface.CoreAPI, local *manifests.Local) *keeper {
	return &keeper{api: api, local: local, in: make(chan *manifests.PathInfo, 1024)}
}

// served is the gateway's hook: called after a NAR was served whole and
// verified.
func (k *keeper) served(p *manifests.PathInfo) {
	select {
	case k.in <- p:
	default: // a full queue only delays keeping; the next serve offers it again
	}
}

func (k *keeper) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	batch := map[string]*manifests.PathInfo{}
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-k.in:
			batch[p.StorePath] = p
		case <-t.C:
			if len(batch) == 0 {
				continue
			}
			if err := k.keep(ctx, batch); err != nil {
				slog.Warn("keep served paths", "err", err)
				continue
			}
			clear(batch)
		}
	}
}

func (k *keeper) keep(ctx context.Context, batch map[string]*manifests.PathInfo) error {
	m, err := k.local.Current(ctx)
	if err != nil {
		return err
	}
	puts := map[string]cid.Cid{}
	for _, p := range batch {
		if _, err := m.Get(ctx, manifests.KeyStorePath(p.HashPart())); err == nil {
			continue // ours already
		}
		// The blocks are local: the NAR was just rendered from them.
		if err := k.api.Pin().Add(ctx, bpath.FromCid(p.Root), options.Pin.Recursive(true)); err != nil {
			return fmt.Errorf("pin %s: %w", p.StorePath, err)
		}
		c, err := manifests.Store(ctx, k.api, p)
		if err != nil {
			return err
		}
		for _, key := range manifests.KeysFor(p) {
			puts[key] = c
		}
	}
	if len(puts) == 0 {
		return nil
	}
	if _, err := k.local.Update(ctx, puts, nil); err != nil {
		return err
	}
	slog.Info("kept served paths", "paths", len(puts)/3)
	_, err = k.local.Publish(ctx)
	return err
}
