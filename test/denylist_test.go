package test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixipfs/nixipfs/internal/nixtest"
)

// TestDenylist checks that kubo's content blocking reaches the NARs the
// gateway renders, though renders read the datastore directly: with a
// .deny file naming one published path's DAG root in
// $XDG_CONFIG_HOME/ipfs/denylists, the embedded daemon does not serve that
// NAR (404), neither from its NAR cache (where a start without the file
// put it) nor rendered, nor its DAG as a CAR to peers (410), and serves
// another path's.
func TestDenylist(t *testing.T) {
	nixEnv(t)
	store := nixtest.Store(t)
	denied := addRandomFile(t, store, "denied.bin", 1<<20)
	allowed := addRandomFile(t, store, "allowed.bin", 1<<20)
	n := newNode(t, store, nil)
	var root string
	for _, r := range n.publish(t, denied, allowed) {
		if r.StorePath == denied {
			root = r.Root
		}
	}
	xdg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg) // the daemons inherit it
	t.Setenv("IPFS_CONTENT_BLOCKING_DISABLE", "")
	dir := filepath.Join(xdg, "ipfs", "denylists")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(dir, "test.deny")
	rule := "version: 1\nname: test\n---\n/ipfs/" + root + "\n"

	statuses := func(args ...string) (int, int) {
		d := n.daemon(t, args...)
		defer d.stop()
		nar := func(p string) int {
			ni := narinfo(t, d.url, p)
			// What a peer fetches (a CAR of the DAG) answers alike: 410
			// Gone for a denied root, as kubo's gateway.
			root := strings.SplitN(strings.TrimPrefix(ni["URL"][0], "nar/"), "-", 2)[0]
			car, status := httpStatus(d.url+"/ipfs/"+root+"?format=car"), httpStatus(d.url+"/"+ni["URL"][0])
			if (car == http.StatusGone) != (status == http.StatusNotFound) || (car != http.StatusGone && car != http.StatusOK) {
				t.Errorf("%s: NAR %d but its DAG's CAR %d", p, status, car)
			}
			return status
		}
		return nar(denied), nar(allowed)
	}
	// Served and put in the NAR cache before the denylist is written.
	if d, a := statuses(); d != http.StatusOK || a != http.StatusOK {
		t.Fatalf("without the denylist: NARs %d and %d, want 200", d, a)
	}
	if err := os.WriteFile(list, []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{nil, {"--nar-cache-mb", "0"}} {
		if d, a := statuses(args...); d != http.StatusNotFound || a != http.StatusOK {
			t.Fatalf("with the denylist, %v: denied NAR %d (want 404), other NAR %d (want 200)", args, d, a)
		}
	}
}
