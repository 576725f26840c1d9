package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// A row compares nixipfs (ours) with an anchor on the same data. Times are
// medians of the samples recorded under each key; lower is better for all.
type row struct {
	what, workload string
	ours, anchor   string // result keys
	oursName, vs   string
	bytes          string // info key of the bytes moved, for MB/s; "" none
	goal           float64
	storage        bool // values are bytes, not seconds
}

var rows = []row{
	{what: "ingest", workload: "W1", ours: "ingest.w1.publish", anchor: "ingest.w1.ipfsadd", oursName: "`nixipfs publish`", vs: "`ipfs add -r`", bytes: "w1.narsize", goal: 1.0},
	{what: "ingest", workload: "W1", ours: "ingest.w1.publish", anchor: "ingest.w1.nixzstd", oursName: "`nixipfs publish`", vs: "`nix copy` zstd", bytes: "w1.narsize"},
	{what: "ingest", workload: "W2", ours: "ingest.w2.publish", anchor: "ingest.w2.ipfsadd", oursName: "`nixipfs publish`", vs: "`ipfs add -r`", bytes: "w2.narsize", goal: 1.0},
	{what: "ingest", workload: "W2", ours: "ingest.w2.publish", anchor: "ingest.w2.nixzstd", oursName: "`nixipfs publish`", vs: "`nix copy` zstd", bytes: "w2.narsize"},
	{what: "ingest: upload", workload: "W1", ours: "ingest.w1.upload", anchor: "ingest.w1.nixzstd", oursName: "`nix copy --to` the gateway, zstd", vs: "`nix copy --to file://` zstd", bytes: "w1.narsize"},
	{what: "ingest: upload", workload: "W1", ours: "ingest.w1.upload", anchor: "ingest.w1.publish", oursName: "`nix copy --to` the gateway, zstd", vs: "`nixipfs publish`", bytes: "w1.narsize"},
	{what: "ingest: upload", workload: "W2", ours: "ingest.w2.upload", anchor: "ingest.w2.nixzstd", oursName: "`nix copy --to` the gateway, zstd", vs: "`nix copy --to file://` zstd", bytes: "w2.narsize"},
	{what: "ingest: upload", workload: "W2", ours: "ingest.w2.upload", anchor: "ingest.w2.publish", oursName: "`nix copy --to` the gateway, zstd", vs: "`nixipfs publish`", bytes: "w2.narsize"},
	{what: "serve: all narinfos, 1 conn", workload: "W2", ours: "narinfo.c1.gw", anchor: "narinfo.c1.nginx", oursName: "gateway", vs: "nginx", goal: 1.2},
	{what: "serve: all narinfos, 16 conns", workload: "W2", ours: "narinfo.c16.gw", anchor: "narinfo.c16.nginx", oursName: "gateway", vs: "nginx"},
	{what: "serve: all narinfos, 1 conn, first requests", workload: "W2", ours: "narinfo.first.gw", anchor: "narinfo.first.nginx", oursName: "fresh gateway", vs: "nginx"},
	{what: "serve: NAR, 1 conn", workload: "W1", ours: "nar.w1.c1.gw", anchor: "nar.w1.c1.nginx", oursName: "gateway", vs: "nginx", bytes: "w1.narsize", goal: 1.5},
	{what: "serve: NAR ×16, 16 conns", workload: "W1", ours: "nar.w1.c16.gw", anchor: "nar.w1.c16.nginx", oursName: "gateway", vs: "nginx", bytes: "w1.narsize16"},
	{what: "serve: all NARs, 1 conn", workload: "W2", ours: "nar.w2.c1.gw", anchor: "nar.w2.c1.nginx", oursName: "gateway", vs: "nginx", bytes: "w2.narsize", goal: 1.5},
	{what: "serve: NAR, 1 conn, first request", workload: "W1", ours: "nar.w1.first.gw", anchor: "nar.w1.first.nginx", oursName: "fresh gateway (render)", vs: "nginx", bytes: "w1.narsize", goal: 2.5},
	{what: "serve: all NARs, 1 conn, first requests", workload: "W2", ours: "nar.w2.first.gw", anchor: "nar.w2.first.nginx", oursName: "fresh gateway (render)", vs: "nginx", bytes: "w2.narsize", goal: 4.0},
	{what: "serve: NAR, 1 conn, `--nar-cache-mb 0`", workload: "W1", ours: "nar.w1.c1.nocache.gw", anchor: "nar.w1.c1.nginx", oursName: "gateway (render)", vs: "nginx", bytes: "w1.narsize", goal: 2.0},
	{what: "serve: all NARs, 1 conn, `--nar-cache-mb 0`", workload: "W2", ours: "nar.w2.c1.nocache.gw", anchor: "nar.w2.c1.nginx", oursName: "gateway (render)", vs: "nginx", bytes: "w2.narsize", goal: 2.0},
	{what: "serve: all NARs, 16 conns", workload: "W2", ours: "nar.w2.c16.gw", anchor: "nar.w2.c16.nginx", oursName: "gateway", vs: "nginx", bytes: "w2.narsize"},
	{what: "substitute: `nix copy --from`", workload: "W2", ours: "subst.w2.gw", anchor: "subst.w2.nginx", oursName: "gateway", vs: "nginx", bytes: "w2.narsize", goal: 1.2},
	{what: "substitute: `nix copy --from`", workload: "W2", ours: "subst.w2.gw", anchor: "subst.w2.nginxzstd", oursName: "gateway", vs: "nginx, zstd NARs", bytes: "w2.narsize"},
	{what: "substitute: cold `nix copy --from`", workload: "W2", ours: "subst.w2.cold.gw", anchor: "subst.w2.nginx", oursName: "fresh gateway, empty NAR cache", vs: "nginx", bytes: "w2.narsize", goal: 1.5},
	{what: "substitute: cold `nix copy --from`", workload: "W2", ours: "subst.w2.cold.gw", anchor: "subst.w2.nginxzstd", oursName: "fresh gateway, empty NAR cache", vs: "nginx, zstd NARs", bytes: "w2.narsize"},
	{what: "substitute: cold `nix copy --from`", workload: "W2", ours: "subst.w2.coldnopre.gw", anchor: "subst.w2.nginx", oursName: "fresh gateway, empty NAR cache, `--prerender 0`", vs: "nginx", bytes: "w2.narsize"},
	{what: "p2p: follower's first NAR", workload: "W1", ours: "p2p.w1.first.follower", anchor: "nar.w1.first.gw", oursName: "follower (CAR from A)", vs: "publisher's first render", bytes: "w1.narsize", goal: 2.0},
	{what: "p2p: follower's first NAR", workload: "W1", ours: "p2p.w1.first.follower", anchor: "p2p.w1.kubopin", oursName: "follower (CAR from A)", vs: "kubo→kubo `pin add`", bytes: "w1.narsize", goal: 0.2},
	{what: "p2p: follower's first NAR", workload: "W1", ours: "p2p.w1.first.follower", anchor: "nar.w1.first.nginx", oursName: "follower (CAR from A)", vs: "nginx", bytes: "w1.narsize"},
	{what: "p2p: all NARs, first requests", workload: "W2", ours: "p2p.w2.first.follower", anchor: "nar.w2.first.gw", oursName: "follower (CAR from A)", vs: "publisher's first renders", bytes: "w2.narsize", goal: 3.0},
	{what: "p2p: all NARs, first requests", workload: "W2", ours: "p2p.w2.first.follower", anchor: "p2p.w2.kubopin", oursName: "follower (CAR from A)", vs: "kubo→kubo `pin add`", bytes: "w2.narsize"},
	{what: "p2p: all NARs, first requests", workload: "W2", ours: "p2p.w2.first.follower", anchor: "nar.w2.first.nginx", oursName: "follower (CAR from A)", vs: "nginx", bytes: "w2.narsize"},
	{what: "p2p: cold `nix copy --from`", workload: "W2", ours: "subst.w2.follower", anchor: "subst.w2.gw", oursName: "follower", vs: "publisher's gateway (NARs cached)", bytes: "w2.narsize"},
	{what: "p2p: cold `nix copy --from`", workload: "W2", ours: "subst.w2.follower", anchor: "subst.w2.nginx", oursName: "follower", vs: "nginx", bytes: "w2.narsize"},
	{what: "storage: bytes on disk", workload: "W3", ours: "storage.w3.repo", anchor: "storage.w3.xz", oursName: "nixipfs repo, pebble (du)", vs: "xz NARs", storage: true, goal: 0.5},
	{what: "storage: bytes on disk", workload: "W3", ours: "storage.w3.flatfs", anchor: "storage.w3.xz", oursName: "nixipfs repo, `--datastore flatfs` (du)", vs: "xz NARs", storage: true},
	{what: "storage: bytes on disk", workload: "W3", ours: "storage.w3.ipfsadd", anchor: "storage.w3.xz", oursName: "`ipfs add -r` repo, flatfs (du)", vs: "xz NARs", storage: true},
}

