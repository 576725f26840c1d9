// Package retrieve fetches DAGs that are not in the local IPFS node, for a
// render that is waiting on them.
//
// A render walks a DAG one block at a time; over bitswap that is a round trip
// per directory level and per prefetch window, which made a follower's first
// NAR of a large path about 100 times slower than its publisher's. So a
// Session asks the peers that hold the DAG for all of it at once: one
// trustless-gateway CAR stream (`/ipfs/<cid>?format=car&dag-scope=all`,
// depth-first, no duplicates), every block checked against its CID as it
// arrives (go-car's verifying block reader), held in memory until the render
// takes it and then written to the local blockstore. The render asks for
// blocks in almost the order the stream brings them, so both run at once.
//
// When a holder fails mid-stream (killed, wrong block, truncated CAR), the
// next block the render misses is asked of the next holder as the CAR of
// that block's sub-DAG; once no holder is left, bitswap is the fallback.
// Every wait is bounded: a block that does not arrive within the stall bound
// ends the Get with a *StallError that names the block and the peers asked,
// so a client sees a failed download instead of a hang.
//
// Nothing a holder sends is trusted: a block whose bytes do not match its CID
// ends that stream (and is not stored), and a session accepts at most about
// twice the NAR size in blocks, so a peer cannot fill the disk with blocks the
// DAG does not hold. Only blocks the render used are written to the store.
package retrieve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nixipfs/nixipfs/ipldnar"
)

// DefaultStall is how long a wait for one block may make no progress.
const DefaultStall = 30 * time.Second

// NoSourceError is a block that is not in the local store and that no
// holder brought, while no IPFS peer is connected but holders whose
// gateways said they lack it: bitswap has nobody to ask, so waiting could
// only end in a stall. (A follower whose publisher is away answers at
// once, and Nix moves on to its next substituter.)
type NoSourceError struct {
	Cid   cid.Cid
	Asked []string // holders asked
}

func (e *NoSourceError) Error() string {
	asked := "none"
	if len(e.Asked) > 0 {
		asked = strings.Join(e.Asked, ", ")
	}
	return fmt.Sprintf("block %s: not in the local store, no holder brought it (asked: %s), and no other IPFS peer is connected", e.Cid, asked)
}

// BlockWriter stores blocks; ipfsnode's bulk writer is one.
type BlockWriter interface {
	Put(ctx context.Context, blk blocks.Block) error
	Close() error
	Abort()
}

// Config says where blocks come from and go.
type Config struct {
	// Local reads the local store only (no network); nil: Network is asked
	// for everything.
	Local ipld.NodeGetter
	// Network reads through the IPFS node, bitswap included: the fallback.
	Network ipld.NodeGetter
	// Denied, if set, names blocks no render may use, wherever they come
	// from (kubo's denylists: a holder's CAR stream does not apply them).
	Denied func(cid.Cid) bool
	// NewWriter opens a writer for blocks fetched over HTTP; nil: they are
	// not stored.
	NewWriter func(ctx context.Context) (BlockWriter, error)
	// Holders lists the trustless gateways of peers that may hold a DAG,
	// in the order to ask them (spreading the sessions of a closure over
	// several holders is its business).
	Holders func(ctx context.Context) []Holder
	// Peers lists the IPFS peers bitswap may ask (stall reports name
	// them). While it lists none but holders whose gateways answered 404
	// for the block, a block no holder brought fails at once with a
	// *NoSourceError. nil: the peers are not known (an external node,
	// which may find providers itself), and bitswap is always asked.
	Peers func() []peer.ID
	// Stall bounds a wait for one block (default DefaultStall).
	Stall time.Duration
	// Client fetches CARs (default: a client with keep-alive and no
	// overall timeout; the stall bound applies).
	Client *http.Client
	// MemoryBytes bounds the blocks held between the stream and the render
	// (default 256 MiB); past it they are spilled to the store.
	MemoryBytes int
	// DeferredBytes bounds the used blocks, over all sessions, whose
	// writing to the store waits until their session closes, after the
	// answer (default 256 MiB; past it they are written while rendering).
	DeferredBytes int
	Logger        *slog.Logger
	// Counters, if set, count what happens (for /metrics).
	Counters *Counters
}

