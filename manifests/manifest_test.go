package manifests

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	"github.com/ipfs/boxo/ipld/unixfs/hamt"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// countingDAG counts what the code under test asks of its DAGService.
type countingDAG struct {
	ipld.DAGService
	gets     atomic.Int64 // blocks asked for, by Get or GetMany
	cborGets atomic.Int64 // of which dag-cbor (Version or PathInfo blocks)
	adds     atomic.Int64 // nodes written, by Add or AddMany
}

func newCountingDAG() *countingDAG { return &countingDAG{DAGService: mdtest.Mock()} }

func (d *countingDAG) countGet(c cid.Cid) {
	d.gets.Add(1)
	if c.Type() == cid.DagCBOR {
		d.cborGets.Add(1)
	}
}

func (d *countingDAG) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	d.countGet(c)
	return d.DAGService.Get(ctx, c)
}

func (d *countingDAG) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	for _, c := range cs {
		d.countGet(c)
	}
	return d.DAGService.GetMany(ctx, cs)
}

func (d *countingDAG) Add(ctx context.Context, nd ipld.Node) error {
	d.adds.Add(1)
	return d.DAGService.Add(ctx, nd)
}

func (d *countingDAG) AddMany(ctx context.Context, nds []ipld.Node) error {
	d.adds.Add(int64(len(nds)))
	return d.DAGService.AddMany(ctx, nds)
}

func (d *countingDAG) reset() {
	d.gets.Store(0)
	d.cborGets.Store(0)
	d.adds.Store(0)
}

// infoCID stands for the PathInfo block of entry i.
func infoCID(i int) cid.Cid {
	c, err := cidBuilder.Sum(fmt.Appendf(nil, "pathinfo %d", i))
	if err != nil {
		panic(err)
	}
	return c
}

// syntheticKeys gives n keys the way a manifest holds them: three per store
// path (store-path hash, NarHash, BLAKE3), each with its path's PathInfo CID.
func syntheticKeys(n int, salt string) ([]string, []cid.Cid) {
	keys := make([]string, 0, n+2)
	vals := make([]cid.Cid, 0, n+2)
	for i := 0; len(keys) < n; i++ {
		sum := func(what string) []byte {
			d, _ := mh.Sum(fmt.Appendf(nil, "%s %s %d", salt, what, i), mh.SHA2_256, -1)
			return d[2:]
		}
		p := &PathInfo{
			StorePath: "/nix/store/" + nixbase32.EncodeToString(sum("path")[:20]) + "-x",
			NarHash:   sum("nar"),
			Blake3:    sum("blake3"),
		}
		c := infoCID(i)
		for _, k := range KeysFor(p) {
			keys = append(keys, k)
			vals = append(vals, c)
		}
	}
	return keys[:n], vals[:n]
}

func toMap(keys []string, vals []cid.Cid) map[string]cid.Cid {
	m := make(map[string]cid.Cid, len(keys))
	for i, k := range keys {
		m[k] = vals[i]
	}
	return m
}

func countStorePaths(model map[string]cid.Cid) int64 {
	var n int64
	for k := range model {
		if isStorePathKey(k) {
			n++
		}
	}
	return n
}

func walkAll(t testing.TB, m *Manifest) map[string]cid.Cid {
	t.Helper()
	got := map[string]cid.Cid{}
	err := m.Walk(context.Background(), func(k string, c cid.Cid) error {
		if _, dup := got[k]; dup {
			return fmt.Errorf("key %s walked twice", k)
		}
		got[k] = c
		return nil
	})
	if err != nil {
		t.Fatalf("walk: %v", err)
	}
	return got
}

// checkContents compares m with the model through Get, Walk and Count.
func checkContents(t *testing.T, m *Manifest, model map[string]cid.Cid) {
	t.Helper()
	ctx := context.Background()
	for k, want := range model {
		got, err := m.Get(ctx, k)
		if err != nil || !got.Equals(want) {
			t.Fatalf("Get(%s) = %v, %v; want %v", k, got, err, want)
		}
	}
	if _, err := m.Get(ctx, "p/absent"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(absent) = %v, want ErrNotFound", err)
	}
	if got := walkAll(t, m); !maps.Equal(got, model) {
		t.Fatalf("Walk gave %d entries, want %d (%v vs %v)", len(got), len(model), got, model)
	}
	if got, want := m.Info().Count, countStorePaths(model); got != want {
		t.Fatalf("count = %d, want %d", got, want)
	}
}

