// Package test holds the integration tests: the nixipfs binary against a real
// kubo (the go.mod tool, built into .bin/ipfs) and the real Nix, all on
// loopback. Missing tools fail the tests; nothing is skipped.
package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixipfs/nixipfs/internal/nixtest"
)

var (
	repoRoot   string
	nixipfsBin string
	ipfsBin    string
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Dir(filepath.Dir(file))
	ipfsBin = filepath.Join(repoRoot, ".bin", "ipfs")
	if _, err := os.Stat(ipfsBin); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: kubo's ipfs is not built at %s: run scripts/install-deps\n", ipfsBin)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "nixipfs-bin")
	if err != nil {
		panic(err)
	}
	nixipfsBin = filepath.Join(dir, "nixipfs")
	build := exec.Command("go", "build", "-o", nixipfsBin, "./cmd/nixipfs")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: build nixipfs: %v\n", err)
		os.Exit(1)
	}
	os.Setenv("IPFS_TELEMETRY", "off")
	// No user's nixipfs (or nix) config file reaches the tests.
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs a command, failing the test with its stderr on error.
func run(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	out, errOut, err := runErr(env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errOut)
	}
	return out
}

func runErr(env []string, name string, args ...string) (string, string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// stop asks a process to end (SIGTERM) and kills it if it has not within
// 20 s; exited is closed once it has been waited for.
func stop(cmd *exec.Cmd, exited <-chan struct{}) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// kubo is an external kubo daemon with its own repo (test profile).
type kubo struct {
	path string
	api  string

	cmd    *exec.Cmd
	exited chan struct{}
}

func (k *kubo) env() []string { return []string{"IPFS_PATH=" + k.path, "IPFS_TELEMETRY=off"} }

// ipfs runs the ipfs CLI against this daemon.
func (k *kubo) ipfs(t testing.TB, args ...string) string {
	t.Helper()
	return run(t, k.env(), ipfsBin, args...)
}

func startKubo(t testing.TB) *kubo {
	t.Helper()
	k := newKubo(t)
	k.start(t)
	return k
}

// newKubo makes a kubo repo (not started).
func newKubo(t testing.TB) *kubo {
	t.Helper()
	k := &kubo{path: t.TempDir()}
	run(t, k.env(), ipfsBin, "init", "--profile=test", "--empty-repo")
	// IPNS over pubsub: followers see new manifest versions in milliseconds.
	run(t, k.env(), ipfsBin, "config", "--json", "Ipns.UsePubsub", "true")
	run(t, k.env(), ipfsBin, "config", "--json", "Pubsub.Enabled", "true")
	// A DHT server, so that peers on loopback find each other's provider
	// records (replica counts for gc).
	run(t, k.env(), ipfsBin, "config", "Routing.Type", "dhtserver")
	return k
}

// start starts the daemon on the repo and waits for its API; it is stopped
// at the end of the test.
func (k *kubo) start(t testing.TB) {
	t.Helper()
	// A killed daemon leaves its api file: the CLI would take it for a
	// live API (or run offline on the repo) while the new one starts.
	os.Remove(filepath.Join(k.path, "api"))
	cmd := exec.Command(ipfsBin, "daemon")
	cmd.Env = append(os.Environ(), k.env()...)
	logf, err := os.Create(filepath.Join(t.TempDir(), "kubo.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ipfs daemon: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { stop(cmd, exited) })
	k.cmd, k.exited = cmd, exited
	// The daemon writes $IPFS_PATH/api once its API listens; poll it.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(k.path, "api")); err == nil && len(b) > 0 {
			k.api = strings.TrimSpace(string(b))
			if _, _, err := runErr(k.env(), ipfsBin, "id"); err == nil {
				return
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("ipfs daemon exited:\n%s", log)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("ipfs daemon did not start:\n%s", log)
		}
	}
}

// kill ends the daemon with SIGKILL, as a crash would, and waits for it.
func (k *kubo) kill() {
	k.cmd.Process.Kill()
	<-k.exited
}

// node is one nixipfs installation: a data dir, optionally an external kubo.
type node struct {
	dataDir string
	ipfsAPI string
	store   string // Nix store the node publishes from
	// datastore, if set, is --datastore for a new embedded repo.
	datastore string
	// wrap, if set, runs nixipfs through this command (e.g. nsenter into
	// a mount namespace).
	wrap []string
}

// command returns the program and arguments that run nixipfs with args.
func (n *node) command(args ...string) (string, []string) {
	all := n.args(args...)
	if len(n.wrap) == 0 {
		return nixipfsBin, all
	}
	return n.wrap[0], append(append(append([]string(nil), n.wrap[1:]...), nixipfsBin), all...)
}

func newNode(t testing.TB, store string, k *kubo) *node {
	n := &node{dataDir: t.TempDir(), store: store}
	if k != nil {
		n.ipfsAPI = k.api
	}
	return n
}

func (n *node) args(args ...string) []string {
	base := []string{"--data-dir", n.dataDir}
	if n.ipfsAPI != "" {
		base = append(base, "--ipfs-api", n.ipfsAPI)
	}
	if n.store != "" {
		base = append(base, "--store", n.store)
	}
	if n.datastore != "" {
		base = append(base, "--datastore", n.datastore)
	}
	return append(base, args...)
}

// nixipfs runs the CLI and returns stdout, failing the test on error.
func (n *node) nixipfs(t testing.TB, args ...string) string {
	t.Helper()
	name, argv := n.command(args...)
	return run(t, nil, name, argv...)
}

type publishResult struct {
	StorePath string `json:"storePath"`
	Root      string `json:"root"`
	PathInfo  string `json:"pathInfo"`
	NarSize   int64  `json:"narSize"`
	Status    string `json:"status"`
}

func (n *node) publish(t testing.TB, args ...string) []publishResult {
	t.Helper()
	out := n.nixipfs(t, append([]string{"publish", "--json"}, args...)...)
	var res []publishResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("publish --json output: %v\n%s", err, out)
	}
	return res
}

// running is a started daemon: its gateway URL and its IPFS peer addresses.
type running struct {
	url   string
	peers []string
	stop  func()        // ends the daemon now (it is ended at cleanup anyway)
	kill  func()        // SIGKILLs it
	log   func() string // its stderr so far
	pid   int
}

// daemon starts `nixipfs daemon` on a free loopback port. It is stopped at
// the end of the test.
func (n *node) daemon(t testing.TB, args ...string) running {
	t.Helper()
	return n.serve(t, "daemon", args...)
}

// serve starts a daemon-like command (daemon, builder) on a free loopback
// port and waits for its gateway.
func (n *node) serve(t testing.TB, sub string, args ...string) running {
	t.Helper()
	name, argv := n.command(append([]string{sub, "--listen", "127.0.0.1:0"}, args...)...)
	cmd := exec.Command(name, argv...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	exited := make(chan struct{})
	urlc := make(chan string, 1)
	var peers []string
	var log bytes.Buffer
	var logMu sync.Mutex
	logText := func() string {
		logMu.Lock()
		defer logMu.Unlock()
		return log.String()
	}
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			logMu.Lock()
			log.WriteString(line + "\n")
			logMu.Unlock()
			if a, ok := strings.CutPrefix(line, "nixipfs: ipfs peer "); ok {
				peers = append(peers, a)
			}
			if u, ok := strings.CutPrefix(line, "nixipfs: gateway on "); ok {
				urlc <- u
			}
		}
	}()
	go func() { <-logDone; cmd.Wait(); close(exited) }()
	var once sync.Once
	stopNow := func() { once.Do(func() { stop(cmd, exited) }) }
	t.Cleanup(func() {
		stopNow()
		if t.Failed() {
			t.Logf("%s log:\n%s", sub, logText())
		}
	})
	kill := func() { cmd.Process.Kill(); <-exited }
	select {
	case u := <-urlc:
		// The peer lines come before the gateway line.
		return running{url: u, peers: peers, stop: stopNow, kill: kill, log: logText, pid: cmd.Process.Pid}
	case <-exited:
		t.Fatalf("%s exited:\n%s", sub, logText())
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not start:\n%s", sub, logText())
	}
	return running{}
}