// Holder is a trustless gateway that may hold a DAG.
type Holder struct {
	URL  string  // base URL, "http://host:port"
	Peer peer.ID // the IPFS peer whose gateway it is; "" if not known
}

// Counters are a Retriever's figures. All fields are read atomically.
type Counters struct {
	CARBytes     atomic.Int64 // block bytes received in CAR streams
	CARStreams   atomic.Int64 // CAR streams started
	CARFailures  atomic.Int64 // CAR streams that ended in an error
	NetworkGets  atomic.Int64 // blocks fetched through the IPFS node (bitswap)
	Stalls       atomic.Int64 // Gets that hit the stall bound
	RejectedCARs atomic.Int64 // streams refused for a bad block or excess
}

// Retriever opens Sessions.
type Retriever struct {
	cfg      Config
	deferred atomic.Int64 // bytes of used blocks held until their sessions close
}

// New returns a Retriever.
func New(cfg Config) *Retriever {
	if cfg.Stall <= 0 {
		cfg.Stall = DefaultStall
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second,
			ResponseHeaderTimeout: cfg.Stall, DisableCompression: true}}
	}
	if cfg.MemoryBytes <= 0 {
		cfg.MemoryBytes = 256 << 20
	}
	if cfg.DeferredBytes <= 0 {
		cfg.DeferredBytes = 256 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Counters == nil {
		cfg.Counters = &Counters{}
	}
	return &Retriever{cfg: cfg}
}

// Counters returns the Retriever's figures.
func (r *Retriever) Counters() *Counters { return r.cfg.Counters }

// StallError is a block that did not arrive within the stall bound.
type StallError struct {
	Cid    cid.Cid
	Waited time.Duration
	Asked  []string // holders and peers asked
}

func (e *StallError) Error() string {
	return fmt.Sprintf("block %s: no progress for %s (asked: %s)", e.Cid, e.Waited.Round(time.Millisecond), strings.Join(e.Asked, ", "))
}

// Session serves one render of the DAG under root as an ipld.NodeGetter.
// Close it when the render ends.
type Session struct {
	r      *Retriever
	ctx    context.Context
	cancel context.CancelFunc
	limit  int64 // block bytes accepted from holders, in all

	mu        sync.Mutex
	arrived   map[cid.Cid]blocks.Block // verified, not yet used
	memBytes  int
	changed   chan struct{} // closed on every arrival and stream end
	streaming bool
	received  int64
	holders   []Holder
	cur       int      // the holder asked now
	asked     []string // holders asked, for reports
	nstreams  int
	// The last stream: what it was asked for, how it ended, whether it
	// brought that block.
	lastRoot    cid.Cid
	lastErr     error
	lastBrought bool
	spilled     map[cid.Cid]struct{}     // written to the store unused
	used        map[cid.Cid]blocks.Block // used, not yet sent to the writer
	usedBytes   int                      // of used, outside the deferred budget
	reserved    int64                    // of used, inside it
	pending     map[cid.Cid]blocks.Block // sent to the writer, not yet written
	stalled     *StallError              // the first stall: the session has failed
	// streamCancel ends the running stream (set while one runs).
	streamCancel context.CancelFunc
	// lacks maps holders' peers to the last block their gateway answered
	// 404 for: bitswap need not ask them for it.
	lacks map[peer.ID]cid.Cid

	closeOnce sync.Once
	writes    chan []blocks.Block
	written   sync.WaitGroup
	streams   sync.WaitGroup
}

// usedBatch is how many bytes of used blocks are written at once.
const usedBatch = 8 << 20

