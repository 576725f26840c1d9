package ipfsnode

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ds "github.com/ipfs/go-datastore"
)

func TestPebbleConfig(t *testing.T) {
	parse := pebblePlugin{}.DatastoreConfigParser()
	for _, tc := range []struct {
		name   string
		params map[string]any
		err    string // "" means accepted
	}{
		{"defaults", map[string]any{"path": "pebble"}, ""},
		{"json numbers", map[string]any{"path": "pebble", "zstdLevel": float64(9), "blockSize": float64(65536)}, ""},
		{"no path", map[string]any{}, "'path' is missing"},
		{"path not a string", map[string]any{"path": 3}, "'path' is missing"},
		{"level as string", map[string]any{"path": "p", "zstdLevel": "5"}, `"zstdLevel" is string`},
		{"level 0", map[string]any{"path": "p", "zstdLevel": 0}, "zstdLevel 0: want 1 to 19"},
		{"level 22", map[string]any{"path": "p", "zstdLevel": 22}, "zstdLevel 22"},
		{"tiny blocks", map[string]any{"path": "p", "blockSize": 512}, "blockSize 512"},
		{"huge blocks", map[string]any{"path": "p", "blockSize": float64(1 << 30)}, "blockSize 1073741824"},
		{"cache size", map[string]any{"path": "p", "cacheSize": float64(64 << 20)}, ""},
		{"tiny cache", map[string]any{"path": "p", "cacheSize": 1 << 20}, "cacheSize 1048576: want at least 8 MiB"},
		{"ordered layout", map[string]any{"path": "p", "layout": layoutOrdered}, ""},
		{"unknown layout", map[string]any{"path": "p", "layout": "ordered-9"}, "layout ordered-9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse(tc.params)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if want, ok := tc.params["cacheSize"].(float64); ok && c.(*pebbleConfig).cacheSize != int(want) {
					t.Fatalf("cache size %d, want %v", c.(*pebbleConfig).cacheSize, want)
				}
				if got := c.DiskSpec().String(); !strings.Contains(got, PebbleType) || strings.Contains(got, "zstd") || strings.Contains(got, "cache") {
					t.Fatalf("disk spec %s: want the type and path only", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}

// The default block cache stays within its bounds on any machine.
func TestDefaultPebbleCacheBounds(t *testing.T) {
	if got := defaultPebbleCache(); got < 128<<20 || got > 1<<30 {
		t.Fatalf("default cache %d bytes, want 128 MiB to 1 GiB", got)
	}
}

// TestPebbleStore round-trips blocks through a close and reopen, checks
// that the closed store holds no preallocated logs beyond the empty ones
// and that using it after Close is an error, not pebble's panic.
func TestPebbleStore(t *testing.T) {
	ctx := context.Background()
	repoPath := t.TempDir()
	c := &pebbleConfig{path: "pebble", zstdLevel: pebbleZstdLevel, blockSize: pebbleBlockSize, layout: layoutOrdered}
	open := func() *pebbleStore {
		d, err := c.Create(repoPath)
		if err != nil {
			t.Fatal(err)
		}
		return d.(*pebbleStore)
	}
	s := open()
	vals := map[ds.Key][]byte{}
	b, err := s.Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 40 MiB in 1 MiB values: several memtables, so several logs.
	for i := range 40 {
		v := make([]byte, 1<<20)
		rand.Read(v[:1<<19]) // half random, half zeros: compressible
		k := ds.NewKey("/blocks/" + strings.Repeat("k", i+1))
		vals[k] = v
		if err := b.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
		if i%8 == 7 {
			if err := b.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if b, err = s.Batch(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Sync(ctx, ds.NewKey("/")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, ds.NewKey("/blocks/k")); !errors.Is(err, errClosed) {
		t.Fatalf("Get after Close: %v, want %v", err, errClosed)
	}
	if err := s.Put(ctx, ds.NewKey("/x"), nil); !errors.Is(err, errClosed) {
		t.Fatalf("Put after Close: %v, want %v", err, errClosed)
	}
	var total int64
	logs, _ := filepath.Glob(filepath.Join(repoPath, "pebble", "*.log"))
	for _, l := range logs {
		st, err := os.Stat(l)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 4096 {
			t.Errorf("log %s of %d bytes left after Close", filepath.Base(l), st.Size())
		}
		total += st.Size()
	}
	blobs := blobBytes(t, repoPath)
	// Half of every value is zeros: compressed, the blob files hold about half.
	if blobs == 0 || blobs > 30<<20 {
		t.Errorf("blob files hold %d bytes for 40 MiB of half-compressible values", blobs)
	}

	s = open()
	defer s.Close()
	// The blob files hold the values: DiskUsage must count them (pebble's
	// own figure leaves out the ones written before this open).
	if du, err := s.DiskUsage(ctx); err != nil || du < uint64(blobs) {
		t.Errorf("DiskUsage after reopen: %d (%v), but the blob files alone hold %d bytes", du, err, blobs)
	}
	for k, v := range vals {
		got, err := s.Get(ctx, k)
		if err != nil {
			t.Fatalf("%s after reopen: %v", k, err)
		}
		if string(got) != string(v) {
			t.Fatalf("%s after reopen: value differs", k)
		}
	}
}

// TestPebbleEvents: pebble's flushes and compactions reach debug logging
// (nixipfs -v), and nothing of them is logged otherwise.
func TestPebbleEvents(t *testing.T) {
	ctx := context.Background()
	defer slog.SetDefault(slog.Default())
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		var logged bytes.Buffer
		slog.SetDefault(slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: level})))
		c := &pebbleConfig{path: "pebble", zstdLevel: pebbleZstdLevel, blockSize: pebbleBlockSize, layout: layoutOrdered}
		d, err := c.Create(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		s := d.(*pebbleStore)
		// 48 MiB in 8 MiB batches: more than a memtable, so a flush.
		for i := range 6 {
			b, err := s.Batch(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for j := range 8 {
				v := make([]byte, 1<<20)
				rand.Read(v)
				if err := b.Put(ctx, ds.NewKey(fmt.Sprintf("/blocks/k%d-%d", i, j)), v); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		flushed := strings.Contains(logged.String(), "pebble: ") && strings.Contains(logged.String(), "flushed")
		if flushed != (level == slog.LevelDebug) {
			t.Fatalf("level %s: flushes logged %v:\n%s", level, flushed, logged.String())
		}
	}
}
