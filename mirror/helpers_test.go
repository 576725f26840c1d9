package mirror

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// goroot is the Go tree the fixtures are made from: real source files.
var goroot = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOROOT: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
})

var (
	tarballsMu    sync.Mutex
	tarballsCache = map[[2]int][][]byte{}
)

// realTarballs returns n gzip'd tarballs of consecutive files of GOROOT/src
// (wrapping around if needed), each made of about budget bytes of source,
// generated once per process.
func realTarballs(tb testing.TB, n, budget int) [][]byte {
	tb.Helper()
	tarballsMu.Lock()
	defer tarballsMu.Unlock()
	key := [2]int{n, budget}
	if out, ok := tarballsCache[key]; ok {
		return out
	}
	root, err := goroot()
	if err != nil {
		tb.Fatal(err)
	}
	src := filepath.Join(root, "src")
	var files []string
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	slices.Sort(files)
	all := files
	var out [][]byte
	for len(out) < n {
		var buf bytes.Buffer
		gz := gzip.NewWriter(&buf)
		tw := tar.NewWriter(gz)
		used := 0
		for used < budget {
			if len(files) == 0 {
				files = all // wrap around: the tarball boundaries differ the second time
			}
			p := files[0]
			files = files[1:]
			data, err := os.ReadFile(p)
			if err != nil {
				tb.Fatal(err)
			}
			rel, _ := filepath.Rel(src, p)
			hdr := &tar.Header{Name: "src/" + filepath.ToSlash(rel), Mode: 0o644, Size: int64(len(data)),
				ModTime: time.Unix(1, 0), Typeflag: tar.TypeReg}
			if err := tw.WriteHeader(hdr); err != nil {
				tb.Fatal(err)
			}
			if _, err := tw.Write(data); err != nil {
				tb.Fatal(err)
			}
			used += len(data)
		}
		if err := tw.Close(); err != nil {
			tb.Fatal(err)
		}
		if err := gz.Close(); err != nil {
			tb.Fatal(err)
		}
		out = append(out, buf.Bytes())
	}
	tarballsCache[key] = out
	return out
}

// hashOf is the Hash of data under algo.
func hashOf(algo string, data []byte) Hash {
	h := newHasher(algo)
	h.Write(data)
	return Hash{Algo: algo, Digest: h.Sum(nil)}
}

// fileServer serves named files and counts requests. A path may be given a
// handler of its own.
type fileServer struct {
	mu       sync.Mutex
	files    map[string][]byte
	handlers map[string]http.HandlerFunc
	hits     map[string]int
	requests atomic.Int64
}

func newFileServer() *fileServer {
	return &fileServer{files: map[string][]byte{}, handlers: map[string]http.HandlerFunc{}, hits: map[string]int{}}
}

func (s *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.mu.Lock()
	s.hits[r.URL.Path]++
	h := s.handlers[r.URL.Path]
	data, ok := s.files[r.URL.Path]
	s.mu.Unlock()
	if r.Header.Get("Accept-Encoding") != "identity" {
		http.Error(w, "want Accept-Encoding: identity", http.StatusBadRequest)
		return
	}
	if h != nil {
		h(w, r)
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(data)
}

func (s *fileServer) add(p string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[p] = data
}

func (s *fileServer) handle(p string, h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers[p] = h
}

func (s *fileServer) hitsOf(p string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[p]
}

// added is one Add the memSink saw.
type added struct {
	entry  Entry
	size   int64
	sha256 [32]byte
}

// memSink is a Sink that keeps what it is given in memory, after checking
// that Add got exactly size bytes and that every hash it was told matches
// them (so the tests catch a Mirror that lies to the sink).
type memSink struct {
	mu     sync.Mutex
	have   map[string]bool // "algo:hex"
	adds   []added
	hasAll bool // Has says yes to everything
	hasErr error
	addErr error
	hasN   atomic.Int64
}

func newMemSink() *memSink { return &memSink{have: map[string]bool{}} }

func (s *memSink) Has(ctx context.Context, h Hash) (bool, error) {
	s.hasN.Add(1)
	if s.hasErr != nil {
		return false, s.hasErr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hasAll || s.have[h.Algo+":"+h.Hex()], nil
}

func (s *memSink) Add(ctx context.Context, e Entry, r io.Reader, size int64, hashes map[string][]byte) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if int64(len(data)) != size {
		return fmt.Errorf("memSink: got %d bytes, told %d", len(data), size)
	}
	if len(hashes) != len(Algos) {
		return fmt.Errorf("memSink: %d hashes, want %d", len(hashes), len(Algos))
	}
	for _, a := range Algos {
		if want := hashOf(a, data); !bytes.Equal(hashes[a], want.Digest) {
			return fmt.Errorf("memSink: told %s %x, data has %s", a, hashes[a], want.Hex())
		}
	}
	if !bytes.Equal(hashes[e.Hash.Algo], e.Hash.Digest) {
		return errors.New("memSink: given a file that does not have the entry's hash")
	}
	if s.addErr != nil {
		return s.addErr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.adds = append(s.adds, added{entry: e, size: size, sha256: sha256.Sum256(data)})
	for _, a := range Algos {
		s.have[a+":"+hashOf(a, data).Hex()] = true
	}
	return nil
}

func (s *memSink) addCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.adds)
}

// fastOpts are Options for tests: millisecond backoff, a temp dir the test
// checks, and logs into the test.
func fastOpts(t testing.TB) Options {
	return Options{
		Backoff: time.Millisecond,
		TempDir: t.TempDir(),
		Logger:  slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// emptyDir fails the test if dir has anything in it.
func emptyDir(t testing.TB, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("temp dir %s not empty: %v", dir, names)
	}
}
