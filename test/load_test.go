package test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/internal/nixtest"
	nodestatus "github.com/nixipfs/nixipfs/internal/status"
)

// Load test figures: the 64 connections for 30 s, and the bound
// the daemon's peak RSS (VmHWM, embedded kubo included) must stay under.
const (
	loadConns    = 64
	loadDuration = 30 * time.Second
	loadRSSBound = 512 << 20 // bytes
)

type loadKind int

const (
	narinfoHit loadKind = iota
	narinfoMiss
	narDownload
)

var loadKindNames = []string{"narinfo hit", "narinfo miss", "NAR download"}

type loadNar struct {
	url  string
	size int64
	hash []byte
}

// TestLoad runs 64 connections for 30 s of mixed requests against one
// daemon: 45 % narinfo hits, 45 % narinfo misses, 10 % NAR downloads, each
// NAR checked whole (size and SHA-256). No request may fail; p50/p99 per
// kind are logged; the daemon's peak RSS must stay under loadRSSBound; the
// daemon's own metrics must count exactly what the clients did; and with no
// NAR cache the renders come from hot blocks in memory.
func TestLoad(t *testing.T) {
	nixEnv(t)
	store := nixtest.Store(t)
	hits := addTrees(t, store, "hit", 200, 1024)
	nars := addTrees(t, store, "nar", 16, 512<<10)
	n := newNode(t, store, nil)
	n.publish(t, append(append([]string(nil), hits...), nars...)...)
	// No NAR cache: every download is a render, which the metrics below
	// count (with the cache, repeated downloads are sent from its files).
	d := n.daemon(t, "--nar-cache-mb", "0")

	var narList []loadNar
	for _, p := range nars {
		ni := narinfo(t, d.url, p)
		size, _ := strconv.ParseInt(ni["NarSize"][0], 10, 64)
		h, err := nixbase32.DecodeString(strings.TrimPrefix(ni["NarHash"][0], "sha256:"))
		if err != nil {
			t.Fatal(err)
		}
		narList = append(narList, loadNar{url: d.url + "/" + ni["URL"][0], size: size, hash: h})
	}
	hitURLs := make([]string, len(hits))
	for i, p := range hits {
		hitURLs[i] = d.url + "/" + hashOf(p) + ".narinfo"
	}

	before := scrape(t, d.url)
	tr := &http.Transport{MaxConnsPerHost: loadConns, MaxIdleConnsPerHost: loadConns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	type result struct {
		lat    [3][]time.Duration
		errs   []string
		narLen int64
	}
	results := make([]result, loadConns)
	end := time.Now().Add(loadDuration)
	var wg sync.WaitGroup
	for w := range loadConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[w]
			r := rand.New(rand.NewPCG(uint64(w), 1))
			missHash := make([]byte, 20)
			for time.Now().Before(end) {
				var kind loadKind
				switch x := r.IntN(100); {
				case x < 45:
					kind = narinfoHit
				case x < 90:
					kind = narinfoMiss
				default:
					kind = narDownload
				}
				var url string
				var nar loadNar
				want := http.StatusOK
				switch kind {
				case narinfoHit:
					url = hitURLs[r.IntN(len(hitURLs))]
				case narinfoMiss:
					for i := range missHash {
						missHash[i] = byte(r.Uint32())
					}
					url = d.url + "/" + nixbase32.EncodeToString(missHash) + ".narinfo"
					want = http.StatusNotFound
				case narDownload:
					nar = narList[r.IntN(len(narList))]
					url = nar.url
				}
				start := time.Now()
				err := func() error {
					resp, err := client.Get(url)
					if err != nil {
						return err
					}
					defer resp.Body.Close()
					if resp.StatusCode != want {
						return fmt.Errorf("%s: %s, want %d", url, resp.Status, want)
					}
					if kind != narDownload {
						_, err := io.Copy(io.Discard, resp.Body)
						return err
					}
					h := sha256.New()
					got, err := io.Copy(h, resp.Body)
					if err != nil {
						return fmt.Errorf("%s: %w", url, err)
					}
					if got != nar.size || string(h.Sum(nil)) != string(nar.hash) {
						return fmt.Errorf("%s: %d bytes with another hash", url, got)
					}
					res.narLen += got
					return nil
				}()
				if err != nil {
					res.errs = append(res.errs, err.Error())
					continue
				}
				res.lat[kind] = append(res.lat[kind], time.Since(start))
			}
		}()
	}
	wg.Wait()
	elapsed := loadDuration
	peak := vmHWM(t, d.pid) * 1024
	after := scrape(t, d.url)

	var all []time.Duration
	var errs []string
	var counts [3]int
	var narBytes int64
	for _, res := range results {
		for k := range res.lat {
			counts[k] += len(res.lat[k])
			all = append(all, res.lat[k]...)
		}
		errs = append(errs, res.errs...)
		narBytes += res.narLen
	}
	for k, name := range loadKindNames {
		var lat []time.Duration
		for _, res := range results {
			lat = append(lat, res.lat[k]...)
		}
		p50, p99 := percentiles(lat)
		t.Logf("%-13s %7d requests  p50 %8s  p99 %8s", name, len(lat), p50, p99)
	}
	p50, p99 := percentiles(all)
	t.Logf("all           %7d requests in %s over %d connections (%.0f/s), p50 %s, p99 %s; %d NAR MB served; errors %d; daemon peak RSS %d MiB (bound %d MiB)",
		len(all), elapsed, loadConns, float64(len(all))/elapsed.Seconds(), p50, p99, narBytes>>20, len(errs), peak>>20, loadRSSBound>>20)
	if len(errs) > 0 {
		t.Errorf("%d requests failed; first: %s", len(errs), strings.Join(errs[:min(5, len(errs))], "; "))
	}
	if counts[narDownload] == 0 || counts[narinfoHit] == 0 || counts[narinfoMiss] == 0 {
		t.Errorf("a request kind never ran: %v", counts)
	}
	if peak > loadRSSBound {
		t.Errorf("daemon peak RSS %d MiB over the bound %d MiB", peak>>20, loadRSSBound>>20)
	}
	if !alive(d.pid) {
		t.Error("the daemon exited under load")
	}

	// The daemon's metrics count exactly what the clients did.
	delta := func(s string) float64 { return after[s] - before[s] }
	for _, c := range []struct {
		sample string
		want   int
	}{
		{sample("nixipfs_http_requests_total", "endpoint", "narinfo", "code", "200"), counts[narinfoHit]},
		{sample("nixipfs_http_requests_total", "endpoint", "narinfo", "code", "404"), counts[narinfoMiss]},
		{sample("nixipfs_http_requests_total", "endpoint", "nar", "code", "200"), counts[narDownload]},
		{sample("nixipfs_manifest_lookups_total", "kind", "narinfo", "result", "hit"), counts[narinfoHit]},
		{sample("nixipfs_manifest_lookups_total", "kind", "narinfo", "result", "miss"), counts[narinfoMiss]},
		{sample("nixipfs_nar_renders_total", "result", "ok"), counts[narDownload]},
		{sample("nixipfs_nar_render_bytes_total"), int(narBytes)},
	} {
		if got := delta(c.sample); got != float64(c.want) {
			t.Errorf("metrics: %s went up by %v, clients saw %d", c.sample, got, c.want)
		}
	}
	if got := delta(sample("nixipfs_http_response_bytes_total", "endpoint", "nar")); got != float64(narBytes) {
		t.Errorf("metrics: NAR bytes served %v, clients read %d", got, narBytes)
	}
	// Without a NAR cache the daemon keeps blocks read twice in memory: the
	// NARs downloaded again and again (each checked whole above) were
	// rendered from there.
	if after["nixipfs_hot_block_hits_total"] == 0 || after["nixipfs_hot_blocks_bytes"] == 0 {
		t.Errorf("metrics: no hot blocks without a NAR cache (hits %v, bytes %v)", after["nixipfs_hot_block_hits_total"], after["nixipfs_hot_blocks_bytes"])
	}
	var rep nodestatus.Report
	if err := json.Unmarshal(get(t, d.url+"/status.json"), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Node.HotMax == 0 || rep.Node.HotBytes == 0 || rep.Node.HotHits == 0 {
		t.Errorf("status: hot blocks %d of %d bytes, %d hits", rep.Node.HotBytes, rep.Node.HotMax, rep.Node.HotHits)
	}
	if secs := delta("nixipfs_nar_render_seconds_total"); secs > 0 {
		t.Logf("render throughput from the metrics: %.0f MB/s", float64(narBytes)/secs/1e6)
	}
}

// percentiles returns the 50th and 99th percentiles (nearest rank).
func percentiles(d []time.Duration) (time.Duration, time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[max(0, min(i, len(s)-1))].Round(10 * time.Microsecond)
	}
	return at(0.50), at(0.99)
}
