package test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixipfs/nixipfs/internal/nixtest"
)

// givenPorts are the ports freePort returned: the kernel may hand a port
// just closed to the next bind to port 0, and two of a cluster peer's
// listeners once got the same one.
var givenPorts sync.Map

// freePort returns a loopback TCP port nobody listens on now, and none it
// returned before.
func freePort(t testing.TB) string {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, taken := givenPorts.LoadOrStore(port, true); !taken {
			return strconv.Itoa(port)
		}
	}
	t.Fatal("no loopback port left that was not given before")
	return ""
}

// TestKillKuboMidNAR kills the external kubo (SIGKILL) while the gateway
// streams a 256 MiB NAR from it: that response fails (short, never a whole
// NAR), the daemon stays up, /health says 503 and NARs answer 404 (not 5xx)
// while kubo is down, and once kubo is back on the same repo and API
// address the daemon serves again, NAR included, with no restart.
func TestKillKuboMidNAR(t *testing.T) {
	nixEnv(t)
	store := nixtest.Store(t)
	k := newKubo(t)
	run(t, k.env(), ipfsBin, "config", "Addresses.API", "/ip4/127.0.0.1/tcp/"+freePort(t))
	k.start(t)
	big := addRandomFile(t, store, "big.bin", 256<<20)
	n := newNode(t, store, k)
	n.publish(t, big)
	d := n.daemon(t)
	ni := narinfo(t, d.url, big)
	narURL := d.url + "/" + ni["URL"][0]
	size, _ := strconv.ParseInt(ni["NarSize"][0], 10, 64)
	wantHash, _ := sha256Stream(t, "nix-store", "--dump", filepath.Join(store, big))

	// Read the first MiB, so the gateway is mid-stream (blocked on the
	// socket, at most its prefetch window ahead), then kill kubo.
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	resp, err := client.Get(narURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, 1<<20); err != nil {
		t.Fatalf("first MiB: %v", err)
	}
	k.kill()
	rest, err := io.Copy(h, resp.Body)
	got := 1<<20 + rest
	if err == nil && got == size && fmt.Sprintf("%x", h.Sum(nil)) == wantHash {
		t.Fatal("the whole NAR arrived although kubo was killed mid-stream")
	}
	t.Logf("response with kubo killed mid-stream: %d of %d bytes, then %v", got, size, err)

	if !alive(d.pid) {
		t.Fatal("the daemon exited when kubo died")
	}
	waitUntil(t, "/health to report kubo down", 30*time.Second, func() bool { return httpStatus(d.url+"/health") == http.StatusServiceUnavailable })
	// The narinfo may still come from what the resolver holds in memory;
	// either way never a 5xx, which Nix retries and then fails the build on.
	if c := httpStatus(d.url + "/" + hashOf(big) + ".narinfo"); c != http.StatusOK && c != http.StatusNotFound {
		t.Errorf("narinfo with kubo down: %d, want 200 or 404", c)
	}
	if c := httpStatus(narURL); c != http.StatusNotFound {
		t.Errorf("NAR with kubo down: %d, want 404", c)
	}

	k.start(t) // same repo, same API address
	took := waitUntil(t, "/health to recover", 60*time.Second, func() bool { return httpStatus(d.url+"/health") == http.StatusOK })
	t.Logf("healthy %s after kubo answered again", took.Round(time.Millisecond))
	narinfo(t, d.url, big)
	if h, n := sha256URL(t, narURL); h != wantHash || n != size {
		t.Fatalf("NAR after kubo came back: %s (%d bytes), want %s (%d)", h, n, wantHash, size)
	}
	if !alive(d.pid) {
		t.Fatal("the daemon exited")
	}
	m := scrape(t, d.url)
	if m[sample("nixipfs_http_requests_total", "endpoint", "nar", "code", "aborted")] != 1 ||
		m[sample("nixipfs_nar_renders_total", "result", "error")] != 1 {
		t.Errorf("metrics: aborted NAR responses %v, failed renders %v; want 1 each",
			m[sample("nixipfs_http_requests_total", "endpoint", "nar", "code", "aborted")], m[sample("nixipfs_nar_renders_total", "result", "error")])
	}
}

// mountNS starts a process in a mount namespace of its own and returns the
// nsenter prefix that runs commands in it. The namespace (and whatever is
// mounted in it) goes away with the process, at the end of the test or if
// the test binary dies.
func mountNS(t *testing.T) []string {
	t.Helper()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare --mount: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := strconv.Itoa(cmd.Process.Pid)
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the mount namespace", 10*time.Second, func() bool {
		ns, err := os.Readlink("/proc/" + pid + "/ns/mnt")
		return err == nil && ns != self
	})
	return []string{"nsenter", "--target", pid, "--mount", "--"}
}

// manifestVersion is the node's current manifest version ("" if none).
func (n *node) manifestVersion(t *testing.T) (string, int64) {
	t.Helper()
	var show struct {
		Version string `json:"version"`
		Paths   int64  `json:"paths"`
	}
	if err := json.Unmarshal([]byte(n.nixipfs(t, "manifest", "show", "--json")), &show); err != nil {
		t.Fatal(err)
	}
	return show.Version, show.Paths
}

