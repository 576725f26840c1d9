package test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/gateway"
	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/manifests"
)

// BenchmarkManifestScale builds a manifest of N store paths (default 10,000;
// NIXIPFS_BENCH_MANIFEST_SIZE=1000000 for the README's figures) in a real
// embedded kubo node, then measures, through the gateway: narinfo latency
// p50/p99 for hits and misses, and the time to apply a 1,000-path update
// and republish it on IPNS. Most paths share one PathInfo block (the
// manifest's shape is what is measured); the paths that are looked up have
// their own.
func BenchmarkManifestScale(b *testing.B) {
	n := 10000
	if s := os.Getenv("NIXIPFS_BENCH_MANIFEST_SIZE"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	const probes = 1000
	node, err := ipfsnode.Open(ctx(b), ipfsnode.Options{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer node.Close()
	root, _ := cid.V1Builder{Codec: cid.Raw, MhType: mh.SHA2_256}.Sum(nil)
	if _, err := node.API.Block().Put(ctx(b), bytes.NewReader(nil)); err != nil {
		b.Fatal(err)
	}
	record := func(hash string) *manifests.PathInfo {
		h := sha256.Sum256([]byte(hash))
		return &manifests.PathInfo{StorePath: "/nix/store/" + hash + "-bench", NarHash: h[:], NarSize: 1,
			Blake3: h[:], Root: root, Profile: "bench"}
	}
	randHash := func() string {
		var buf [20]byte
		rand.Read(buf[:])
		return nixbase32.EncodeToString(buf[:])
	}
	store := func(p *manifests.PathInfo) cid.Cid {
		c, err := manifests.Store(ctx(b), node.API, p)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	shared := store(record(randHash()))
	puts := make(map[string]cid.Cid, 3*n)
	var hits []string
	for i := range n {
		h := randHash()
		c := shared
		if i < probes {
			p := record(h)
			c = store(p)
			hits = append(hits, h)
			for _, k := range manifests.KeysFor(p) {
				puts[k] = c
			}
			continue
		}
		puts[manifests.KeyStorePath(h)] = c
	}
	local := manifests.OpenLocalNode(b.TempDir(), node)
	local.ReleaseInBackground() // as the daemon does
	if _, err := local.Update(ctx(b), puts, nil); err != nil {
		b.Fatal(err)
	}
	resolver, err := manifests.NewResolver(node.API, local, nil, manifests.Policy{})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(gateway.New(gateway.Config{API: node.API, Paths: resolver}))
	defer srv.Close()

	latencies := func(hashes []string, want int) (p50, p99 time.Duration) {
		var ds []time.Duration
		for _, h := range hashes {
			t0 := time.Now()
			resp, err := http.Get(srv.URL + "/" + h + ".narinfo")
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			ds = append(ds, time.Since(t0))
			if resp.StatusCode != want {
				b.Fatalf("narinfo %s: %d, want %d", h, resp.StatusCode, want)
			}
		}
		slices.Sort(ds)
		return ds[len(ds)/2], ds[len(ds)*99/100]
	}
	var misses []string
	for range probes {
		misses = append(misses, randHash())
	}
	for b.Loop() {
		// A fresh resolver each round: its record cache must not hide the
		// manifest walk.
		resolver, _ = manifests.NewResolver(node.API, local, nil, manifests.Policy{})
		srv.Config.Handler = gateway.New(gateway.Config{API: node.API, Paths: resolver})
		p50, p99 := latencies(hits, http.StatusOK)
		b.ReportMetric(float64(p50.Microseconds()), "hit-p50-µs")
		b.ReportMetric(float64(p99.Microseconds()), "hit-p99-µs")
		p50, p99 = latencies(misses, http.StatusNotFound)
		b.ReportMetric(float64(p50.Microseconds()), "miss-p50-µs")
		b.ReportMetric(float64(p99.Microseconds()), "miss-p99-µs")

		upd := map[string]cid.Cid{}
		for range 1000 {
			p := record(randHash())
			c := store(p)
			for _, k := range manifests.KeysFor(p) {
				upd[k] = c
			}
		}
		cpu0 := processCPU(b)
		t0 := time.Now()
		if _, err := local.Update(ctx(b), upd, nil); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := local.Publish(ctx(b)); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		cpu := processCPU(b) - cpu0
		b.ReportMetric(t2.Sub(t0).Seconds()*1000, "update1000+publish-ms")
		// The machine may be shared: the process's CPU time (pebble's
		// background work included) says what the update costs.
		b.ReportMetric(cpu.Seconds()*1000, "update1000+publish-cpu-ms")
		b.ReportMetric(t2.Sub(t1).Seconds()*1000, "publish-ms")
		// The old version's pins go in the background; the next round
		// starts once they are gone.
		local.Wait()
		b.ReportMetric(time.Since(t2).Seconds()*1000, "release-ms")
		b.Logf("update of 1,000 paths %v, publish %v (CPU %v); then the old pins' release %v", t1.Sub(t0), t2.Sub(t1), cpu, time.Since(t2))
	}
	size, blocks := manifestSize(b, node, local)
	b.ReportMetric(float64(size)/1e6, "manifest-MB")
	b.ReportMetric(float64(blocks), "manifest-blocks")
}

// processCPU is the CPU time this process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// manifestSize sums the HAMT's blocks (PathInfos excluded).
func manifestSize(b *testing.B, node *ipfsnode.Node, local *manifests.Local) (int64, int) {
	m, err := local.Current(ctx(b))
	if err != nil {
		b.Fatal(err)
	}
	var size int64
	shards := hamtShards(ctx(b), b, node.API, m.Info().Entries)
	for _, n := range shards {
		size += int64(n)
	}
	return size, len(shards)
}
