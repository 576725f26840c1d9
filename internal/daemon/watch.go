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

	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/manifests"
)

// Watch modes for --watch-store.
const (
	WatchSigned = "signed" // only paths signed by a trusted key
	WatchAll    = "all"    // every valid path
)

// watchStore publishes new valid store paths as they appear. It looks at
// the store only when Nix's database changed (a stat per interval), then
// lists the store directory for names it has not seen. Paths stay under
// watch for a while after they appear, because signatures may come after
// the path (`nix store sign`): a signed path is published once signed, and
// with "all" a published path gains its later signatures. A restart sees
// every path once more; publishing what is already published is a no-op.
func watchStore(ctx context.Context, pub *publish.Publisher, mode string, keys []signature.PublicKey, interval time.Duration, onPublished func([]publish.Result)) {
	w := &watcher{pub: pub, mode: mode, keys: keys, seen: map[string]bool{}, pending: map[string]time.Time{}, onPublished: onPublished}
	storeDir, dbDir := pub.Store.Dirs()
	var lastDB string
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if sig := dbState(dbDir); sig != lastDB {
			slog.Debug("watch-store: database changed", "state", sig)
			if err := w.round(ctx, storeDir, time.Now()); err != nil {
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

// pendingFor is how long a new path is re-examined for late signatures.
const pendingFor = 10 * time.Minute

type watcher struct {
	pub     *publish.Publisher
	mode    string
	keys    []signature.PublicKey
	seen    map[string]bool      // names examined and settled
	pending map[string]time.Time // names still watched for signatures, since

	onPublished func([]publish.Result)
}

// dbState summarises the database files' sizes and times: it changes
// whenever Nix registers a path or a signature.
func dbState(dbDir string) string {
	var b strings.Builder
	for _, f := range []string{"db.sqlite", "db.sqlite-wal"} {
		if fi, err := os.Stat(filepath.Join(dbDir, f)); err == nil {
			fmt.Fprintf(&b, "%d/%d;", fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return b.String()
}

func (w *watcher) round(ctx context.Context, storeDir string, now time.Time) error {
	ents, err := os.ReadDir(storeDir)
	if err != nil {
		return err
	}
	var cands []string
	for _, e := range ents {
		n := e.Name()
		if w.seen[n] || strings.HasPrefix(n, ".") {
			continue
		}
		if since, ok := w.pending[n]; ok && now.Sub(since) > pendingFor {
			delete(w.pending, n)
			w.seen[n] = true
			continue
		}
		if _, ok := w.pending[n]; !ok {
			w.pending[n] = now
		}
		cands = append(cands, "/nix/store/"+n)
	}
	if len(cands) == 0 {
		slog.Debug("watch-store: nothing new")
		return nil
	}
	slog.Debug("watch-store: examining", "paths", len(cands))
	infos, err := pathInfos(ctx, w.pub.Store, cands)
	if err != nil {
		return err
	}
	var selected []string
	for _, pi := range infos {
		signed := signedBy(pi, w.keys)
		if signed || w.mode == WatchAll {
			selected = append(selected, pi.Path)
		}
		if signed {
			// Nothing more to wait for.
			delete(w.pending, filepath.Base(pi.Path))
			w.seen[filepath.Base(pi.Path)] = true
		}
	}
	if len(selected) == 0 {
		return nil
	}
	slog.Debug("watch-store: publishing", "paths", len(selected))
	res, err := w.pub.Publish(ctx, selected...)
	if err != nil {
		return err
	}
	if w.onPublished != nil {
		w.onPublished(res)
	}
	n := 0
	for _, r := range res {
		if r.Status != publish.Unchanged {
			n++
		}
	}
	if n > 0 {
		slog.Info("watch-store published", "paths", n)
	}
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
