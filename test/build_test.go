package test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixipfs/nixipfs/builder"
	"github.com/nixipfs/nixipfs/internal/nixtest"
	"github.com/nixipfs/nixipfs/manifests"
)

// buildGraph is the test graph: eight derivations a…h with diamonds
// (a → b, c → d; d → e, f → g → h; h also uses a), a job needing kvm, one
// needing a feature no builder has, a slow one, a failing one and its
// dependent. The nonce makes every output new to every store.
const buildGraph = `
{ nonce }:
let
  bb = builtins.path { path = ./bbdir; name = "busybox"; };
  mk = name: extra: script: derivation ({
    inherit name nonce;
    system = builtins.currentSystem;
    builder = "${bb}/bin/sh";
    args = [ "-c" script ];
    PATH = "${bb}/bin";
  } // extra);
  a = mk "a" {} "echo a > $out";
  b = mk "b" {} "cat ${a} > $out; echo b >> $out";
  c = mk "c" {} "cat ${a} > $out; echo c >> $out";
  d = mk "d" {} "cat ${b} ${c} > $out; echo d >> $out";
  e = mk "e" {} "cat ${d} > $out; echo e >> $out";
  f = mk "f" {} "cat ${d} > $out; echo f >> $out";
  g = mk "g" {} "mkdir $out; ln -s ${e} $out/e; cat ${f} > $out/f";
  h = mk "h" {} "mkdir $out; ln -s ${g} $out/g; ln -s ${a} $out/a; echo h > $out/h";
  bad = mk "bad" {} "echo 'failing with purpose' >&2; exit 3";
in {
  inherit a b c d e f g h bad;
  kvm = mk "kvm" { requiredSystemFeatures = [ "kvm" ]; } "echo kvm > $out";
  never = mk "never" { requiredSystemFeatures = [ "no-such-feature" ]; } "echo never > $out";
  slow = mk "slow" {} "echo slow-start; sleep 4; echo slow > $out";
  afterBad = mk "after-bad" {} "cat ${bad} > $out";
}
`

// buildEnv is a requester and two builders on loopback: builder 1
// supports kvm, builder 2 does not; each has its own key, IPFS node and
// empty Nix store, and trusts the other's outputs as inputs.
type buildEnv struct {
	graphDir         string
	storeR           string
	r                *node
	b1, b2           *node
	key1, key2       string // secret key files
	pub1, pub2       string
	d1, d2           running
	opts             []string // requester flags
	builderFlagsBase []string
}

func newBuildEnv(t *testing.T) *buildEnv {
	nixEnv(t)
	e := &buildEnv{}
	e.key1, e.pub1 = newKey(t, "builder-1")
	e.key2, e.pub2 = newKey(t, "builder-2")
	bbdir := nixtest.Busybox(t)
	e.graphDir = filepath.Dir(bbdir)
	writeFile(t, filepath.Join(e.graphDir, "graph.nix"), []byte(buildGraph))
	e.storeR = nixtest.Store(t)
	e.r = newNode(t, e.storeR, nil)
	e.b1 = newNode(t, nixtest.Store(t), nil)
	e.b2 = newNode(t, nixtest.Store(t), nil)
	e.builderFlagsBase = []string{"--network", "farm", "--follow-interval", "200ms", "--announce-interval", "1s"}
	e.d1 = e.startBuilder(t, e.b1, 1)
	e.d2 = e.startBuilder(t, e.b2, 2, "--peer", loopbackPeer(t, e.d1))
	e.opts = []string{"build", "--network", "farm", "--peer", loopbackPeer(t, e.d1), "--peer", loopbackPeer(t, e.d2),
		"--trusted-builder-key", e.pub1, "--trusted-builder-key", e.pub2,
		"--offer-interval", "300ms", "--claim-window", "300ms", "--heartbeat", "500ms", "--lease", "4s"}
	return e
}

