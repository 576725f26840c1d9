package test

import (
	"bufio"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	nodestatus "github.com/nixipfs/nixipfs/internal/status"
)

// nixipfsErr runs the CLI and returns its output and error, for commands
// expected to fail.
func (n *node) nixipfsErr(args ...string) (string, string, error) {
	name, argv := n.command(args...)
	return runErr(nil, name, argv...)
}

// status runs `nixipfs status --json`.
func (n *node) status(t testing.TB) nodestatus.Report {
	t.Helper()
	out := n.nixipfs(t, "status", "--json")
	var r nodestatus.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return r
}

// waitUntil polls cond (a real condition, checked every 50 ms) and fails the
// test if it does not hold within the deadline. It returns the time taken.
func waitUntil(t testing.TB, what string, within time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// addTrees adds count directories, each holding one file of size random
// bytes, to store with a single nix-store --add, and returns their store
// paths in order.
func addTrees(t testing.TB, store, prefix string, count, size int) []string {
	t.Helper()
	root := t.TempDir()
	r := rand.New(rand.NewChaCha8(seed(t)))
	var dirs []string
	for i := range count {
		d := filepath.Join(root, prefix+strconv.Itoa(i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, size)
		fillRandom(r, b)
		if err := os.WriteFile(filepath.Join(d, "data"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	out := run(t, nil, "nix-store", append([]string{"--store", store, "--add"}, dirs...)...)
	paths := strings.Fields(out)
	if len(paths) != count {
		t.Fatalf("nix-store --add gave %d paths for %d trees", len(paths), count)
	}
	return paths
}

// addRandomFile adds one file of size pseudo-random bytes to store and
// returns its store path.
func addRandomFile(t testing.TB, store, name string, size int64) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	out, err := os.Create(f)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(out, 1<<20)
	r := rand.New(rand.NewChaCha8(seed(t)))
	if _, err := io.CopyN(w, randReader{r}, size); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	out.Close()
	p := strings.TrimSpace(run(t, nil, "nix-store", "--store", store, "--add", f))
	os.Remove(f)
	return p
}

// seed makes each call's data different (store paths must be new).
func seed(t testing.TB) [32]byte {
	var s [32]byte
	copy(s[:], strconv.FormatInt(time.Now().UnixNano(), 10)+t.Name())
	return s
}

type randReader struct{ r *rand.Rand }

func (r randReader) Read(p []byte) (int, error) {
	fillRandom(r.r, p)
	return len(p), nil
}

func fillRandom(r *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
}

// scrape fetches /metrics and returns each sample by its text form, e.g.
// `nixipfs_http_requests_total{code="200",endpoint="narinfo"}`.
func scrape(t testing.TB, gw string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(string(get(t, gw+"/metrics")), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// sample names a metric sample as the Prometheus text format writes it
// (labels sorted by name).
func sample(name string, labels ...string) string {
	if len(labels) == 0 {
		return name
	}
	var pairs []string
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, labels[i]+`="`+labels[i+1]+`"`)
	}
	slices.Sort(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// httpStatus GETs url and returns the status code, or 0 if the request
// failed.
func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// vmHWM reads a process's peak resident set size in KiB.
func vmHWM(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// alive reports whether a process runs (exists and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}
