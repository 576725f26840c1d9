package narcache

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

func nar(t *testing.T, n int, fill byte) (cid.Cid, []byte, []byte) {
	t.Helper()
	data := bytes.Repeat([]byte{fill}, n)
	sum := sha256.Sum256(data)
	root, err := cid.V1Builder{Codec: cid.Raw, MhType: mh.SHA2_256}.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	return root, data, sum[:]
}

func put(t *testing.T, c *Cache, root cid.Cid, data, sum []byte) {
	t.Helper()
	w := c.Create(root, sum, int64(len(data)))
	if w == nil {
		t.Fatalf("Create %s: nil", root)
	}
	w.Write(data)
	w.Commit()
	c.Close() // wait for the commit
}

func read(t *testing.T, c *Cache, root cid.Cid, sum []byte, size int) []byte {
	t.Helper()
	f := c.Open(root, sum, int64(size))
	if f == nil {
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundTripAndKeys(t *testing.T) {
	c, err := Open(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	root, data, sum := nar(t, 1000, 'a')
	if c.Open(root, sum, 1000) != nil {
		t.Fatal("empty cache holds a NAR")
	}
	put(t, c, root, data, sum)
	if got := read(t, c, root, sum, 1000); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes", len(got))
	}
	if c.Size() != 1000 {
		t.Fatalf("size %d", c.Size())
	}
	// Another root, size or hash is another NAR.
	other, _, otherSum := nar(t, 1000, 'b')
	if c.Open(other, sum, 1000) != nil || c.Open(root, otherSum, 1000) != nil || c.Open(root, sum, 999) != nil {
		t.Fatal("a NAR is served under another key")
	}
	// Cached already: nothing to write.
	if w := c.Create(root, sum, 1000); w != nil {
		t.Fatal("Create of a cached NAR")
	}
}

func TestAbortAndShortWriteLeaveNothing(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	root, data, sum := nar(t, 1000, 'a')
	w := c.Create(root, sum, 1000)
	if c.Create(root, sum, 1000) != nil {
		t.Fatal("two writers for one NAR")
	}
	w.Write(data[:500])
	w.Abort()
	w = c.Create(root, sum, 1000)
	w.Write(data[:999]) // committed short: refused
	w.Commit()
	c.Close()
	if c.Open(root, sum, 1000) != nil || c.Size() != 0 {
		t.Fatal("a partial NAR was cached")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left files: %v", ents)
	}
}

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	c, err := Open(t.TempDir(), 2500)
	if err != nil {
		t.Fatal(err)
	}
	ra, a, sa := nar(t, 1000, 'a')
	rb, b, sb := nar(t, 1000, 'b')
	rc, cc, sc := nar(t, 1000, 'c')
	put(t, c, ra, a, sa)
	put(t, c, rb, b, sb)
	read(t, c, ra, sa, 1000) // a is now more recent than b
	put(t, c, rc, cc, sc)
	if c.Size() > 2500 {
		t.Fatalf("size %d over the bound", c.Size())
	}
	if read(t, c, rb, sb, 1000) != nil {
		t.Fatal("b, the least recently used, is still cached")
	}
	if read(t, c, ra, sa, 1000) == nil || read(t, c, rc, sc, 1000) == nil {
		t.Fatal("a or c was evicted")
	}
	// A NAR over half the bound is not cached at all.
	rd, _, sd := nar(t, 1300, 'd')
	if c.Create(rd, sd, 1300) != nil {
		t.Fatal("Create of a NAR over half the cache")
	}
}

func TestReopenKeepsWholeNARsOnly(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	root, data, sum := nar(t, 1000, 'a')
	put(t, c, root, data, sum)
	// Left by a crash: an unfinished file, and a NAR of the wrong length.
	os.WriteFile(filepath.Join(dir, Name(root, sum, 1000)+".123.tmp"), data[:10], 0o600)
	r2, _, s2 := nar(t, 2000, 'b')
	os.WriteFile(filepath.Join(dir, Name(r2, s2, 2000)), data, 0o600)

	c2, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, c2, root, sum, 1000); !bytes.Equal(got, data) {
		t.Fatal("the whole NAR was not kept")
	}
	if c2.Open(r2, s2, 2000) != nil || c2.Size() != 1000 {
		t.Fatal("a NAR of the wrong length is served")
	}
	if _, err := os.Stat(filepath.Join(dir, Name(root, sum, 1000)+".123.tmp")); err == nil {
		t.Fatal("unfinished file left")
	}
	// A smaller bound evicts on open.
	c3, err := Open(dir, 500)
	if err != nil {
		t.Fatal(err)
	}
	if c3.Size() != 0 {
		t.Fatalf("size %d over the bound 500", c3.Size())
	}
	if _, err := Open(dir, 0); err == nil {
		t.Fatal("a zero bound was accepted")
	}
}

// A process that stops without Close may leave NARs whose bytes never
// reached the disk; the next Open drops what it wrote after the last sync
// and keeps what was synced before.
func TestCrashDropsUnsyncedNARs(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	synced, sdata, ssum := nar(t, 1000, 'a')
	put(t, c, synced, sdata, ssum) // put ends with Close: a sync
	if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
		t.Fatal("the marker is left after Close")
	}
	// Make the synced NAR older than the marker's slack, as a NAR written
	// in an earlier run is.
	old := time.Now().Add(-2 * markerSlack)
	if err := os.Chtimes(filepath.Join(dir, Name(synced, ssum, 1000)), old, old); err != nil {
		t.Fatal(err)
	}

	// The next NAR is committed, and the process dies before Close.
	crashed, cdata, csum := nar(t, 2000, 'b')
	w := c.Create(crashed, csum, 2000)
	w.Write(cdata)
	w.Commit()
	c.commits.Wait()
	if _, err := os.Stat(filepath.Join(dir, marker)); err != nil {
		t.Fatalf("no marker while a NAR is unsynced: %v", err)
	}
	if got := read(t, c, crashed, csum, 2000); !bytes.Equal(got, cdata) {
		t.Fatal("the committed NAR is not served before the crash")
	}

	c2, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if c2.Open(crashed, csum, 2000) != nil {
		t.Fatal("a NAR written after the last sync survived the crash")
	}
	if _, err := os.Stat(filepath.Join(dir, Name(crashed, csum, 2000))); err == nil {
		t.Fatal("the dropped NAR's file is left")
	}
	if got := read(t, c2, synced, ssum, 1000); !bytes.Equal(got, sdata) {
		t.Fatal("a NAR synced before the crash was dropped")
	}
	if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
		t.Fatal("the marker is left after Open cleaned up")
	}
	if c2.Size() != 1000 {
		t.Fatalf("size %d, want 1000", c2.Size())
	}
}