func TestManifestKeys(t *testing.T) {
	p := sample(t)
	keys := KeysFor(p)
	want := []string{
		"p/45ciyxrcskr7rjzs00znrhw8xn3ixp1k",
		"sha256/" + strings.TrimPrefix(p.NarHashString(), "sha256:"),
		"blake3/" + strings.Repeat("02", 32),
	}
	if !slices.Equal(keys, want) {
		t.Fatalf("KeysFor = %q, want %q", keys, want)
	}
	if len(keys[1]) != len("sha256/")+52 {
		t.Fatalf("NarHash key %q: want 52 nix32 characters", keys[1])
	}
	for _, k := range keys {
		if len(k) > maxKeyLen {
			t.Fatalf("key %q is over the limit", k)
		}
	}
}

func TestManifestUpdateRoundTrip(t *testing.T) {
	ctx := context.Background()
	keys, vals := syntheticKeys(12, "roundtrip")
	// keys[0], [3], [6], [9] are store paths.
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))

	steps := []struct {
		name       string
		puts       map[string]cid.Cid
		deletes    []string
		newVersion bool
	}{
		{name: "nothing on empty", newVersion: false},
		{name: "delete absent on empty", deletes: []string{keys[0]}, newVersion: false},
		{name: "first puts", puts: toMap(keys[:8], vals[:8]), newVersion: true},
		{name: "re-put same values", puts: toMap(keys[:4], vals[:4]), newVersion: false},
		{name: "re-put store path with new value", puts: map[string]cid.Cid{keys[0]: infoCID(100)}, newVersion: true},
		{name: "delete absent keys", deletes: []string{keys[9], keys[10], "p/nothere"}, newVersion: false},
		{name: "delete present and absent", deletes: []string{keys[3], keys[4], keys[9], keys[3]}, newVersion: true},
		{name: "puts and deletes", puts: toMap(keys[8:12], vals[8:12]), deletes: []string{keys[0], keys[1]}, newVersion: true},
		{name: "put back a deleted path", puts: map[string]cid.Cid{keys[3]: vals[3]}, newVersion: true},
		{name: "delete everything", deletes: keys, newVersion: true},
		{name: "delete on empty entries", deletes: keys[:2], newVersion: false},
	}

	dserv := mdtest.Mock()
	m := EmptyManifest(dserv)
	if m.Version().Defined() || m.Info().Seq != 0 || m.Info().Count != 0 || m.Info().Time != "" || m.Info().Prev.Defined() {
		t.Fatalf("empty manifest: version %v, info %+v", m.Version(), m.Info())
	}
	emptyEntries := m.Info().Entries
	model := map[string]cid.Cid{}
	var versions []cid.Cid
	for i, st := range steps {
		now := t0.Add(time.Duration(i) * time.Hour)
		next, err := m.Update(ctx, st.puts, st.deletes, now)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		for _, k := range st.deletes {
			delete(model, k)
		}
		maps.Copy(model, st.puts)
		if got := next != m; got != st.newVersion {
			t.Fatalf("%s: new version = %v, want %v", st.name, got, st.newVersion)
		}
		if st.newVersion {
			info := next.Info()
			if info.Seq != m.Info().Seq+1 || !info.Prev.Equals(m.Version()) {
				t.Fatalf("%s: seq %d prev %v; want %d, %v", st.name, info.Seq, info.Prev, m.Info().Seq+1, m.Version())
			}
			if want := now.UTC().Format(time.RFC3339); info.Time != want {
				t.Fatalf("%s: time %v, want %v in UTC", st.name, info.Time, now)
			}
			versions = append(versions, next.Version())
			// What was written reads back the same.
			loaded, err := LoadManifest(ctx, dserv, next.Version())
			if err != nil {
				t.Fatalf("%s: load: %v", st.name, err)
			}
			if li := loaded.Info(); li != info {
				t.Fatalf("%s: loaded info %+v, want %+v", st.name, li, info)
			}
			checkContents(t, loaded, model)
		}
		m = next
		checkContents(t, m, model)
	}
	if m.Info().Entries != emptyEntries {
		t.Fatalf("after deleting everything the root is %v, want the empty shard %v", m.Info().Entries, emptyEntries)
	}

	// History: newest first, following prev.
	slices.Reverse(versions)
	for _, tc := range []struct {
		limit, want int
	}{{0, len(versions)}, {-1, len(versions)}, {1, 1}, {3, 3}, {100, len(versions)}} {
		h, err := History(ctx, dserv, m.Version(), tc.limit)
		if err != nil {
			t.Fatalf("History(limit %d): %v", tc.limit, err)
		}
		if len(h) != tc.want {
			t.Fatalf("History(limit %d): %d versions, want %d", tc.limit, len(h), tc.want)
		}
		for i, r := range h {
			if r.CID != versions[i] || r.Seq != int64(len(versions)-i) {
				t.Fatalf("History(limit %d)[%d] = %v seq %d, want %v seq %d", tc.limit, i, r.CID, r.Seq, versions[i], len(versions)-i)
			}
		}
		if tc.want == len(versions) && h[len(h)-1].Prev.Defined() {
			t.Fatalf("first version has prev %v", h[len(h)-1].Prev)
		}
	}
	if h, err := History(ctx, dserv, cid.Undef, 0); err != nil || len(h) != 0 {
		t.Fatalf("History(undefined) = %v, %v", h, err)
	}
}

