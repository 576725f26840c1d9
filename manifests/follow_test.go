package manifests

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"
)

// The follower's state file: what it saves it restores, and a state file it
// cannot read costs only the restore.
func TestFollowerState(t *testing.T) {
	const name = "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8"
	v := cid.MustParse("bafyreig6gjwjxhhseu3bckk4w4n6r6a2ailz73hn7fiudh4yq3zsskywhm")
	file := filepath.Join(t.TempDir(), "followed.json")

	f := NewFollower(nil, file)
	f.Set([]string{name})
	f.synced[name] = v
	f.state[name].Version, f.state[name].Seq, f.state[name].Resolved = v.String(), 7, true
	if err := f.save(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}

	g := NewFollower(nil, file)
	if vs := g.Versions(); len(vs) != 0 {
		t.Errorf("versions before the name is followed again: %v", vs)
	}
	g.Set([]string{name})
	if vs := g.Versions(); len(vs) != 1 || vs[0].Name != name || !vs[0].Version.Equals(v) {
		t.Errorf("restored versions %v, want %s at %s", vs, name, v)
	}
	if st := g.Status(); len(st) != 1 || st[0].Version != v.String() || st[0].Seq != 7 || st[0].Resolved {
		t.Errorf("restored status %+v, want version %s, seq 7, not resolved", st, v)
	}

	for what, data := range map[string]string{
		"not JSON":  "{",
		"a bad CID": `[{"name":"` + name + `","version":"bafy-not-a-cid"}]`,
	} {
		if err := os.WriteFile(file, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		h := NewFollower(nil, file)
		h.Set([]string{name})
		if vs := h.Versions(); len(vs) != 0 {
			t.Errorf("%s: restored %v", what, vs)
		}
	}
}
