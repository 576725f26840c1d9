package ipldnar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"lukechampine.com/blake3"
)

// benchTree is a store-path-like tree of about 64 MiB in a few hundred files:
// mostly small files, some around a chunk, a few large ones; some executables
// and symlinks; nested directories.
var benchTree = sync.OnceValue(func() []byte {
	r := rand.New(rand.NewPCG(7, 7))
	var files []tentry
	total := 0
	for i := 0; total < 64*MiB; i++ {
		var size int
		switch p := r.IntN(100); {
		case p < 85:
			size = r.IntN(64 << 10)
		case p < 98:
			size = MiB/4 + r.IntN(MiB)
		default:
			size = 4*MiB + r.IntN(4*MiB)
		}
		total += size
		n := file(randBytes(uint64(i), size))
		n.exec = r.IntN(5) == 0
		files = append(files, ent(fmt.Sprintf("file-%04d", i), n))
	}
	// Spread the files over a few directories.
	var dirs []tentry
	for d := 0; len(files) > 0; d++ {
		k := min(len(files), 1+r.IntN(60))
		entries := append([]tentry{ent("link", link("../d0/file-0000"))}, files[:k]...)
		files = files[k:]
		dirs = append(dirs, ent(fmt.Sprintf("d%d", d), dir(ent("sub", dir(entries...)))))
	}
	return encodeNAR(dir(dirs...))
})

// benchNARs are the inputs: the generated tree, and the NAR named by
// NIXIPFS_BENCH_NAR if set (W1 is the NAR of GOROOT).
func benchNARs(b *testing.B) map[string][]byte {
	nars := map[string][]byte{"generated": benchTree()}
	if p := os.Getenv("NIXIPFS_BENCH_NAR"); p != "" {
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		nars["env"] = data
	}
	return nars
}

// nullDAG drops what it is given, to measure the codec alone.
type nullDAG struct{ ipld.DAGService }

func (nullDAG) Add(context.Context, ipld.Node) error       { return nil }
func (nullDAG) AddMany(context.Context, []ipld.Node) error { return nil }
func (nullDAG) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	return nil, ipld.ErrNotFound{Cid: c}
}

func BenchmarkImport(b *testing.B) {
	for name, nar := range benchNARs(b) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(nar)))
			for b.Loop() {
				if _, err := Import(context.Background(), bytes.NewReader(nar), mdtest.Mock()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"-discard", func(b *testing.B) {
			b.SetBytes(int64(len(nar)))
			for b.Loop() {
				if _, err := Import(context.Background(), bytes.NewReader(nar), nullDAG{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRender(b *testing.B) {
	for name, nar := range benchNARs(b) {
		b.Run(name, func(b *testing.B) {
			ds := mdtest.Mock()
			res := mustImport(b, nar, ds)
			b.SetBytes(int64(len(nar)))
			for b.Loop() {
				if _, err := Render(context.Background(), &sink{}, res.Root, ds); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRenderLatency renders from a store where every block read takes
// 1ms (a nearby peer; also about the shortest sleep this machine can do)
// but reads may overlap: what prefetching
// is for.
func BenchmarkRenderLatency(b *testing.B) {
	for name, nar := range benchNARs(b) {
		b.Run(name, func(b *testing.B) {
			ds := mdtest.Mock()
			res := mustImport(b, nar, ds)
			src := slowGetter{ds, time.Millisecond}
			b.SetBytes(int64(len(nar)))
			for b.Loop() {
				if _, err := Render(context.Background(), &sink{}, res.Root, src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type slowGetter struct {
	ng    ipld.NodeGetter
	delay time.Duration
}

func (s slowGetter) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	time.Sleep(s.delay)
	return s.ng.Get(ctx, c)
}

func (s slowGetter) GetMany(ctx context.Context, cids []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption, len(cids))
	var wg sync.WaitGroup
	for _, c := range cids {
		wg.Go(func() {
			nd, err := s.Get(ctx, c)
			out <- &ipld.NodeOption{Node: nd, Err: err}
		})
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}

// Reference points: the NAR hashes Import computes, and plain copying.

func BenchmarkSHA256(b *testing.B) {
	buf := randBytes(0, MiB)
	b.SetBytes(MiB)
	for b.Loop() {
		sha256.Sum256(buf)
	}
}

func BenchmarkBLAKE3(b *testing.B) {
	buf := randBytes(0, MiB)
	b.SetBytes(MiB)
	for b.Loop() {
		blake3.Sum256(buf)
	}
}

// BenchmarkCopy copies a flat file of the size of the generated NAR into the
// sink Render writes to in its benchmark: the bound Render aims for.
func BenchmarkCopy(b *testing.B) {
	nar := benchTree()
	b.SetBytes(int64(len(nar)))
	for b.Loop() {
		io.Copy(&sink{}, bytes.NewReader(nar))
	}
}

// sink copies what it is written into a small reused buffer, as writing to
// a pipe or socket would, unlike io.Discard which costs nothing.
type sink struct{ buf [256 << 10]byte }

func (s *sink) Write(p []byte) (int, error) {
	for q := p; len(q) > 0; {
		q = q[copy(s.buf[:], q):]
	}
	return len(p), nil
}