// Session starts retrieving the DAG under root, whose NAR is narSize bytes
// (it bounds what holders may send). If root is in the local store, no CAR
// is asked for: the DAG is taken to be local, and blocks that are not are
// fetched as misses.
func (r *Retriever) Session(ctx context.Context, root cid.Cid, narSize int64) *Session {
	ctx, cancel := context.WithCancel(ctx)
	s := &Session{r: r, ctx: ctx, cancel: cancel,
		limit:   2*narSize + 64<<20,
		arrived: map[cid.Cid]blocks.Block{}, changed: make(chan struct{}),
		spilled: map[cid.Cid]struct{}{}, used: map[cid.Cid]blocks.Block{},
		pending: map[cid.Cid]blocks.Block{},
		writes:  make(chan []blocks.Block, 4)}
	if r.cfg.NewWriter != nil {
		s.written.Add(1)
		go s.writeLoop()
	}
	return s
}

// Close stops the streams and waits until used blocks are stored. It may be
// called more than once.
func (s *Session) Close() {
	s.closeOnce.Do(s.close)
}

func (s *Session) close() {
	s.cancel()
	s.streams.Wait()
	s.mu.Lock()
	batch := s.takeUsedLocked()
	s.mu.Unlock()
	if s.r.cfg.NewWriter != nil {
		s.send(batch)
		close(s.writes)
	}
	s.written.Wait()
}

// Asked lists the holders and peers asked so far.
func (s *Session) Asked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.asked...)
}

// Get returns the node of c: known without a fetch, arrived in a stream,
// already local, or fetched. Its waits are bounded: a holder's stream is
// given up after the stall bound without progress (or twice the bound
// without c), and bitswap after the stall bound.
func (s *Session) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	if nd, ok := ipldnar.KnownNode(c); ok {
		return nd, nil
	}
	if s.r.cfg.Denied != nil && s.r.cfg.Denied(c) {
		return nil, fmt.Errorf("block %s is blocked by a denylist", c)
	}
	triedLocal := false
	var waitingSince time.Time // since when this Get waits on streams
	for {
		s.mu.Lock()
		if b, ok := s.arrived[c]; ok {
			delete(s.arrived, c)
			s.memBytes -= len(b.RawData())
			batch := s.useLocked(b)
			s.signalLocked() // room for the stream
			s.mu.Unlock()
			s.send(batch)
			return ipldnar.DecodeBlock(b)
		}
		if b, ok := s.used[c]; ok {
			s.mu.Unlock()
			return ipldnar.DecodeBlock(b)
		}
		if b, ok := s.pending[c]; ok {
			s.mu.Unlock()
			return ipldnar.DecodeBlock(b)
		}
		if _, ok := s.spilled[c]; ok {
			// Arrived and written to the store before it was needed.
			s.mu.Unlock()
			if s.r.cfg.Local == nil {
				return s.network(ctx, c)
			}
			return s.r.cfg.Local.Get(ctx, c)
		}
		if s.stalled != nil {
			// One stall ends the render; the prefetcher's other Gets
			// need not wait out the bound again.
			err := s.stalled
			s.mu.Unlock()
			return nil, err
		}
		if s.streaming {
			var batch []blocks.Block
			if s.memBytes >= s.r.cfg.MemoryBytes {
				// The stream waits for room and the render for a block
				// not in memory: store what arrived to make room.
				batch = s.spillLocked()
			}
			changed := s.changed
			s.mu.Unlock()
			s.send(batch)
			if waitingSince.IsZero() {
				waitingSince = time.Now()
			}
			expired, err := s.wait(ctx, changed, waitingSince.Add(2*s.r.cfg.Stall))
			if err != nil {
				return nil, err
			}
			if expired {
				waitingSince = time.Time{} // the next stream has its own time
			}
			continue
		}
		s.mu.Unlock()
		if !triedLocal && s.r.cfg.Local != nil {
			triedLocal = true
			if nd, err := s.r.cfg.Local.Get(ctx, c); err == nil {
				return nd, nil
			}
		}
		if s.startHolderStream(c) {
			continue
		}
		if s.nobodyElse(c) {
			return nil, &NoSourceError{Cid: c, Asked: s.Asked()}
		}
		return s.network(ctx, c)
	}
}

