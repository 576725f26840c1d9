package manifests

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
)

// Manifest benchmarks. The default size keeps `-benchtime 1x` runs short;
// the scale run sets NIXIPFS_BENCH_MANIFEST_SIZE (entries, three per store
// path), e.g. 1000000:
//
//	NIXIPFS_BENCH_MANIFEST_SIZE=1000000 go test -run '^$' -bench Manifest -benchtime 20x ./manifests/
const defaultBenchManifestSize = 10_000

func benchManifestSize(b *testing.B) int {
	s := os.Getenv("NIXIPFS_BENCH_MANIFEST_SIZE")
	if s == "" {
		return defaultBenchManifestSize
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		b.Fatalf("NIXIPFS_BENCH_MANIFEST_SIZE=%q: want a positive number of entries", s)
	}
	return n
}

// benchBase is the manifest the lookup and update benchmarks share, built
// once per process.
var benchBase struct {
	sync.Mutex
	n     int
	dserv *countingDAG
	m     *Manifest
	keys  []string
}

func benchManifest(b *testing.B) (*countingDAG, *Manifest, []string) {
	n := benchManifestSize(b)
	benchBase.Lock()
	defer benchBase.Unlock()
	if benchBase.m == nil || benchBase.n != n {
		keys, vals := syntheticKeys(n, "bench")
		dserv := newCountingDAG()
		m, err := EmptyManifest(dserv).Update(context.Background(), toMap(keys, vals), nil, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		benchBase.n, benchBase.dserv, benchBase.m, benchBase.keys = n, dserv, m, keys
	}
	// A freshly loaded manifest: nothing below the root in memory.
	m, err := LoadManifest(context.Background(), benchBase.dserv, benchBase.m.Version())
	if err != nil {
		b.Fatal(err)
	}
	return benchBase.dserv, m, benchBase.keys
}

// manifestSize sums the encoded size of every block of m: the Version block
// and all HAMT shards (not the PathInfo blocks the values link).
func manifestSize(ctx context.Context, m *Manifest) (nblocks, nbytes int, maxDepth int, err error) {
	nblocks, nbytes = 2, len(m.root.RawData())
	if v, err := m.dserv.Get(ctx, m.Version()); err == nil {
		nbytes += len(v.RawData())
	} else {
		return 0, 0, 0, err
	}
	var walk func(entries []shardEntry, depth int) error
	walk = func(entries []shardEntry, depth int) error {
		maxDepth = max(maxDepth, depth)
		var subs []cid.Cid
		for _, e := range entries {
			if e.key == "" {
				subs = append(subs, e.cid)
			}
		}
		for _, c := range subs {
			nd, err := m.dserv.Get(ctx, c)
			if err != nil {
				return err
			}
			_, sub, err := decodeShard(nd)
			if err != nil {
				return err
			}
			nblocks++
			nbytes += len(nd.RawData())
			if err := walk(sub, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	_, entries, err := decodeShard(m.root)
	if err != nil {
		return 0, 0, 0, err
	}
	return nblocks, nbytes, maxDepth, walk(entries, 1)
}

// BenchmarkManifestBuild builds an N-entry manifest from empty in one
// update, and reports its encoded size.
func BenchmarkManifestBuild(b *testing.B) {
	ctx := context.Background()
	n := benchManifestSize(b)
	keys, vals := syntheticKeys(n, "build")
	puts := toMap(keys, vals)
	var m *Manifest
	for b.Loop() {
		var err error
		m, err = EmptyManifest(newCountingDAG()).Update(ctx, puts, nil, time.Now())
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
	blocks, size, depth, err := manifestSize(ctx, m)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(n), "entries")
	b.ReportMetric(float64(blocks), "blocks")
	b.ReportMetric(float64(size), "bytes")
	b.ReportMetric(float64(size)/float64(n), "bytes/entry")
	b.ReportMetric(float64(depth), "levels")
}

// BenchmarkManifestGet looks up random present keys in a freshly loaded
// manifest; blocks/lookup counts the blocks read below the root (which the
// Manifest holds), ns/op the lookup's own cost over an in-memory blockstore.
func BenchmarkManifestGet(b *testing.B) {
	ctx := context.Background()
	dserv, m, keys := benchManifest(b)
	rng := rand.New(rand.NewSource(1))
	b.ReportAllocs()
	dserv.reset()
	for b.Loop() {
		k := keys[rng.Intn(len(keys))]
		if _, err := m.Get(ctx, k); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(dserv.gets.Load())/float64(b.N), "blocks/lookup")
}

// BenchmarkManifestUpdate1000 applies a 1,000-entry update (new keys: about
// 333 store paths) to the base manifest, fresh each time.
func BenchmarkManifestUpdate1000(b *testing.B) {
	ctx := context.Background()
	dserv, m, _ := benchManifest(b)
	dserv.reset()
	i := 0
	for b.Loop() {
		b.StopTimer()
		keys, vals := syntheticKeys(1000, fmt.Sprint("update", i))
		puts := toMap(keys, vals)
		i++
		b.StartTimer()
		next, err := m.Update(ctx, puts, nil, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		if next == m {
			b.Fatal("no new version")
		}
	}
	b.ReportMetric(float64(dserv.adds.Load())/float64(b.N), "blocks-written/op")
	b.ReportMetric(float64(dserv.gets.Load())/float64(b.N), "blocks-read/op")
}

// BenchmarkManifestDiff1000 diffs the base manifest against a version with
// 1,000 more entries.
func BenchmarkManifestDiff1000(b *testing.B) {
	ctx := context.Background()
	dserv, m, _ := benchManifest(b)
	keys, vals := syntheticKeys(1000, "diff")
	next, err := m.Update(ctx, toMap(keys, vals), nil, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	dserv.reset()
	for b.Loop() {
		changes, err := DiffManifests(ctx, m, next)
		if err != nil {
			b.Fatal(err)
		}
		if len(changes) != 1000 {
			b.Fatalf("%d changes, want 1000", len(changes))
		}
	}
	b.ReportMetric(float64(dserv.gets.Load())/float64(b.N), "blocks-read/op")
}
