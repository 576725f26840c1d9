package ipldnar

import (
	"bytes"
	"context"
	"testing"

	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
)

// FuzzImport checks the central property of the codec on arbitrary input:
// Import either refuses it, or Render gives back exactly the same bytes and
// the hashes are those of the input.
func FuzzImport(f *testing.F) {
	for _, tc := range roundTripCases {
		if nar := encodeNAR(tc.tree); len(nar) < 64<<10 {
			f.Add(nar)
		}
	}
	f.Fuzz(func(t *testing.T, nar []byte) {
		ds := mdtest.Mock()
		res, err := Import(context.Background(), bytes.NewReader(nar), ds)
		if err != nil {
			return
		}
		checkResult(t, res, nar)
		var b bytes.Buffer
		if _, err := Render(context.Background(), &b, res.Root, ds); err != nil {
			t.Fatalf("Render of an imported NAR: %v", err)
		}
		if !bytes.Equal(b.Bytes(), nar) {
			t.Fatalf("Render(Import(x)) != x:\n got %q\nwant %q", b.Bytes(), nar)
		}
	})
}

// FuzzRoundTrip builds a valid tree from the fuzzer's bytes (names with any
// allowed bytes, empty and non-empty files, symlinks, nesting), so that the
// valid paths get the fuzzer's attention too: every such NAR must import and
// render back unchanged.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{3, 4, 'a', 0, 5, 'x', 'y', 2, 3, 'l', 1, 2, 'b', 3, 2, 0xff, 0xfe, 1, 1, 7})
	f.Add([]byte{0, 0})
	f.Add([]byte{2, 0})
	f.Fuzz(func(t *testing.T, program []byte) {
		tree, _ := fuzzTree(program, 0)
		nar := encodeNAR(tree)
		ds := mdtest.Mock()
		res, err := Import(context.Background(), bytes.NewReader(nar), ds)
		if err != nil {
			t.Fatalf("valid NAR refused: %v", err)
		}
		checkResult(t, res, nar)
		var b bytes.Buffer
		if _, err := Render(context.Background(), &b, res.Root, ds); err != nil {
			t.Fatalf("Render: %v", err)
		}
		if !bytes.Equal(b.Bytes(), nar) {
			t.Fatal("Render(Import(x)) != x")
		}
	})
}

// fuzzTree decodes a tree from p and returns the rest of p.
func fuzzTree(p []byte, depth int) (tnode, []byte) {
	next := func() byte {
		if len(p) == 0 {
			return 0
		}
		c := p[0]
		p = p[1:]
		return c
	}
	take := func(n int) []byte {
		n = min(n, len(p))
		b := p[:n]
		p = p[n:]
		return b
	}
	switch op := next() % 4; {
	case op == 3 && depth < 6:
		n := int(next() % 6)
		seen := map[string]bool{}
		var entries []tentry
		for i := 0; i < n; i++ {
			name := bytes.Clone(take(int(next()%8) + 1))
			for j, c := range name {
				if c == '/' || c == 0 {
					name[j] = 'a'
				}
			}
			var child tnode
			child, p = fuzzTree(p, depth+1)
			if s := string(name); s != "." && s != ".." && !seen[s] && len(s) <= maxNameLen && s != "" {
				seen[s] = true
				entries = append(entries, ent(s, child))
			}
		}
		return dir(entries...), p
	case op == 2:
		target := bytes.ReplaceAll(take(int(next())), []byte{0}, []byte("0"))
		if len(target) == 0 {
			target = []byte("t")
		}
		return link(string(target)), p
	default:
		data := take(int(next()))
		if op == 1 {
			return exe(bytes.Clone(data)), p
		}
		return file(bytes.Clone(data)), p
	}
}