// nobodyElse reports whether bitswap has nobody to ask for c: every
// connected IPFS peer (if any) is a holder whose gateway said it lacks c.
func (s *Session) nobodyElse(c cid.Cid) bool {
	if s.r.cfg.Peers == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.r.cfg.Peers() {
		if s.lacks[p] != c {
			return false
		}
	}
	return true
}

// noPeers reports whether bitswap is known to have nobody to ask.
func (r *Retriever) noPeers() bool {
	return r.cfg.Peers != nil && len(r.cfg.Peers()) == 0
}

// Available reports whether the DAG under root can be had now: its root is
// in the local store, or a holder or an IPFS peer is there to ask (peers
// not known count as there).
func (r *Retriever) Available(ctx context.Context, root cid.Cid) bool {
	if _, ok := ipldnar.KnownNode(root); ok || !r.noPeers() || r.cfg.Local == nil {
		return true
	}
	if r.cfg.Holders != nil && len(r.cfg.Holders(ctx)) > 0 {
		return true
	}
	_, err := r.cfg.Local.Get(ctx, root)
	return err == nil
}

// wait blocks until changed is closed or the deadline passes. A stream
// that makes no progress is ended by its own watchdog after the stall bound,
// which closes changed; a stream that keeps sending other blocks than the
// one a Get awaits is given up once that Get waited twice the bound, so that
// the next holder is asked (expired).
func (s *Session) wait(ctx context.Context, changed <-chan struct{}, deadline time.Time) (expired bool, err error) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-changed:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	case <-s.ctx.Done():
		return false, s.ctx.Err()
	case <-t.C:
		s.mu.Lock()
		if s.streamCancel != nil {
			s.streamCancel()
		}
		s.mu.Unlock()
		return true, nil
	}
}

// network fetches c through the IPFS node (bitswap), bounded by the stall.
func (s *Session) network(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	ctx, cancel := context.WithTimeout(ctx, s.r.cfg.Stall)
	defer cancel()
	nd, err := s.r.cfg.Network.Get(ctx, c)
	if err == nil {
		s.r.cfg.Counters.NetworkGets.Add(1)
		return nd, nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		asked := s.Asked()
		if s.r.cfg.Peers != nil {
			for _, p := range s.r.cfg.Peers() {
				asked = append(asked, "bitswap:"+p.String())
			}
		}
		return nil, s.stall(c, asked)
	}
	return nil, err
}

// stall records that c did not arrive within the bound: the session fails
// every later Get that is not already answered.
func (s *Session) stall(c cid.Cid, asked []string) error {
	s.r.cfg.Counters.Stalls.Add(1)
	err := &StallError{Cid: c, Waited: s.r.cfg.Stall, Asked: asked}
	s.mu.Lock()
	if s.stalled == nil {
		s.stalled = err
	}
	s.mu.Unlock()
	return err
}

// GetQuick returns the node of c if the local store has it in memory
// (ipldnar.QuickGetter); false while the session streams blocks from a
// peer, whose bookkeeping only Get does. CIDs that carry their data
// (ipldnar.KnownNode) are Render's to answer (and Get's).
func (s *Session) GetQuick(ctx context.Context, c cid.Cid) (ipld.Node, bool) {
	q, ok := s.r.cfg.Local.(ipldnar.QuickGetter)
	if !ok || s.r.cfg.Denied != nil && s.r.cfg.Denied(c) {
		return nil, false
	}
	s.mu.Lock()
	streaming := s.streaming
	s.mu.Unlock()
	if streaming {
		return nil, false
	}
	return q.GetQuick(ctx, c)
}

// GetMany answers from Get, a few at a time: the render's prefetcher calls
// it for the next few links of a walk.
func (s *Session) GetMany(ctx context.Context, cids []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption, len(cids))
	go func() {
		defer close(out)
		for _, c := range cids {
			nd, err := s.Get(ctx, c)
			out <- &ipld.NodeOption{Node: nd, Err: err}
		}
	}()
	return out
}