func (e *buildEnv) startBuilder(t *testing.T, n *node, which int, extra ...string) running {
	args := append(slices.Clone(e.builderFlagsBase), extra...)
	if which == 1 {
		args = append(args, "--sign-key", e.key1, "--trusted-input-key", e.pub2, "--features", "kvm")
	} else {
		args = append(args, "--sign-key", e.key2, "--trusted-input-key", e.pub1)
	}
	return n.serve(t, "builder", args...)
}

// instantiate writes the graph's .drv files (with a fresh nonce) into the
// requester's store and returns them by attribute.
func (e *buildEnv) instantiate(t *testing.T) map[string]string {
	nonce := make([]byte, 8)
	rand.Read(nonce)
	drvs := map[string]string{}
	for _, attr := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "kvm", "never", "slow", "bad", "afterBad"} {
		drvs[attr] = run(t, nil, "nix-instantiate", "--store", e.storeR, filepath.Join(e.graphDir, "graph.nix"),
			"-A", attr, "--argstr", "nonce", hex.EncodeToString(nonce))
		drvs[attr] = strings.TrimSpace(drvs[attr])
	}
	return drvs
}

func outPath(t *testing.T, store, drv string) string {
	return strings.TrimSpace(run(t, nil, "nix-store", "--store", store, "--query", "--outputs", drv))
}

// builds counts "building" log lines per .drv in a builder's log.
func builds(log string) map[string]int {
	n := map[string]int{}
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "builds: building") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "job="); ok {
				n[v]++
			}
		}
	}
	return n
}

type jobInfo struct {
	Drv     string `json:"drv"`
	State   string `json:"state"`
	Builder string `json:"builder"`
	Error   string `json:"error"`
	Log     string `json:"log"`
}

func (e *buildEnv) jobs(t *testing.T) map[string]jobInfo {
	var js []jobInfo
	if err := json.Unmarshal([]byte(e.r.nixipfs(t, "jobs", "--json")), &js); err != nil {
		t.Fatal(err)
	}
	out := map[string]jobInfo{}
	for _, j := range js {
		out[j.Drv] = j
	}
	return out
}

func peerIDOf(addr string) string { return addr[strings.LastIndex(addr, "/")+1:] }