func readKV(file string, sep string) (map[string][]string, []string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	m := map[string][]string{}
	var order []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), sep)
		if !ok {
			continue
		}
		if _, seen := m[k]; !seen {
			order = append(order, k)
		}
		m[k] = append(m[k], strings.TrimSpace(v))
	}
	return m, order, sc.Err()
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func floats(vs []string) ([]float64, error) {
	var out []float64
	for _, v := range vs {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, fmt.Errorf("not a number: %q", v)
		}
		out = append(out, f)
	}
	return out, nil
}

func fmtTime(s float64) string {
	switch {
	case s < 0.01:
		return fmt.Sprintf("%.2f ms", s*1000)
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1000)
	default:
		return fmt.Sprintf("%.2f s", s)
	}
}

func fmtBytes(b float64) string {
	return fmt.Sprintf("%.1f MB", b/1e6)
}

// report prints the Markdown table: one line per comparison with both
// medians, the ratio (nixipfs / anchor; below 1 is better) and the goal, then
// the hashing reference and every raw sample.
func report(args []string) error {
	fl := flag.NewFlagSet("report", flag.ExitOnError)
	results := fl.String("results", "", "file of 'KEY VALUE' samples")
	infoFile := fl.String("info", "", "file of 'KEY=VALUE' facts")
	_ = fl.Parse(args)
	if *results == "" || *infoFile == "" {
		return errors.New("-results and -info are required")
	}
	res, order, err := readKV(*results, " ")
	if err != nil {
		return err
	}
	info, _, err := readKV(*infoFile, "=")
	if err != nil {
		return err
	}
	get := func(k string) string {
		if v := info[k]; len(v) > 0 {
			return v[len(v)-1]
		}
		return "?"
	}
	med := func(k string) (float64, int, error) {
		xs, err := floats(res[k])
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", k, err)
		}
		if len(xs) == 0 {
			return 0, 0, fmt.Errorf("no samples for %s", k)
		}
		return median(xs), len(xs), nil
	}

	fmt.Printf("machine: %s\n", get("machine"))
	fmt.Printf("run: %s, %s, commit %s, %s repetitions\n", get("mode"), get("date"), get("commit"), get("reps"))
	fmt.Printf("W1: %s\n", get("w1.desc"))
	fmt.Printf("W2: %s\n", get("w2.desc"))
	fmt.Printf("W3: %s\n\n", get("w3.desc"))

	fmt.Println("| measure | data | nixipfs | median | anchor | median | ratio | goal |")
	fmt.Println("|---|---|---|---:|---|---:|---:|---|")
	var missed []string
	for _, r := range rows {
		o, no, err := med(r.ours)
		if err != nil {
			return err
		}
		a, na, err := med(r.anchor)
		if err != nil {
			return err
		}
		if a <= 0 {
			return fmt.Errorf("%s: anchor median is %v", r.anchor, a)
		}
		var ov, av string
		if r.storage {
			ov, av = fmtBytes(o), fmtBytes(a)
		} else {
			ov, av = fmtTime(o), fmtTime(a)
			if b, err := strconv.ParseFloat(get(r.bytes), 64); err == nil && b > 0 {
				ov += fmt.Sprintf(" (%.0f MB/s)", b/1e6/o)
				av += fmt.Sprintf(" (%.0f MB/s)", b/1e6/a)
			}
			if no > 1 || na > 1 {
				ov += fmt.Sprintf(" n=%d", no)
				av += fmt.Sprintf(" n=%d", na)
			}
		}
		ratio := o / a
		goal := ""
		if r.goal > 0 {
			if ratio <= r.goal {
				goal = fmt.Sprintf("≤ %.1f: met", r.goal)
			} else {
				goal = fmt.Sprintf("≤ %.1f: **not met**", r.goal)
				missed = append(missed, fmt.Sprintf("%s %s (%.2f > %.1f)", r.what, r.workload, ratio, r.goal))
			}
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %.2f | %s |\n", r.what, r.workload, r.oursName, ov, r.vs, av, ratio, goal)
	}
	sha, _, err := med("hash.sha256")
	if err != nil {
		return err
	}
	b3, _, err := med("hash.blake3")
	if err != nil {
		return err
	}
	fmt.Printf("\nhashing on this CPU (1 MiB buffers, one core): SHA-256 %.0f MB/s, BLAKE3 %.0f MB/s\n", sha, b3)
	if len(missed) == 0 {
		fmt.Println("goals: all met")
	} else {
		fmt.Printf("goals not met: %s\n", strings.Join(missed, "; "))
	}
	fmt.Println("\nsamples (seconds, or bytes for storage):")
	for _, k := range order {
		fmt.Printf("  %-28s %s\n", k, strings.Join(res[k], " "))
	}
	return nil
}
