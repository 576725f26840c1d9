package manifests

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	coreiface "github.com/ipfs/kubo/core/coreiface"
	"github.com/ipfs/kubo/core/coreiface/options"

	"github.com/nixipfs/nixipfs/internal/atomicfile"
	"github.com/nixipfs/nixipfs/internal/ipfsnode"
)

// KeyName is the kubo key the manifest is published under: the node's own
// identity, so its IPNS name is its peer id and a network announcement can
// be checked against the pubsub sender (only the owner can announce it), and
// kubo's own republisher keeps the record alive.
const KeyName = "self"

// Local is this node's own manifest. Its current version is recorded in a
// file in the data dir (written atomically); updates are serialised by a lock
// file, so a publish run by hand and one run by the daemon never lose each
// other's entries.
type Local struct {
	dir  string
	api  coreiface.CoreAPI
	node *ipfsnode.Node // nil: blocks and pins go through api one by one
	// Shards that updates read and wrote, for the next update to read.
	shards *shardCache

	background bool           // drop old pins after Update returns
	releasing  sync.WaitGroup // such a release in flight

	// The state file's last reading, reused while the file is the same
	// (an update renames a new file into place): the gateway asks for the
	// current version on every lookup.
	mu     sync.Mutex
	stamp  fileStamp
	cached cid.Cid
	readAt time.Time // re-read at least every second, whatever the stamp says
}

type fileStamp struct {
	ino, size int64
	mtime     time.Time
}

func stampOf(fi fs.FileInfo) fileStamp {
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = int64(sys.Ino)
	}
	return st
}

// OpenLocal opens the manifest state kept in dataDir. Updates write and pin
// through api, a block at a time; OpenLocalNode batches them.
func OpenLocal(dataDir string, api coreiface.CoreAPI) *Local {
	return &Local{dir: dataDir, api: api, shards: newShardCache(defaultShardCacheBytes)}
}

// OpenLocalNode opens the manifest state kept in dataDir on node. An update
// writes its shards through the node's bulk writer and pins them in one
// batch with one sync: kubo's pin API syncs two or three times per block,
// which made a 1,000-path update of a large manifest take seconds.
func OpenLocalNode(dataDir string, node *ipfsnode.Node) *Local {
	l := OpenLocal(dataDir, node.API)
	l.node = node
	return l
}

func (l *Local) stateFile() string { return filepath.Join(l.dir, "manifest") }

// CurrentVersion returns the recorded version CID (cid.Undef when nothing
// has been published yet).
func (l *Local) CurrentVersion() (cid.Cid, error) {
	// One stat while the file is unchanged; read it when it was replaced.
	fi, err := os.Stat(l.stateFile())
	if errors.Is(err, fs.ErrNotExist) {
		return cid.Undef, nil
	}
	if err != nil {
		return cid.Undef, fmt.Errorf("read manifest state: %w", err)
	}
	st := stampOf(fi)
	l.mu.Lock()
	if st == l.stamp && l.cached.Defined() && time.Since(l.readAt) < time.Second {
		c := l.cached
		l.mu.Unlock()
		return c, nil
	}
	l.mu.Unlock()
	b, err := os.ReadFile(l.stateFile())
	if errors.Is(err, fs.ErrNotExist) {
		return cid.Undef, nil
	}
	if err != nil {
		return cid.Undef, fmt.Errorf("read manifest state: %w", err)
	}
	c, err := cid.Decode(strings.TrimSpace(string(b)))
	if err != nil {
		return cid.Undef, fmt.Errorf("manifest state %s: %w", l.stateFile(), err)
	}
	// The stamp taken before the read: if the file was replaced in
	// between, the next call sees another stamp and reads again.
	l.mu.Lock()
	l.stamp, l.cached, l.readAt = st, c, time.Now()
	l.mu.Unlock()
	return c, nil
}

// Current loads the current manifest (empty if none was published).
func (l *Local) Current(ctx context.Context) (*Manifest, error) {
	return l.current(ctx, l.api.Dag())
}

func (l *Local) current(ctx context.Context, dserv ipld.DAGService) (*Manifest, error) {
	v, err := l.CurrentVersion()
	if err != nil {
		return nil, err
	}
	if !v.Defined() {
		return EmptyManifest(dserv), nil
	}
	return LoadManifest(ctx, dserv, v)
}