func TestManifestRefuses(t *testing.T) {
	ctx := context.Background()
	m := EmptyManifest(mdtest.Mock())
	long := strings.Repeat("k", maxKeyLen+1)
	ok := infoCID(1)
	for _, tc := range []struct {
		name    string
		puts    map[string]cid.Cid
		deletes []string
	}{
		{"empty key", map[string]cid.Cid{"": ok}, nil},
		{"long key", map[string]cid.Cid{long: ok}, nil},
		{"undefined CID", map[string]cid.Cid{"p/x": cid.Undef}, nil},
		{"long delete", nil, []string{long}},
		{"put and delete", map[string]cid.Cid{"p/x": ok}, []string{"p/x"}},
	} {
		if _, err := m.Update(ctx, tc.puts, tc.deletes, time.Now()); err == nil {
			t.Errorf("%s: Update succeeded", tc.name)
		}
	}
	for _, k := range []string{"", long} {
		if _, err := m.Get(ctx, k); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%d-byte key) = %v, want a refusal", len(k), err)
		}
	}
	if _, err := m.Get(ctx, strings.Repeat("k", maxKeyLen)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(256-byte key) = %v, want ErrNotFound", err)
	}
	// Walk stops at fn's error and returns it.
	m2, err := m.Update(ctx, map[string]cid.Cid{"p/a": ok, "p/b": ok}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	calls := 0
	if err := m2.Walk(ctx, func(string, cid.Cid) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("Walk = %v after %d calls, want stop after 1", err, calls)
	}
}

// boxoRoot builds the HAMT with boxo alone, in the given order: the manifest
// must be exactly boxo's HAMT, not merely self-consistent.
func boxoRoot(t *testing.T, keys []string, vals []cid.Cid) cid.Cid {
	t.Helper()
	sh, err := hamt.NewShard(mdtest.Mock(), 256)
	if err != nil {
		t.Fatal(err)
	}
	sh.SetCidBuilder(cid.V1Builder{Codec: cid.DagProtobuf, MhType: mh.SHA2_256})
	for i, k := range keys {
		if err := sh.SetLink(context.Background(), k, &ipld.Link{Cid: vals[i]}); err != nil {
			t.Fatal(err)
		}
	}
	nd, err := sh.Node()
	if err != nil {
		t.Fatal(err)
	}
	return nd.Cid()
}

