package test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/ipldnar"
)

// w1 returns the W1 NAR (GOROOT): $NIXIPFS_BENCH_NAR if set, else a fresh
// `nix-store --dump` of `go env GOROOT`.
func w1(b *testing.B) []byte {
	b.Helper()
	if f := os.Getenv("NIXIPFS_BENCH_NAR"); f != "" {
		data, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		return data
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		b.Fatal(err)
	}
	data, err := exec.Command("nix-store", "--dump", strings.TrimSpace(string(goroot))).Output()
	if err != nil {
		b.Fatalf("nix-store --dump GOROOT: %v", err)
	}
	return data
}

// BenchmarkEmbedded measures W1 import and render through a real embedded
// kubo node on disk, the gateway's path, with each datastore a new repo can
// have (pebble, the default, and flatfs). Imports after the first find the
// blocks present.
func BenchmarkEmbedded(b *testing.B) {
	nar := w1(b)
	for _, store := range []string{ipfsnode.DatastorePebble, ipfsnode.DatastoreFlatfs} {
		b.Run(store, func(b *testing.B) {
			n, err := ipfsnode.Open(ctx(b), ipfsnode.Options{DataDir: b.TempDir(), Datastore: store})
			if err != nil {
				b.Fatal(err)
			}
			defer n.Close()
			res, err := publish.ImportNAR(ctx(b), n, bytes.NewReader(nar), nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Run("import-W1", func(b *testing.B) {
				b.SetBytes(int64(len(nar)))
				for b.Loop() {
					if _, err := publish.ImportNAR(ctx(b), n, bytes.NewReader(nar), nil); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("render-W1", func(b *testing.B) {
				b.SetBytes(int64(len(nar)))
				for b.Loop() {
					if _, err := ipldnar.Render(ctx(b), io.Discard, res.Root, n.API.Dag()); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
