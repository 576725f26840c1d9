package mirror

import (
	"context"
	"io"
	"net/http/httptest"
	"strconv"
	"testing"
)

// discardSink takes everything and keeps nothing: the benchmark measures
// download, hashing, temp file and verification.
type discardSink struct{}

func (discardSink) Has(context.Context, Hash) (bool, error) { return false, nil }
func (discardSink) Add(_ context.Context, _ Entry, r io.Reader, _ int64, _ map[string][]byte) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// BenchmarkMirror mirrors 200 real tarballs (about 200 KiB of gzip'd
// GOROOT/src each) from a loopback HTTP server. MB/s is over the bytes
// downloaded.
func BenchmarkMirror(b *testing.B) {
	tarballs := realTarballs(b, 200, 700<<10)
	srv := newFileServer()
	ts := httptest.NewServer(srv)
	defer ts.Close()
	var entries []Entry
	var total int64
	for i, data := range tarballs {
		p := "/t/" + strconv.Itoa(i) + ".tar.gz"
		srv.add(p, data)
		entries = append(entries, Entry{Index: i, Name: p[3:], URLs: []string{ts.URL + p}, Hash: hashOf(Algos[i%len(Algos)], data)})
		total += int64(len(data))
	}
	b.Logf("%d tarballs, %.1f MiB, %.0f KiB each on average", len(tarballs), float64(total)/(1<<20), float64(total)/float64(len(tarballs))/1024)
	opts := Options{TempDir: b.TempDir()}
	b.SetBytes(total)
	for b.Loop() {
		rep, err := Mirror(context.Background(), entries, discardSink{}, opts)
		if err != nil {
			b.Fatal(err)
		}
		if rep.Mirrored != len(entries) {
			b.Fatalf("%d of %d mirrored: %v", rep.Mirrored, len(entries), rep.Failures())
		}
	}
}