// applyBatches applies ops in random-sized batches, one Update each.
func applyBatches(t *testing.T, rng *rand.Rand, m *Manifest, keys []string, vals []cid.Cid, del bool) *Manifest {
	t.Helper()
	for len(keys) > 0 {
		n := 1 + rng.Intn(len(keys))
		var err error
		if del {
			m, err = m.Update(context.Background(), nil, keys[:n], time.Unix(0, 0))
		} else {
			m, err = m.Update(context.Background(), toMap(keys[:n], vals[:n]), nil, time.Unix(0, 0))
		}
		if err != nil {
			t.Fatal(err)
		}
		keys = keys[n:]
		if !del {
			vals = vals[n:]
		}
	}
	return m
}

func diffModel(a, b map[string]cid.Cid) []Change {
	var out []Change
	for k, ca := range a {
		if cb, ok := b[k]; !ok {
			out = append(out, Change{Key: k, Old: ca})
		} else if ca != cb {
			out = append(out, Change{Key: k, Old: ca, New: cb})
		}
	}
	for k, cb := range b {
		if _, ok := a[k]; !ok {
			out = append(out, Change{Key: k, New: cb})
		}
	}
	slices.SortFunc(out, func(x, y Change) int { return strings.Compare(x.Key, y.Key) })
	return out
}

func checkDiff(t *testing.T, what string, a, b *Manifest, ma, mb map[string]cid.Cid) {
	t.Helper()
	got, err := DiffManifests(context.Background(), a, b)
	if err != nil {
		t.Fatalf("%s: diff: %v", what, err)
	}
	if want := diffModel(ma, mb); !slices.Equal(got, want) {
		t.Fatalf("%s: diff gave %d changes, want %d:\n%v\n%v", what, len(got), len(want), got, want)
	}
}

