package ipfsnode

import (
	"net/http/httptest"
	"testing"
)

// Only a plain whole-DAG CAR request takes the fast path; everything else
// goes to boxo's handler, which knows the rest of the specification.
func TestWholeDAGCAR(t *testing.T) {
	const c = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
	for _, tc := range []struct {
		method, url, accept string
		fast                bool
	}{
		{"GET", "/ipfs/" + c + "?format=car", "", true},
		{"GET", "/ipfs/" + c + "?format=car&dag-scope=all&dups=n", "", true},
		{"GET", "/ipfs/" + c, "application/vnd.ipld.car;version=1;order=dfs;dups=n", true},
		{"HEAD", "/ipfs/" + c + "?format=car", "", true},
		{"GET", "/ipfs/" + c, "", false},
		{"GET", "/ipfs/" + c + "?format=raw", "", false},
		{"GET", "/ipfs/" + c, "application/vnd.ipld.raw", false},
		{"GET", "/ipfs/" + c + "/sub/path?format=car", "", false},
		{"GET", "/ipfs/" + c + "?format=car&dag-scope=entity", "", false},
		{"GET", "/ipfs/" + c + "?format=car&dag-scope=block", "", false},
		{"GET", "/ipfs/" + c + "?format=car&dups=y", "", false},
		{"GET", "/ipfs/" + c + "?format=car&entity-bytes=0:10", "", false},
		{"GET", "/ipfs/" + c, "application/vnd.ipld.car;version=2", false},
		{"GET", "/ipfs/" + c, "application/vnd.ipld.car;order=unk;dups=y", false},
		{"POST", "/ipfs/" + c + "?format=car", "", false},
		{"GET", "/ipfs/not-a-cid?format=car", "", false},
		{"GET", "/ipns/" + c + "?format=car", "", false},
	} {
		r := httptest.NewRequest(tc.method, tc.url, nil)
		if tc.accept != "" {
			r.Header.Set("Accept", tc.accept)
		}
		got, fast := wholeDAGCAR(r)
		if fast != tc.fast || (fast && got.String() != c) {
			t.Errorf("%s %s Accept %q: fast %v (%s), want %v", tc.method, tc.url, tc.accept, fast, got, tc.fast)
		}
	}
}
