package test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixipfs/nixipfs/internal/nixtest"
)

// realTarballs makes n gzip'd tarballs of real directories (GOROOT/src
// packages), named t<i>.tar.gz.
func realTarballs(t *testing.T, n int) map[string][]byte {
	t.Helper()
	goroot := strings.TrimSpace(run(t, nil, "go", "env", "GOROOT"))
	dirs, err := filepath.Glob(filepath.Join(goroot, "src", "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(dirs)
	out := map[string][]byte{}
	tmp := t.TempDir()
	for _, d := range dirs {
		if len(out) == n {
			break
		}
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			continue
		}
		f := filepath.Join(tmp, fmt.Sprintf("t%d.tar.gz", len(out)))
		run(t, nil, "tar", "czf", f, "-C", filepath.Dir(d), filepath.Base(d))
		out[filepath.Base(f)] = readFile(t, f)
	}
	if len(out) != n {
		t.Fatalf("only %d directories for tarballs", len(out))
	}
	return out
}

type mirrorReport struct {
	Mirrored, Skipped, Patches, Failed int
	Results                            []struct {
		Status string
		Entry  struct{ Index int }
	}
}

// TestMirrorTarballs is the acceptance fixture: 50 entries with mixed hash
// encodings (nix32, base16, base64, SRI, the old single-url form), one dead
// first URL, one wrong hash, one patch and one 404. 47 are mirrored, the
// wrong-hash file is recorded nowhere, a rerun downloads nothing, a
// mirrored tarball's CID is the root of the flat store path nix makes of
// it, and the gateway serves every file by hash.
func TestMirrorTarballs(t *testing.T) {
	nixEnv(t)
	files := realTarballs(t, 50)
	src := newSourceServer(t, files)
	var list []map[string]any
	for i := range 50 {
		name := fmt.Sprintf("t%d.tar.gz", i)
		sum := sha256.Sum256(files[name])
		e := map[string]any{"name": name, "urls": []string{src.URL + "/" + name}, "isPatch": false, "type": "sha256"}
		switch i % 5 {
		case 0:
			e["hash"] = nixbase32.EncodeToString(sum[:])
		case 1:
			e["hash"] = hex.EncodeToString(sum[:])
		case 2:
			e["hash"] = base64.StdEncoding.EncodeToString(sum[:])
		case 3:
			e["hash"], e["type"] = "sha256-"+base64.StdEncoding.EncodeToString(sum[:]), nil
		case 4: // the older form
			e = map[string]any{"url": src.URL + "/" + name, "hash": hex.EncodeToString(sum[:]), "type": "sha256", "name": name}
		}
		switch i {
		case 5:
			e["urls"] = []string{"http://127.0.0.1:1/dead.tar.gz", src.URL + "/" + name}
		case 6:
			other := sha256.Sum256([]byte("something else"))
			e["hash"] = hex.EncodeToString(other[:])
		case 7:
			e["isPatch"] = true
		case 8:
			e["urls"] = []string{src.URL + "/missing.tar.gz"}
		}
		list = append(list, e)
	}
	listFile := filepath.Join(t.TempDir(), "sources.json")
	b, _ := json.Marshal(list)
	writeFile(t, listFile, b)

	n := newNode(t, "", nil)
	mirrorRun := func() mirrorReport {
		out, stderr, err := runErr(nil, nixipfsBin, n.args("mirror-tarballs", "--json", "--retries", "0", listFile)...)
		var rep mirrorReport
		if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
			t.Fatalf("mirror-tarballs: %v %v\n%s\n%s", err, jerr, out, stderr)
		}
		if rep.Failed > 0 && err == nil {
			t.Errorf("mirror-tarballs exited 0 with %d failures", rep.Failed)
		}
		return rep
	}
	rep := mirrorRun()
	if rep.Mirrored != 47 || rep.Failed != 2 || rep.Patches != 1 {
		t.Fatalf("first run: %d mirrored, %d failed, %d patches; want 47, 2, 1", rep.Mirrored, rep.Failed, rep.Patches)
	}
	wrong := sha256.Sum256(files["t6.tar.gz"])
	for _, key := range []string{"src/sha256/" + hex.EncodeToString(wrong[:]), "src/sha256/" + list[6]["hash"].(string)} {
		if _, _, err := runErr(nil, nixipfsBin, n.args("manifest", "get", key)...); err == nil {
			t.Errorf("wrong-hash entry recorded under %s", key)
		}
	}

	before := src.requests.Load()
	rep = mirrorRun()
	if rep.Mirrored != 0 || rep.Skipped != 47 {
		t.Fatalf("rerun: %d mirrored, %d skipped; want 0, 47", rep.Mirrored, rep.Skipped)
	}
	// Only the two failing entries are tried again (the 404 once, the
	// wrong-hash file once).
	if got := src.requests.Load() - before; got > 2 {
		t.Errorf("rerun made %d requests", got)
	}

	// The same file fetched by nix and published as a store path has the
	// CID the mirror recorded.
	store := nixtest.Store(t)
	fp := strings.TrimSpace(run(t, nil, "nix-prefetch-url", "--store", store, "--print-path", src.URL+"/t0.tar.gz"))
	p := strings.Fields(fp)[1]
	pub := newNode(t, store, nil)
	root := pub.publish(t, p)[0].Root
	sum := sha256.Sum256(files["t0.tar.gz"])
	var rec struct{ Root string }
	json.Unmarshal([]byte(n.nixipfs(t, "manifest", "get", "--json", "src/sha256/"+hex.EncodeToString(sum[:]))), &rec)
	if rec.Root != root {
		t.Fatalf("mirror recorded %s, the nix-prefetch-url store path's root is %s", rec.Root, root)
	}

	gw := n.daemon(t).url
	for name, data := range files {
		if name == "t6.tar.gz" || name == "t7.tar.gz" || name == "t8.tar.gz" {
			continue
		}
		s := sha256.Sum256(data)
		if got := get(t, gw+"/sha256/"+hex.EncodeToString(s[:])); hexSHA256(got) != hex.EncodeToString(s[:]) {
			t.Errorf("%s served with the wrong content", name)
		}
	}
}