// TestManifestCanonical: the same entries give the same root whatever the
// order of insertion, the batching, and keys added and removed on the way;
// and that root is the one boxo builds alone. Diffs between the states
// match the model.
func TestManifestCanonical(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewSource(1))
	for iter := range 60 {
		// Mostly small manifests, some big enough for three shard levels.
		n := rng.Intn(300)
		if iter%10 == 9 {
			n = 2000 + rng.Intn(2000)
		}
		keys, vals := syntheticKeys(n, fmt.Sprint("canon", iter))
		model := toMap(keys, vals)
		dserv := mdtest.Mock()
		empty := EmptyManifest(dserv)

		// One batch.
		ref, err := empty.Update(ctx, model, nil, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		want := ref.Info().Entries
		if got := boxoRoot(t, keys, vals); got != want {
			t.Fatalf("iter %d: manifest root %v, boxo alone %v", iter, want, got)
		}
		if n == 0 && want != empty.Info().Entries {
			t.Fatalf("iter %d: empty update root %v, want %v", iter, want, empty.Info().Entries)
		}

		// Shuffled, in batches.
		perm := rng.Perm(n)
		pk, pv := make([]string, n), make([]cid.Cid, n)
		for i, j := range perm {
			pk[i], pv[i] = keys[j], vals[j]
		}
		shuffled := applyBatches(t, rng, empty, pk, pv, false)

		// With extra keys inserted on the way, then deleted in another order.
		extraN := 1 + rng.Intn(200)
		ek, ev := syntheticKeys(extraN, fmt.Sprint("extra", iter))
		mixedK := append(slices.Clone(pk), ek...)
		mixedV := append(slices.Clone(pv), ev...)
		rng.Shuffle(len(mixedK), func(i, j int) {
			mixedK[i], mixedK[j] = mixedK[j], mixedK[i]
			mixedV[i], mixedV[j] = mixedV[j], mixedV[i]
		})
		withExtra := applyBatches(t, rng, empty, mixedK, mixedV, false)
		rng.Shuffle(len(ek), func(i, j int) { ek[i], ek[j] = ek[j], ek[i] })
		pruned := applyBatches(t, rng, withExtra, ek, nil, true)

		// Values overwritten, then put back.
		other := make([]cid.Cid, n)
		for i := range other {
			other[i] = infoCID(1_000_000 + i)
		}
		overwritten := applyBatches(t, rng, ref, pk, other, false)
		restored := applyBatches(t, rng, overwritten, pk, pv, false)

		for name, m := range map[string]*Manifest{"shuffled": shuffled, "pruned": pruned, "restored": restored} {
			if got := m.Info().Entries; got != want {
				t.Fatalf("iter %d (%d entries): %s root %v, want %v", iter, n, name, got, want)
			}
			if m.Info().Count != ref.Info().Count {
				t.Fatalf("iter %d: %s count %d, want %d", iter, name, m.Info().Count, ref.Info().Count)
			}
		}
		if iter%10 == 0 || iter%10 == 9 {
			checkContents(t, pruned, model)
		}

		// Deletes, re-pointed values and new keys in one update.
		mixedModel := maps.Clone(model)
		mixedPuts := map[string]cid.Cid{}
		var mixedDeletes []string
		for i, k := range pk {
			switch i % 3 {
			case 0:
				mixedDeletes = append(mixedDeletes, k)
				delete(mixedModel, k)
			case 1:
				mixedPuts[k] = other[i]
				mixedModel[k] = other[i]
			}
		}
		nk, nv := syntheticKeys(rng.Intn(100), fmt.Sprint("new", iter))
		maps.Copy(mixedPuts, toMap(nk, nv))
		maps.Copy(mixedModel, toMap(nk, nv))
		mixed, err := ref.Update(ctx, mixedPuts, mixedDeletes, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := mixed.Info().Count, countStorePaths(mixedModel); got != want {
			t.Fatalf("iter %d: mixed count %d, want %d", iter, got, want)
		}
		checkDiff(t, "ref->mixed", ref, mixed, model, mixedModel)
		checkDiff(t, "mixed->ref", mixed, ref, mixedModel, model)

		// Diffs between the states, both ways, and from and to empty.
		withExtraModel := toMap(mixedK, mixedV)
		overModel := toMap(pk, other)
		checkDiff(t, "ref->withExtra", ref, withExtra, model, withExtraModel)
		checkDiff(t, "withExtra->ref", withExtra, ref, withExtraModel, model)
		checkDiff(t, "ref->overwritten", ref, overwritten, model, overModel)
		checkDiff(t, "empty->ref", empty, ref, nil, model)
		checkDiff(t, "ref->empty", ref, empty, model, nil)
		checkDiff(t, "ref->restored", ref, restored, model, model)
	}
}

// TestManifestIncremental: on a 100k-entry manifest, a 10-entry update reads
// and writes only the shards on those keys' paths, and the diff of the two
// versions reads only the changed shards.
func TestManifestIncremental(t *testing.T) {
	ctx := context.Background()
	const n = 100_000
	keys, vals := syntheticKeys(n, "incremental")
	dserv := newCountingDAG()
	start := time.Now()
	base, err := EmptyManifest(dserv).Update(ctx, toMap(keys, vals), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %d entries in %v, %d blocks", n, time.Since(start), dserv.adds.Load())
	if base.Info().Count != countStorePaths(toMap(keys, vals)) {
		t.Fatalf("count %d", base.Info().Count)
	}
	base, err = LoadManifest(ctx, dserv, base.Version())
	if err != nil {
		t.Fatal(err)
	}

	// Lookups: at most the shards below the root.
	dserv.reset()
	for _, k := range keys[:1000] {
		if _, err := base.Get(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	perLookup := float64(dserv.gets.Load()) / 1000
	t.Logf("%.2f blocks read per Get below the root", perLookup)
	if perLookup > 3 {
		t.Fatalf("%.2f blocks per lookup at %d entries", perLookup, n)
	}

	// 10 changes: 4 added, 4 re-pointed (2 store paths), 2 deleted.
	added, addedVals := syntheticKeys(4, "incremental-new")
	puts := toMap(added, addedVals)
	for i, k := range []string{keys[0], keys[1], keys[3], keys[5]} {
		puts[k] = infoCID(5_000_000 + i)
	}
	deletes := []string{keys[6], keys[7]}
	wantChanges := diffModel(toMap(keys[:8], vals[:8]), func() map[string]cid.Cid {
		m := toMap(keys[:8], vals[:8])
		maps.Copy(m, puts)
		delete(m, keys[6])
		delete(m, keys[7])
		return m
	}())

	dserv.reset()
	next, err := base.Update(ctx, puts, deletes, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	written, read := dserv.adds.Load(), dserv.gets.Load()
	t.Logf("10-entry update: %d nodes written, %d read", written, read)
	if written > 10*4+2 {
		t.Fatalf("10-entry update wrote %d nodes, want at most %d", written, 10*4+2)
	}
	if read > 10*4 {
		t.Fatalf("10-entry update read %d blocks, want at most %d", read, 10*4)
	}
	if got, want := next.Info().Count, base.Info().Count+1; got != want { // two new paths (added[0], added[3]), one deleted (keys[6])
		t.Fatalf("count %d, want %d", got, want)
	}

	dserv.reset()
	changes, err := DiffManifests(ctx, base, next)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("diff: %d blocks read", dserv.gets.Load())
	if !slices.Equal(changes, wantChanges) || len(changes) != 10 {
		t.Fatalf("diff = %v, want %v", changes, wantChanges)
	}
	if got := dserv.gets.Load(); got > 2*10*3 {
		t.Fatalf("diff read %d blocks, want at most %d", got, 2*10*3)
	}
	if got := dserv.cborGets.Load(); got != 0 {
		t.Fatalf("HAMT operations read %d dag-cbor blocks", got)
	}
}

func TestManifestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	keys, vals := syntheticKeys(3000, "concurrent")
	m, err := EmptyManifest(mdtest.Mock()).Update(ctx, toMap(keys, vals), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Lookups and updates share the manifest's root; none may disturb another.
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for g := range 4 {
		wg.Go(func() {
			nk, nv := syntheticKeys(50, fmt.Sprint("concurrent-update", g))
			dels := keys[g*10 : g*10+10]
			next, err := m.Update(ctx, toMap(nk, nv), dels, time.Now())
			want := m.Info().Count + countStorePaths(toMap(nk, nv)) - countStorePaths(toMap(dels, vals[g*10:g*10+10]))
			if err == nil && next.Info().Count != want {
				err = fmt.Errorf("update %d: count %d, want %d", g, next.Info().Count, want)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < len(keys); i += 8 {
				c, err := m.Get(ctx, keys[i])
				if err != nil || c != vals[i] {
					errs <- fmt.Errorf("Get(%s) = %v, %v", keys[i], c, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestKeyHashPlacement(t *testing.T) {
	// checkPlacement must agree with boxo's hash: boxo found these keys, and
	// Walk (which checks placement) lists them all.
	keys, vals := syntheticKeys(500, "placement")
	m, err := EmptyManifest(mdtest.Mock()).Update(context.Background(), toMap(keys, vals), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := walkAll(t, m); len(got) != 500 {
		t.Fatalf("walked %d", len(got))
	}
}

func TestVersionNode(t *testing.T) {
	entries, _ := shardCIDBuilder.Sum([]byte("root"))
	prev := infoCID(7)
	nd, err := versionBlock(Version{Entries: entries, Prev: prev, Seq: 2, Count: 1, Time: "1970-01-01T00:00:01Z"})
	if err != nil {
		t.Fatal(err)
	}
	links := nd.Links()
	if len(links) != 2 || links[0].Name != "entries" || links[0].Cid != entries || links[1].Name != "prev" || links[1].Cid != prev {
		t.Fatalf("links %v", links)
	}
	if l, rest, err := nd.ResolveLink([]string{"prev", "x"}); err != nil || l.Cid != prev || len(rest) != 1 {
		t.Fatalf("ResolveLink(prev/x) = %v, %v, %v", l, rest, err)
	}
	if _, _, err := nd.Resolve([]string{"nope"}); err == nil {
		t.Fatal("Resolve(nope) succeeded")
	}
	if size, _ := nd.Size(); size != uint64(len(nd.RawData())) || nd.Copy().Cid() != nd.Cid() {
		t.Fatalf("size %d of %d bytes", size, len(nd.RawData()))
	}
	v, err := decodeVersion(nd.RawData())
	if want := (Version{Entries: entries, Prev: prev, Seq: 2, Count: 1, Time: "1970-01-01T00:00:01Z"}); err != nil || v != want {
		t.Fatalf("decoded %+v, %v", v, err)
	}
	if _, err := versionBlock(Version{Entries: entries, Seq: 0, Time: "1970-01-01T00:00:01Z"}); err == nil {
		t.Fatal("versionBlock accepted seq 0")
	}
}