// lock takes the manifest's update lock (an flock, released if the process
// dies).
func (l *Local) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(l.dir, "manifest.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("manifest lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("manifest lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// ReleaseInBackground makes Update return as soon as the new version is
// recorded, and unpin what only the old version needed afterwards, still
// holding the update lock, so the next update (in any process) waits for
// it. A daemon publishes its new version meanwhile: at 1M paths a 1,000-path
// update unpins about 3,200 old shards. A crash before that is done leaves
// extra pins, as it did before. Wait waits for it.
func (l *Local) ReleaseInBackground() { l.background = true }

// Wait returns once no release started by Update is in flight.
func (l *Local) Wait() { l.releasing.Wait() }

// Update applies puts and deletes to the current manifest, pins the result
// and records it as current. The new entries' own blocks must already be
// stored and pinned: the manifest's pins hold its HAMT shards only, not what
// the entries link. It returns the new manifest (the same one when nothing
// changed).
func (l *Local) Update(ctx context.Context, puts map[string]cid.Cid, deletes []string) (*Manifest, error) {
	// Shards are read one at a time, by lookups (ipfsnode.WithSmallReads).
	ctx = ipfsnode.WithSmallReads(ctx)
	unlock, err := l.lock()
	if err != nil {
		return nil, err
	}
	unlockOnReturn := true
	defer func() {
		if unlockOnReturn {
			unlock()
		}
	}()
	cur, err := l.current(ctx, cachedDAG{DAGService: l.api.Dag(), cache: l.shards})
	if err != nil {
		return nil, err
	}
	var w ipld.DAGService = l.api.Dag()
	var bw ipfsnode.BlockWriter
	unlockGC := func() {}
	if l.node != nil {
		// Held until the new shards are pinned: GC must not take them
		// before (PinDirect does not read them back). Not while unpinning:
		// Unpin takes it too, and a second read lock waits behind a GC.
		unlockGC = sync.OnceFunc(l.node.PinLock(ctx))
		defer unlockGC()
		if bw, err = l.node.NewBlockWriter(ctx); err != nil {
			return nil, fmt.Errorf("update manifest: %w", err)
		}
		defer bw.Abort() // a no-op once closed
		w = ipfsnode.DAGWriter{BlockWriter: bw}
	}
	next, shards, err := cur.update(ctx, puts, deletes, time.Now().UTC(), w)
	if err != nil {
		return nil, fmt.Errorf("update manifest: %w", err)
	}
	if next.Version() == cur.Version() {
		return cur, nil
	}
	if bw != nil {
		if err := bw.Close(); err != nil {
			return nil, fmt.Errorf("update manifest: write shards: %w", err)
		}
	}
	// The blocks are durable once pinned (one sync for both); only then is
	// the new version recorded.
	release, err := l.pin(ctx, cur, next, shards)
	unlockGC()
	if err != nil {
		return nil, err
	}
	l.shards.keep(shards)
	if err := atomicfile.WriteFile(l.stateFile(), []byte(next.Version().String()+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("record manifest: %w", err)
	}
	// Only once next is recorded may cur's pins go: a crash before this
	// leaves cur intact (and some extra pins), never a manifest with
	// unpinned shards. Under the lock: an update that re-adds a shard must
	// not pin it before it is unpinned here.
	if l.background {
		unlockOnReturn = false
		l.releasing.Add(1)
		go func() {
			defer l.releasing.Done()
			defer unlock()
			release(context.WithoutCancel(ctx))
		}()
		return next, nil
	}
	release(ctx)
	return next, nil
}

// pin keeps the new version safe from kubo's GC: the Version block and every
// HAMT shard are pinned directly, and nothing the entries link is walked.
// The values (PathInfos with their DAGs, source files, logs) are pinned by
// whoever recorded them, as Update requires. A recursive pin of the HAMT
// would re-walk them: kubo's pin update re-reads each new value's whole DAG
// (a PathInfo links its NAR's DAG and its references' PathInfos) once for
// every changed shard that reaches it, which made publishing many paths
// quadratic. Here an update costs the shards on its changed keys' paths.
// The returned func drops what only cur needed; it is called once next is
// recorded. shards holds the shards the update read and wrote, which are
// all the diff of cur and next reads.
func (l *Local) pin(ctx context.Context, cur, next *Manifest, shards ipld.NodeGetter) (func(context.Context), error) {
	// The empty manifest's HAMT root is never stored: the first update pins
	// every shard.
	from := cid.Undef
	legacy := false
	if cur.Version().Defined() {
		from = cur.Info().Entries
		// Versions before direct shard pins pinned the HAMT recursively:
		// then every shard of next is pinned once, and the old pin goes.
		_, rec, err := l.api.Pin().IsPinned(ctx, path.FromCid(from), options.Pin.IsPinned.Recursive())
		if err != nil {
			return nil, fmt.Errorf("pin manifest entries: %w", err)
		}
		legacy = rec
	}
	diffFrom := from
	if legacy {
		diffFrom = cid.Undef
	}
	added, removed, err := shardDiff(ctx, shards, diffFrom, next.Info().Entries)
	if err != nil {
		return nil, fmt.Errorf("pin manifest entries: %w", err)
	}
	if err := l.pinDirect(ctx, append(added, next.Version())); err != nil {
		return nil, fmt.Errorf("pin manifest version %d: %w", next.Info().Seq, err)
	}
	return func(ctx context.Context) {
		// Failures only leave extra pins: they are logged and skipped.
		if legacy {
			l.unpin(ctx, []cid.Cid{from}, true)
		}
		keep := make(map[cid.Cid]bool, len(added))
		for _, c := range added {
			keep[c] = true
		}
		var drop []cid.Cid
		for _, c := range removed {
			if !keep[c] {
				drop = append(drop, c)
			}
		}
		// Older versions stay readable while their blocks exist; only the
		// current one is kept.
		if old := cur.Version(); old.Defined() {
			drop = append(drop, old)
		}
		l.unpin(ctx, drop, false)
	}, nil
}

// pinDirect pins cids directly: in one batch on a node, one by one
// through a bare CoreAPI.
func (l *Local) pinDirect(ctx context.Context, cids []cid.Cid) error {
	if l.node != nil {
		return l.node.PinDirect(ctx, cids)
	}
	for _, c := range cids {
		if err := l.api.Pin().Add(ctx, path.FromCid(c), options.Pin.Recursive(false)); err != nil {
			return fmt.Errorf("pin %s: %w", c, err)
		}
	}
	return nil
}

// unpin drops the pins of cids, logging what fails: an extra pin costs
// space, never data.
func (l *Local) unpin(ctx context.Context, cids []cid.Cid, recursive bool) {
	if l.node != nil {
		if _, err := l.node.Unpin(ctx, cids, recursive); err != nil {
			slog.Debug("unpin old manifest blocks", "err", err)
		}
		return
	}
	for _, c := range cids {
		if err := l.api.Pin().Rm(ctx, path.FromCid(c), options.Pin.RmRecursive(recursive)); err != nil {
			slog.Debug("unpin old manifest block", "cid", c, "err", err)
		}
	}
}

// Name returns the manifest's IPNS name, creating its Ed25519 key on first
// use.
func (l *Local) Name(ctx context.Context) (string, error) {
	k, err := ManifestKey(ctx, l.api)
	if err != nil {
		return "", err
	}
	return ipns.NameFromPeer(k.ID()).String(), nil
}

// ManifestKey returns the node's identity key, which must be Ed25519 (an
// IPNS record then fits well under 10 KiB and the name embeds the key).
func ManifestKey(ctx context.Context, api coreiface.CoreAPI) (coreiface.Key, error) {
	k, err := api.Key().Self(ctx)
	if err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	if _, err := k.ID().ExtractPublicKey(); err != nil {
		return nil, fmt.Errorf("node identity %s: not an Ed25519 key (re-create the repo with an Ed25519 identity): %w", k.ID(), err)
	}
	return k, nil
}

// Publish announces the current version under the manifest's IPNS name. With
// no peers (offline) the record is kept locally and announced once peers
// appear.
func (l *Local) Publish(ctx context.Context) (string, error) {
	v, err := l.CurrentVersion()
	if err != nil {
		return "", err
	}
	if !v.Defined() {
		return "", errors.New("publish manifest: nothing published yet")
	}
	if _, err := ManifestKey(ctx, l.api); err != nil {
		return "", err
	}
	name, err := l.api.Name().Publish(ctx, path.FromCid(v),
		options.Name.Key(KeyName), options.Name.AllowOffline(true), options.Name.TTL(time.Minute))
	if err != nil {
		return "", fmt.Errorf("publish manifest %s on IPNS: %w", v, err)
	}
	return name.String(), nil
}