// TestDistributedBuild is the distributed-build acceptance scenario: a
// requester and two builders, each its own kubo node and Nix store.
func TestDistributedBuild(t *testing.T) {
	e := newBuildEnv(t)
	drvs := e.instantiate(t)

	t.Run("graph", func(t *testing.T) {
		stdout, stderr, err := runErr(nil, nixipfsBin, e.r.args(append(slices.Clone(e.opts), "--wait", drvs["h"])...)...)
		if err != nil {
			t.Fatalf("nixipfs build: %v\n%s", err, stderr)
		}
		h := outPath(t, e.storeR, drvs["h"])
		if strings.TrimSpace(stdout) != h {
			t.Fatalf("build printed %q, want %s", stdout, h)
		}
		// Progress: each job queued, offered, building on a builder, built.
		for _, want := range []string{"waiting  " + drvs["a"] + ": queued", "offered  " + drvs["a"], "building on", "built    " + drvs["h"]} {
			if !strings.Contains(stderr, want) {
				t.Errorf("progress lacks %q:\n%s", want, stderr)
			}
		}
		// Every output is in the requester's store, signed by a builder
		// key that Nix verifies.
		var outs []string
		for _, attr := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
			outs = append(outs, outPath(t, e.storeR, drvs[attr]))
		}
		run(t, nil, "nix", append([]string{"--extra-experimental-features", "nix-command", "store", "verify", "--store", e.storeR,
			"--sigs-needed", "1", "--trusted-public-keys", e.pub1 + " " + e.pub2}, outs...)...)
		got := string(readFile(t, filepath.Join(e.storeR, outPath(t, e.storeR, drvs["g"]), "f")))
		if got != "a\nb\na\nc\nd\nf\n" {
			t.Fatalf("h/g/f = %q", got)
		}
		// Each of the 8 was built exactly once, by one builder or the
		// other.
		n1, n2 := builds(e.d1.log()), builds(e.d2.log())
		for _, attr := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
			if c := n1[drvs[attr]] + n2[drvs[attr]]; c != 1 {
				t.Errorf("%s built %d times", attr, c)
			}
		}
		t.Logf("builder 1 built %d, builder 2 built %d", len(n1), len(n2))
		if jobs := e.jobs(t); jobs[drvs["h"]].State != "built" {
			t.Errorf("queue says h is %q", jobs[drvs["h"]].State)
		}
		// The builders' /metrics count their jobs by state (none left).
		for _, d := range []running{e.d1, e.d2} {
			m := string(get(t, d.url+"/metrics"))
			if !strings.Contains(m, `nixipfs_jobs{state="building"} 0`) || !strings.Contains(m, `nixipfs_jobs{state="reporting"} 0`) {
				t.Errorf("builder metrics lack job states:\n%s", m)
			}
		}
	})

	t.Run("features", func(t *testing.T) {
		stdout, stderr, err := runErr(nil, nixipfsBin, e.r.args(append(slices.Clone(e.opts), "--wait", drvs["kvm"])...)...)
		if err != nil {
			t.Fatalf("nixipfs build kvm: %v\n%s", err, stderr)
		}
		if strings.TrimSpace(stdout) != outPath(t, e.storeR, drvs["kvm"]) {
			t.Fatalf("build printed %q", stdout)
		}
		if builds(e.d1.log())[drvs["kvm"]] != 1 || builds(e.d2.log())[drvs["kvm"]] != 0 {
			t.Fatalf("the kvm job was not built by (only) the kvm builder: %v / %v", builds(e.d1.log()), builds(e.d2.log()))
		}
		if b := e.jobs(t)[drvs["kvm"]].Builder; b != peerIDOf(loopbackPeer(t, e.d1)) {
			t.Fatalf("kvm job leased to %s", b)
		}

		// Nobody supports no-such-feature: the job stays queued and is
		// reported, not lost.
		_, stderr, err = runErr(nil, nixipfsBin, e.r.args(append(slices.Clone(e.opts), "--unclaimed-after", "2s", "--timeout", "6s", drvs["never"])...)...)
		if err == nil {
			t.Fatalf("build of an unbuildable job succeeded:\n%s", stderr)
		}
		if !strings.Contains(stderr, "no builder has claimed it") || !strings.Contains(stderr, "stays queued") {
			t.Fatalf("unclaimed job not reported:\n%s", stderr)
		}
		if s := e.jobs(t)[drvs["never"]].State; s != "offered" {
			t.Fatalf("unbuildable job is %q in the queue, want offered", s)
		}
	})

	t.Run("failure", func(t *testing.T) {
		_, stderr, err := runErr(nil, nixipfsBin, e.r.args(append(slices.Clone(e.opts), "--wait", drvs["afterBad"])...)...)
		if err == nil {
			t.Fatalf("build of a failing derivation succeeded:\n%s", stderr)
		}
		if !strings.Contains(stderr, "build of "+drvs["bad"]+" failed") {
			t.Fatalf("failure not reported:\n%s", stderr)
		}
		jobs := e.jobs(t)
		if jobs[drvs["afterBad"]].State != "failed" || jobs[drvs["bad"]].State != "failed" {
			t.Fatalf("queue: bad %q, after-bad %q", jobs[drvs["bad"]].State, jobs[drvs["afterBad"]].State)
		}
		// The dependent was never offered, so no builder saw it.
		if strings.Contains(stderr, "offered  "+drvs["afterBad"]) || builds(e.d1.log() + e.d2.log())[drvs["afterBad"]] != 0 {
			t.Fatalf("the dependent of a failed build was offered:\n%s", stderr)
		}
		// The log is readable from a gateway on the requester's data dir.
		d := e.r.daemon(t)
		body := get(t, d.url+"/log/"+filepath.Base(drvs["bad"]))
		if !bytes.Contains(body, []byte("failing with purpose")) {
			t.Fatalf("log/%s = %q", filepath.Base(drvs["bad"]), body)
		}
		d.stop()
	})

	t.Run("restart-requester", func(t *testing.T) {
		fresh := e.instantiate(t)
		cmd := exec.Command(nixipfsBin, e.r.args(append(slices.Clone(e.opts), "--wait", fresh["h"])...)...)
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		builtOne := make(chan struct{})
		var once sync.Once
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "nixipfs: built") {
					once.Do(func() { close(builtOne) })
				}
			}
		}()
		select {
		case <-builtOne:
		case <-time.After(2 * time.Minute):
			cmd.Process.Kill()
			t.Fatal("no job built within 2 minutes")
		}
		cmd.Process.Kill()
		cmd.Wait()
		if js := e.jobs(t); js[fresh["h"]].State == "built" {
			t.Fatal("the whole graph was built before the requester was killed")
		}
		// The same command again: the queue is resumed where it was.
		stdout, errOut, err := runErr(nil, nixipfsBin, e.r.args(append(slices.Clone(e.opts), "--wait", fresh["h"])...)...)
		if err != nil {
			t.Fatalf("restarted build: %v\n%s", err, errOut)
		}
		if strings.TrimSpace(stdout) != outPath(t, e.storeR, fresh["h"]) {
			t.Fatalf("restarted build printed %q", stdout)
		}
	})

	t.Run("through-daemon", func(t *testing.T) {
		// The requester's machine runs a daemon: nixipfs build uses the
		// daemon's IPFS node (its API socket) and still builds and imports.
		fresh := e.instantiate(t)
		d := e.r.serve(t, "daemon", "--peer", loopbackPeer(t, e.d1), "--peer", loopbackPeer(t, e.d2))
		stdout, stderr, err := runErr(nil, nixipfsBin, e.r.args(append(slices.Clone(e.opts), "--wait", fresh["c"])...)...)
		if err != nil {
			t.Fatalf("nixipfs build beside a daemon: %v\n%s", err, stderr)
		}
		if strings.TrimSpace(stdout) != outPath(t, e.storeR, fresh["c"]) {
			t.Fatalf("build printed %q", stdout)
		}
		// The daemon's gateway serves the outputs the build recorded.
		if code := status(t, d.url+"/"+hashOf(outPath(t, e.storeR, fresh["c"]))+".narinfo"); code != 200 {
			t.Fatalf("daemon answers %d for a built output", code)
		}
		d.stop()
	})

	t.Run("hostile", func(t *testing.T) {
		// An intruder on the network (a plain kubo) sends, while a job is
		// leased: a result signed by an untrusted key, a result signed by a
		// trusted key for a job not leased to it, and an oversized message.
		// The requester logs each as rejected and imports only the real
		// builder's output.
		fresh := e.instantiate(t)
		k := startKubo(t)
		cmd, _, errOut, done := e.startBuild(t, "--wait", fresh["slow"])
		rPeer := waitPeerLine(t, errOut)
		k.ipfs(t, "swarm", "connect", rPeer)
		intruder := strings.TrimSpace(k.ipfs(t, "id", "-f", "<id>"))
		untrusted, _ := newKey(t, "intruder-1")
		forge := func(keyFile string, pad int) string {
			sk, err := manifests.LoadSecretKey(keyFile)
			if err != nil {
				t.Fatal(err)
			}
			m := builder.Message{V: builder.Version, Kind: builder.KindResult, Network: "farm", From: intruder,
				Seq: time.Now().UnixNano(), Job: fresh["slow"], Requester: peerIDOf(rPeer), Lease: 1,
				Status: builder.StatusBuilt, Error: strings.Repeat("x", pad),
				Outputs: []builder.Output{{Path: outPath(t, e.storeR, fresh["slow"]), PathInfo: "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"}}}
			if err := m.Sign(sk); err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(t.TempDir(), "msg")
			writeFile(t, f, m.Encode())
			return f
		}
		want := map[string]func() string{
			"signed by untrusted key":   func() string { return forge(untrusted, 0) },
			"does not hold the lease":   func() string { return forge(e.key1, 0) },
			"over the 65536-byte limit": func() string { return forge(e.key1, 70000) },
		}
		deadline := time.Now().Add(time.Minute)
		for reason, msg := range want {
			for !strings.Contains(errOut.String(), reason) {
				if time.Now().After(deadline) {
					t.Fatalf("the requester never logged %q:\n%s", reason, errOut.String())
				}
				// Re-sent until seen: pubsub drops messages until the mesh forms.
				k.ipfs(t, "pubsub", "pub", builder.Topic("farm"), msg())
				time.Sleep(200 * time.Millisecond) // pacing the re-sends; the loop waits on the log
			}
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("build with an intruder: %v\n%s", err, errOut.String())
			}
		case <-time.After(3 * time.Minute):
			cmd.Process.Kill()
			t.Fatalf("build with an intruder did not finish:\n%s", errOut.String())
		}
		slowOut := outPath(t, e.storeR, fresh["slow"])
		if got := string(readFile(t, filepath.Join(e.storeR, slowOut))); got != "slow\n" {
			t.Fatalf("imported %q", got)
		}
		if b := e.jobs(t)[fresh["slow"]].Builder; b == intruder || b == "" {
			t.Fatalf("job finished by %q", b)
		}
	})

	t.Run("builder-killed", func(t *testing.T) {
		// Builder 2 leaves; the slow job goes to builder 1, which is killed
		// mid-build; the lease runs out and builder 2, back, finishes it.
		e.d2.stop()
		cmd, out, errOut, done := e.startBuild(t, "--wait", "--print-build-logs", drvs["slow"])
		deadline := time.Now().Add(time.Minute)
		for builds(e.d1.log())[drvs["slow"]] == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("builder 1 did not start the slow job")
			}
			time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
		}
		e.d1.kill()
		// Builder 2 comes back and meets the requester at its address.
		e.d2 = e.startBuilder(t, e.b2, 2, "--peer", waitPeerLine(t, errOut))
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("build after the builder was killed: %v\n%s", err, errOut.String())
			}
		case <-time.After(3 * time.Minute):
			cmd.Process.Kill()
			t.Fatalf("build did not finish after the builder was killed:\n%s", errOut.String())
		}
		if !strings.Contains(errOut.String(), "expired") {
			t.Errorf("no lease expiry reported:\n%s", errOut.String())
		}
		// The log streamed while the job was building (heartbeats).
		if !strings.Contains(errOut.String(), "slow> slow-start") {
			t.Errorf("build log not streamed:\n%s", errOut.String())
		}
		if b := e.jobs(t)[drvs["slow"]].Builder; b != peerIDOf(loopbackPeer(t, e.d2)) {
			t.Fatalf("slow job finished by %s, not builder 2", b)
		}
		if strings.TrimSpace(out.String()) != outPath(t, e.storeR, drvs["slow"]) {
			t.Fatalf("build printed %q", out.String())
		}
	})
}

// startBuild starts `nixipfs build` with the requester's flags in the
// background; done receives its exit.
func (e *buildEnv) startBuild(t *testing.T, args ...string) (cmd *exec.Cmd, out *bytes.Buffer, errOut *syncBuffer, done chan error) {
	cmd = exec.Command(nixipfsBin, e.r.args(append(slices.Clone(e.opts), args...)...)...)
	out, errOut = &bytes.Buffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done = make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, out, errOut, done
}

// waitPeerLine waits for a command's "nixipfs: ipfs peer" loopback line.
func waitPeerLine(t *testing.T, out *syncBuffer) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		for _, line := range strings.Split(out.String(), "\n") {
			if a, ok := strings.CutPrefix(line, "nixipfs: ipfs peer "); ok && strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no peer address printed:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
	}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