// useLocked records b as used by the render: kept for a second Get of the
// same block (a file twice in a path) until it is written. It returns a
// batch to send to the writer once enough has been used.
func (s *Session) useLocked(b blocks.Block) []blocks.Block {
	if s.r.cfg.NewWriter == nil {
		return nil
	}
	s.used[b.Cid()] = b
	size := int64(len(b.RawData()))
	if s.r.reserve(size) {
		// Written after the answer: on two cores, compressing blocks into
		// the store while rendering slowed a first NAR by two thirds.
		s.reserved += size
		return nil
	}
	s.usedBytes += int(size)
	if s.usedBytes >= usedBatch {
		return s.takeUsedLocked()
	}
	return nil
}

// reserve takes n bytes of the budget of blocks held until their session
// closes; false when it is spent.
func (r *Retriever) reserve(n int64) bool {
	for {
		v := r.deferred.Load()
		if v+n > int64(r.cfg.DeferredBytes) {
			return false
		}
		if r.deferred.CompareAndSwap(v, v+n) {
			return true
		}
	}
}

// takeUsedLocked moves the used blocks to pending and returns them for the
// writer.
func (s *Session) takeUsedLocked() []blocks.Block {
	if len(s.used) == 0 {
		return nil
	}
	batch := make([]blocks.Block, 0, len(s.used))
	for c, b := range s.used {
		batch = append(batch, b)
		s.pending[c] = b
	}
	s.used = map[cid.Cid]blocks.Block{}
	s.usedBytes = 0
	s.r.deferred.Add(-s.reserved) // they are on their way to the store
	s.reserved = 0
	return batch
}

// spillLocked moves the arrived blocks (verified, not yet used) to pending,
// for the writer, so that the stream can go on; a later Get finds them in
// pending or, once written, in the store.
func (s *Session) spillLocked() []blocks.Block {
	if s.r.cfg.NewWriter == nil {
		return nil // nowhere to spill: the stall bound ends the wait
	}
	batch := make([]blocks.Block, 0, len(s.arrived))
	for c, b := range s.arrived {
		batch = append(batch, b)
		s.spilled[c] = struct{}{}
		s.pending[c] = b
	}
	s.arrived = map[cid.Cid]blocks.Block{}
	s.memBytes = 0
	s.signalLocked()
	return batch
}

// send hands a batch to the writer (never under s.mu: the writer takes it).
func (s *Session) send(batch []blocks.Block) {
	if len(batch) > 0 {
		s.writes <- batch
	}
}

func (s *Session) signalLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// startHolderStream starts a CAR stream of the sub-DAG under c from the
// current holder; false when none is left. A holder is left behind once a
// stream of it failed or did not bring the block it was asked for.
func (s *Session) startHolderStream(c cid.Cid) bool {
	if s.r.cfg.Holders == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.holders == nil {
		s.holders = s.r.cfg.Holders(s.ctx)
		if s.holders == nil {
			s.holders = []Holder{}
		}
	}
	if s.streaming {
		return true // another Get started one: wait for it
	}
	if s.lastRoot.Defined() && (s.lastErr != nil || !s.lastBrought) {
		s.cur++
	}
	s.lastRoot = cid.Undef
	if s.cur >= len(s.holders) || s.received >= s.limit || s.nstreams >= maxStreams {
		return false
	}
	h := s.holders[s.cur]
	if !slices.Contains(s.asked, h.URL) {
		s.asked = append(s.asked, h.URL)
	}
	s.nstreams++
	s.streaming = true
	s.streams.Add(1)
	go s.stream(h, c)
	return true
}

// maxStreams bounds the CAR streams of one session: after a holder failed,
// each block missed is asked for as its own sub-DAG.
const maxStreams = 100000