// TestDiskFull publishes onto a data dir on a 384 MiB tmpfs (the pebble
// datastore keeps 128 MiB in reserve, and its logs take 35 MiB each): a path larger than the free space fails with a clear error (direct and queued), the
// previous manifest stays current and served, queueing on a full disk is
// refused cleanly, and once there is room the queued path is published.
func TestDiskFull(t *testing.T) {
	nixEnv(t)
	store := nixtest.Store(t)
	small := addTrees(t, store, "small", 1, 4096)[0]
	big := addRandomFile(t, store, "big.bin", 224<<20)
	ns := mountNS(t)
	dataDir := t.TempDir()
	run(t, nil, ns[0], append(ns[1:], "mount", "-t", "tmpfs", "-o", "size=384m,mode=0700", "nixipfs-test", dataDir)...)
	n := &node{dataDir: dataDir, store: store, wrap: ns}
	inNS := func(args ...string) (string, string, error) { return runErr(nil, ns[0], append(ns[1:], args...)...) }

	n.publish(t, small)
	v1, count := n.manifestVersion(t)
	if v1 == "" || count != 1 {
		t.Fatalf("manifest after the first publish: %q, %d paths", v1, count)
	}
	d := n.daemon(t)

	// Direct: a clear error, nothing recorded.
	_, stderr, err := n.nixipfsErr("publish", big)
	if err == nil || !strings.Contains(stderr, "no space left on device") || !strings.Contains(stderr, big) {
		t.Fatalf("publish on a full disk: err %v, stderr %q; want an error naming the path and ENOSPC", err, stderr)
	}
	t.Logf("direct publish on a full disk: %s", strings.TrimSpace(stderr))
	if v, _ := n.manifestVersion(t); v != v1 {
		t.Fatalf("manifest changed from %s to %s", v1, v)
	}
	if _, _, err := n.nixipfsErr("manifest", "get", big); err == nil {
		t.Fatal("the path that did not fit is recorded")
	}

	// Queued: the worker fails with the same clear error and retries.
	n.nixipfs(t, "publish", "--queue", big)
	waitUntil(t, "a failed attempt recorded in the queue", time.Minute, func() bool {
		st := n.status(t)
		return len(st.Queue.Entries) == 1 && st.Queue.Entries[0].Attempts >= 1
	})
	st := n.status(t)
	if e := st.Queue.Entries[0]; !strings.Contains(e.LastError, "no space left on device") {
		t.Fatalf("queue entry's error %q", e.LastError)
	}
	t.Logf("queued publish on a full disk: %s", st.Queue.Entries[0].LastError)
	if st.Manifest.Version != v1 {
		t.Fatalf("manifest %s, want %s", st.Manifest.Version, v1)
	}
	if h, _ := sha256URL(t, d.url+"/"+narinfo(t, d.url, small)["URL"][0]); h == "" {
		t.Fatal("the previous path is not served")
	}
	if c := httpStatus(d.url + "/health"); c != http.StatusOK {
		t.Errorf("/health on a full disk: %d", c)
	}

	// Queueing itself on a disk with no room left: refused, clearly, and
	// the queue is unchanged.
	filler := filepath.Join(dataDir, "filler")
	inNS("sh", "-c", "cat /dev/zero > "+filler) // ends with ENOSPC
	_, stderr, err = n.nixipfsErr("publish", "--queue", small)
	if err == nil || !strings.Contains(stderr, "no space left on device") {
		t.Errorf("publish --queue on a full disk: err %v, stderr %q", err, stderr)
	}
	if _, stderr, err := n.nixipfsErr("publish", "--queue", "--warn-only", small); err != nil || !strings.Contains(stderr, "warning") {
		t.Errorf("publish --queue --warn-only on a full disk: err %v, stderr %q", err, stderr)
	}
	if st := n.status(t); st.Queue.Waiting != 1 {
		t.Errorf("queue after refused enqueues: %d waiting, want 1", st.Queue.Waiting)
	}
	if _, stderr, err := inNS("rm", filler); err != nil {
		t.Fatalf("rm filler: %v %s", err, stderr)
	}
	if !alive(d.pid) {
		t.Fatal("the daemon exited on a full disk")
	}

	// Room again: the queued path goes out on a later attempt.
	run(t, nil, ns[0], append(ns[1:], "mount", "-o", "remount,size=1g", dataDir)...)
	took := waitServed(t, d.url, big, 2*time.Minute)
	t.Logf("published %s after the disk grew", took.Round(time.Millisecond))
	wantHash, wantSize := sha256Stream(t, "nix-store", "--dump", filepath.Join(store, big))
	if h, size := sha256URL(t, d.url+"/"+narinfo(t, d.url, big)["URL"][0]); h != wantHash || size != wantSize {
		t.Fatalf("NAR of the path published after the disk grew: %s (%d), want %s (%d)", h, size, wantHash, wantSize)
	}
	waitUntil(t, "the queue to empty", 30*time.Second, func() bool { return n.status(t).Queue.Waiting == 0 })
	if v, count := n.manifestVersion(t); v == v1 || count != 2 {
		t.Errorf("manifest after the disk grew: %s with %d paths", v, count)
	}
}