// get fetches url and returns the body, failing on a non-200 answer.
func get(t testing.TB, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body
}

// narinfo fetches and parses a narinfo (key -> values).
func narinfo(t testing.TB, gw, storePath string) map[string][]string {
	t.Helper()
	hash := strings.SplitN(filepath.Base(storePath), "-", 2)[0]
	body := get(t, gw+"/"+hash+".narinfo")
	fields := map[string][]string{}
	for _, line := range strings.Split(strings.TrimRight(string(body), "\n"), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("narinfo line %q has no \": \"", line)
		}
		fields[k] = append(fields[k], v)
	}
	return fields
}

// sha256Stream hashes a command's stdout (e.g. nix-store --dump) without
// holding it in memory.
func sha256Stream(t testing.TB, name string, args ...string) (string, int64) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, out)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, stderr.String())
	}
	return fmt.Sprintf("%x", h.Sum(nil)), n
}

func sha256URL(t testing.TB, url string) (string, int64) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return fmt.Sprintf("%x", h.Sum(nil)), n
}

// nixEnv sets up Nix for a test: nix-command on, no substituters.
func nixEnv(t testing.TB) {
	nixtest.Env(t)
	// Nix caches narinfo answers (a 404 for an hour) per cache URL; ports
	// are reused between tests, so each test gets its own cache.
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
}

// eachNix runs f as a subtest under each Nix version the suite tests
// (nixtest.Versions: Debian 12's, then Debian 13's), that version's tools
// first on PATH for the test and the nixipfs processes it starts.
func eachNix(t *testing.T, f func(t *testing.T)) {
	for _, nx := range nixtest.Versions(t) {
		t.Run(nx.Name, func(t *testing.T) {
			nx.Use(t)
			f(t)
		})
	}
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return c
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// status GETs url and returns the status code.
func status(t testing.TB, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