// stream reads the CAR of the DAG under c from holder into arrived.
func (s *Session) stream(holder Holder, c cid.Cid) {
	defer s.streams.Done()
	cnt := s.r.cfg.Counters
	cnt.CARStreams.Add(1)
	n, brought, err := s.readCAR(holder.URL, c)
	s.mu.Lock()
	s.streaming = false
	s.streamCancel = nil
	s.lastRoot, s.lastErr, s.lastBrought = c, err, brought
	if errors.Is(err, errLacks) && holder.Peer != "" {
		if s.lacks == nil {
			s.lacks = map[peer.ID]cid.Cid{}
		}
		s.lacks[holder.Peer] = c
	}
	s.signalLocked()
	s.mu.Unlock()
	if err != nil && s.ctx.Err() == nil {
		cnt.CARFailures.Add(1)
		s.r.cfg.Logger.Warn("CAR stream from holder failed", "holder", holder.URL, "cid", c, "blocks", n, "err", err)
	}
}

// errLacks is a holder's 404: its gateway does not have the DAG's root.
var errLacks = errors.New("the holder does not have it")

// errExcess ends a stream that sent more than the DAG can hold.
var errExcess = errors.New("holder sent more block bytes than the DAG can hold")

// readCAR returns the blocks read and whether c was among them.
func (s *Session) readCAR(holder string, c cid.Cid) (n int, brought bool, err error) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	s.mu.Lock()
	s.streamCancel = cancel
	s.mu.Unlock()
	url := strings.TrimRight(holder, "/") + "/ipfs/" + c.String() + "?format=car&dag-scope=all&dups=n"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Accept", "application/vnd.ipld.car;version=1;order=dfs;dups=n")
	resp, err := s.r.cfg.Client.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return 0, false, fmt.Errorf("GET %s: %s: %w", url, resp.Status, errLacks)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	// A stream that makes no progress for the stall bound is given up, so
	// that the render moves on to the next holder instead of waiting.
	watchdog := time.AfterFunc(s.r.cfg.Stall, cancel)
	defer watchdog.Stop()
	br, err := carv2.NewBlockReader(resp.Body) // checks every block's hash
	if err != nil {
		return 0, false, fmt.Errorf("read CAR header: %w", err)
	}
	for {
		blk, err := br.Next()
		if err == io.EOF {
			return n, brought, nil
		}
		if err != nil {
			// go-car names no error value for a hash mismatch.
			if strings.Contains(err.Error(), "mismatch in content integrity") {
				s.r.cfg.Counters.RejectedCARs.Add(1)
			}
			return n, brought, fmt.Errorf("block %d: %w", n+1, err)
		}
		watchdog.Reset(s.r.cfg.Stall)
		if err := s.arrive(ctx, blk); err != nil {
			if errors.Is(err, errExcess) {
				s.r.cfg.Counters.RejectedCARs.Add(1)
			}
			return n, brought, err
		}
		brought = brought || blk.Cid() == c
		n++
	}
}

// arrive hands a verified block to the render, waiting while memory is full.
func (s *Session) arrive(ctx context.Context, b blocks.Block) error {
	size := len(b.RawData())
	s.r.cfg.Counters.CARBytes.Add(int64(size))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received += int64(size)
	if s.received > s.limit {
		return errExcess
	}
	for s.memBytes >= s.r.cfg.MemoryBytes {
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			s.mu.Lock()
			return ctx.Err()
		}
		s.mu.Lock()
	}
	if _, dup := s.arrived[b.Cid()]; !dup {
		s.arrived[b.Cid()] = b
		s.memBytes += size
	}
	s.signalLocked()
	return nil
}

// writeLoop stores batches of blocks.
func (s *Session) writeLoop() {
	defer s.written.Done()
	for batch := range s.writes {
		if err := s.store(batch); err != nil {
			s.r.cfg.Logger.Warn("store fetched blocks", "blocks", len(batch), "err", err)
		}
		s.mu.Lock()
		for _, b := range batch {
			delete(s.pending, b.Cid())
		}
		s.mu.Unlock()
	}
}

func (s *Session) store(batch []blocks.Block) error {
	// Written under a context that outlives the request: blocks used by a
	// render that the client broke off are still worth keeping.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w, err := s.r.cfg.NewWriter(ctx)
	if err != nil {
		return err
	}
	for _, b := range batch {
		if err := w.Put(ctx, b); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Close()
}
