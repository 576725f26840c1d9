package test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixipfs/nixipfs/internal/nixtest"
)

// farmGraph is 20 derivations that each sleep 1 s: layers of 5, 5, 5 and 4
// (each depending on two of the layer before) and one at the top.
const farmGraph = `
{ nonce }:
let
  bb = builtins.path { path = ./bbdir; name = "busybox"; };
  mk = name: deps: derivation {
    inherit name nonce;
    system = builtins.currentSystem;
    builder = "${bb}/bin/sh";
    args = [ "-c" "sleep 1; echo ${name} > $out; for d in ${toString deps}; do cat $d >> $out; done" ];
    PATH = "${bb}/bin";
  };
  l1 = builtins.genList (i: mk "l1-${toString i}" []) 5;
  l2 = builtins.genList (i: mk "l2-${toString i}" [ (builtins.elemAt l1 i) (builtins.elemAt l1 ((i + 1) - (i + 1) / 5 * 5)) ]) 5;
  l3 = builtins.genList (i: mk "l3-${toString i}" [ (builtins.elemAt l2 i) (builtins.elemAt l2 ((i + 1) - (i + 1) / 5 * 5)) ]) 5;
  l4 = builtins.genList (i: mk "l4-${toString i}" [ (builtins.elemAt l3 i) (builtins.elemAt l3 (i + 1)) ]) 4;
in mk "top" l4
`

// fakeSSH makes `ssh HOST nix-store --serve --write` serve the store
// <dir>/<HOST>: Nix's own remote builds with no SSH (docs/builds.md).
const fakeSSH = `#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -*) shift ;;
    *) host=$1; shift; break ;;
  esac
done
exec nix-store --serve --write --store "%s/$host"
`

// BenchmarkBuildFarm builds the 20-derivation graph with 1 and 2 nixipfs
// builders and, side by side, with Nix's own remote builds (ssh://, through
// a fake ssh) to the same number of separate stores. Each op is one whole
// graph; claim latency (offer to assignment) is reported for nixipfs.
func BenchmarkBuildFarm(b *testing.B) {
	nixEnv(b)
	bbdir := nixtest.Busybox(b)
	dir := filepath.Dir(bbdir)
	writeFile(b, filepath.Join(dir, "farm.nix"), []byte(farmGraph))
	instantiate := func(store string) string {
		nonce := make([]byte, 8)
		rand.Read(nonce)
		return strings.TrimSpace(run(b, nil, "nix-instantiate", "--store", store, filepath.Join(dir, "farm.nix"),
			"--argstr", "nonce", hex.EncodeToString(nonce)))
	}
	for _, builders := range []int{1, 2} {
		b.Run(fmt.Sprintf("nixipfs/builders=%d", builders), func(b *testing.B) {
			var opts, keys, pubs []string
			for i := range builders {
				key, pub := newKey(b, fmt.Sprintf("farm-%d", i))
				keys, pubs = append(keys, key), append(pubs, pub)
			}
			var prev string
			for i, key := range keys {
				args := []string{"--network", "bench", "--follow-interval", "200ms", "--sign-key", key}
				for j, pub := range pubs {
					if j != i {
						args = append(args, "--trusted-input-key", pub)
					}
				}
				if prev != "" {
					args = append(args, "--peer", prev)
				}
				d := newNode(b, nixtest.Store(b), nil).serve(b, "builder", args...)
				prev = loopbackPeer(b, d)
				opts = append(opts, "--peer", prev)
			}
			for _, p := range pubs {
				opts = append(opts, "--trusted-builder-key", p)
			}
			var waits []time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				store := nixtest.Store(b)
				r := newNode(b, store, nil)
				top := instantiate(store)
				b.StartTimer()
				_, stderr, err := runErr(nil, nixipfsBin, r.args(append([]string{"build", "--network", "bench", "--wait",
					"--offer-interval", "500ms", "--claim-window", "200ms", "--heartbeat", "2s", "--lease", "30s"},
					append(slices.Clone(opts), top)...)...)...)
				b.StopTimer()
				if err != nil {
					b.Fatalf("nixipfs build: %v\n%s", err, stderr)
				}
				waits = append(waits, placementWaits(b, stderr)...)
				b.StartTimer()
			}
			b.StopTimer()
			slices.Sort(waits)
			if len(waits) > 0 {
				b.ReportMetric(float64(waits[len(waits)/2].Milliseconds()), "claim-p50-ms")
				b.ReportMetric(float64(waits[len(waits)*99/100].Milliseconds()), "claim-p99-ms")
			}
		})
		b.Run(fmt.Sprintf("nix-ssh/builders=%d", builders), func(b *testing.B) {
			bin := b.TempDir()
			stores := b.TempDir()
			writeFile(b, filepath.Join(bin, "ssh"), []byte(fmt.Sprintf(fakeSSH, stores)))
			if err := os.Chmod(filepath.Join(bin, "ssh"), 0o755); err != nil {
				b.Fatal(err)
			}
			var machines []string
			for i := range builders {
				machines = append(machines, fmt.Sprintf("ssh://farm%d %s - 1 1", i, nixSystemName(b)))
			}
			env := []string{"PATH=" + bin + ":" + os.Getenv("PATH")}
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				store := nixtest.Store(b)
				top := instantiate(store)
				b.StartTimer()
				run(b, env, "nix-store", "--store", store, "--realise", top, "--max-jobs", "0",
					"--option", "builders", strings.Join(machines, "; "))
			}
		})
	}
}

// placementWaits reads the requester's claim latencies from its log.
func placementWaits(b *testing.B, log string) []time.Duration {
	var out []time.Duration
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "builds: placement") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "wait="); ok {
				d, err := time.ParseDuration(v)
				if err != nil {
					b.Fatalf("placement line %q: %v", line, err)
				}
				out = append(out, d)
			}
		}
	}
	return out
}

func nixSystemName(b *testing.B) string {
	return strings.Trim(strings.TrimSpace(run(b, nil, "nix-instantiate", "--eval", "--expr", "builtins.currentSystem")), `"`)
}