// TestMirrorKilled kills mirror-tarballs mid-run: whatever it recorded is
// whole (every recorded file is served with its hash), and a rerun
// completes the rest.
func TestMirrorKilled(t *testing.T) {
	nixEnv(t)
	files := realTarballs(t, 20)
	src := newSourceServer(t, files)
	var list []map[string]any
	for i := range 20 {
		name := fmt.Sprintf("t%d.tar.gz", i)
		list = append(list, map[string]any{"name": name, "urls": []string{src.URL + "/" + name}, "hash": hexSHA256(files[name]), "type": "sha256"})
	}
	listFile := filepath.Join(t.TempDir(), "sources.json")
	b, _ := json.Marshal(list)
	writeFile(t, listFile, b)
	n := newNode(t, "", nil)

	cmd := exec.Command(nixipfsBin, n.args("mirror-tarballs", "--jobs", "1", listFile)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for src.requests.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	out, stderr, err := runErr(nil, nixipfsBin, n.args("mirror-tarballs", "--json", listFile)...)
	if err != nil {
		t.Fatalf("rerun after kill: %v\n%s", err, stderr)
	}
	var rep mirrorReport
	json.Unmarshal([]byte(out), &rep)
	if rep.Mirrored+rep.Skipped != 20 || rep.Failed != 0 {
		t.Fatalf("rerun: %d mirrored + %d skipped, %d failed; want 20 in all", rep.Mirrored, rep.Skipped, rep.Failed)
	}
	gw := n.daemon(t).url
	for name, data := range files {
		if got := get(t, gw+"/sha256/"+hexSHA256(data)); hexSHA256(got) != hexSHA256(data) {
			t.Errorf("%s served with the wrong content", name)
		}
	}
}
