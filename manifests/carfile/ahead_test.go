package carfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
)

// aheadTree is a directory of n raw files of 1000 bytes with, among them,
// a subdirectory of n/2 other files and one of the first files again: the
// walk meets a directory midway, whose entries come before the files queued
// after it, and a block it has seen.
func aheadTree(t *testing.T, n int) (*memStore, cid.Cid) {
	t.Helper()
	s := newMemStore()
	files := func(seed, n int) []entry {
		var es []entry
		for i := range n {
			data := randBytes(uint64(seed+i), 1000)
			b, err := blocks.NewBlockWithCid(data, rawCID(t, data))
			must(t, err)
			must(t, s.put(context.Background(), b))
			es = append(es, entry{fmt.Sprintf("f%03d", i), b.Cid()})
		}
		return es
	}
	top := files(1000, n)
	sub := addDir(t, s, append(files(5000, n/2), entry{"g", top[0].c})...)
	half := n / 2
	return s, addDir(t, s, slices.Concat(top[:half], []entry{{fmt.Sprintf("f%03d-sub", half-1), sub}}, top[half:])...)
}

// countingGet counts a get's loads: started, running, and the most started
// beyond the blocks the walk has visited.
type countingGet struct {
	get     getFunc
	mu      sync.Mutex
	started int
	running int
	visited int
	ahead   int // most of started - visited
	hold    func(c cid.Cid)
}

func (g *countingGet) load(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	g.mu.Lock()
	g.started++
	g.running++
	g.ahead = max(g.ahead, g.started-g.visited)
	g.mu.Unlock()
	if g.hold != nil {
		g.hold(c)
	}
	defer func() {
		g.mu.Lock()
		g.running--
		g.mu.Unlock()
	}()
	return g.get(ctx, c)
}

// Export loads the next blocks while it writes one: the load of the first
// file waits until another load runs beside it.
func TestExportLoadsAhead(t *testing.T) {
	s, root := aheadTree(t, 40)
	first := s.order[0]
	overlap := make(chan struct{})
	var once sync.Once
	g := &countingGet{get: s.get}
	g.hold = func(c cid.Cid) {
		g.mu.Lock()
		if g.running > 1 {
			once.Do(func() { close(overlap) })
		}
		g.mu.Unlock()
		if c.Equals(first) {
			select {
			case <-overlap:
			case <-time.After(10 * time.Second):
				t.Error("no block was loaded while the first file's was")
			}
		}
	}
	var with, without bytes.Buffer
	if _, err := Export(context.Background(), &with, g.load, []cid.Cid{root}); err != nil {
		t.Fatal(err)
	}
	if g.running != 0 {
		t.Errorf("%d loads still running after Export returned", g.running)
	}
	// The same CAR as a walk without look-ahead writes.
	if _, err := Export(context.Background(), &without, s.get, []cid.Cid{root}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(with.Bytes(), without.Bytes()) {
		t.Error("the CAR differs from one written without look-ahead")
	}
}

// The look-ahead holds at most aheadBlocks blocks the walk has not taken,
// and a walk that fails leaves no load running.
func TestExportAheadBounded(t *testing.T) {
	s, root := aheadTree(t, 200)
	g := &countingGet{get: s.get}
	err := walk(context.Background(), g.load, []cid.Cid{root}, func(cid.Cid, []byte) error {
		g.mu.Lock()
		g.visited++
		g.mu.Unlock()
		return nil
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	// The block being visited, and the look-ahead's.
	if g.ahead > aheadBlocks+1 {
		t.Errorf("%d blocks loaded beyond those visited, want at most %d", g.ahead, aheadBlocks+1)
	}
	if g.started != g.visited {
		t.Errorf("%d loads for %d blocks", g.started, g.visited)
	}

	broken := s.order[len(s.order)/3]
	g = &countingGet{get: func(ctx context.Context, c cid.Cid) (blocks.Block, error) {
		if c.Equals(broken) {
			return nil, errors.New("disk read error")
		}
		return s.get(ctx, c)
	}}
	_, err = Export(context.Background(), io.Discard, g.load, []cid.Cid{root})
	if err == nil || !strings.Contains(err.Error(), "block "+broken.String()+" (linked from ") || !strings.Contains(err.Error(), "disk read error") {
		t.Fatalf("export with a block that fails to load: %v", err)
	}
	if g.running != 0 {
		t.Errorf("%d loads still running after Export failed", g.running)
	}
}
