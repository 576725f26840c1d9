package builder

import (
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

const (
	testDrv = "/nix/store/0c4lyy5ds26hl3ic84crvck6al33xh3a-a.drv"
	testOut = "/nix/store/hvnrv2r8l0m7fxyf3ikvjzb89q9asn92-ok"
)

func testKey(t testing.TB, name string) (signature.SecretKey, signature.PublicKey) {
	t.Helper()
	sk, pk, err := signature.GenerateKeypair(name, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return sk, pk
}

func signed(t testing.TB, m Message, sk signature.SecretKey) []byte {
	t.Helper()
	if err := m.Sign(sk); err != nil {
		t.Fatal(err)
	}
	return m.Encode()
}

func TestCheck(t *testing.T) {
	sk, _ := testKey(t, "b-1")
	now := time.Now()
	base := Message{V: Version, Kind: KindResult, Network: "farm", From: "peerA", Seq: now.UnixNano(), Job: testDrv,
		Requester: "peerR", Lease: 1, Status: StatusBuilt, Outputs: []Output{{Path: testOut, PathInfo: "bafy"}}}
	with := func(f func(*Message)) []byte {
		m := base
		f(&m)
		return signed(t, m, sk)
	}
	tests := []struct {
		name string
		from string
		data []byte
		want string // "" = accepted
	}{
		{"good", "peerA", with(func(*Message) {}), ""},
		{"forged sender", "peerB", with(func(*Message) {}), "forged"},
		{"other network", "peerA", with(func(m *Message) { m.Network = "other" }), "for network"},
		{"old version", "peerA", with(func(m *Message) { m.V = 2 }), "version 2"},
		{"unknown kind", "peerA", with(func(m *Message) { m.Kind = "steal" }), "unknown kind"},
		{"stale", "peerA", with(func(m *Message) { m.Seq = now.Add(-time.Hour).UnixNano() }), "stale"},
		{"future", "peerA", with(func(m *Message) { m.Seq = now.Add(time.Hour).UnixNano() }), "stale"},
		{"job not a drv", "peerA", with(func(m *Message) { m.Job = "/nix/store/0c4lyy5ds26hl3ic84crvck6al33xh3a-a" }), "not a .drv"},
		{"job traversal", "peerA", with(func(m *Message) { m.Job = "/nix/store/../etc/x.drv" }), "not a .drv"},
		{"bad output", "peerA", with(func(m *Message) { m.Outputs = []Output{{Path: "/etc/passwd"}} }), "not a store path"},
		{"bad status", "peerA", with(func(m *Message) { m.Status = "maybe" }), "unknown result status"},
		{"oversized", "peerA", with(func(m *Message) { m.Error = strings.Repeat("x", MaxMessage) }), "over the"},
		{"unknown field", "peerA", []byte(`{"v":1,"kind":"claim","network":"farm","from":"peerA","seq":1,"job":"` + testDrv + `","requester":"r","evil":1}`), "unknown field"},
		{"not JSON", "peerA", []byte("\x00\x01"), "malformed"},
		{"trailing data", "peerA", append(with(func(*Message) {}), []byte(`{}`)...), "data after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Checker{Network: "farm"}
			_, err := c.Check(tt.from, tt.data, now)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestCheckReplay(t *testing.T) {
	sk, _ := testKey(t, "b-1")
	now := time.Now()
	c := &Checker{Network: "farm"}
	m := Message{V: Version, Kind: KindHeartbeat, Network: "farm", From: "peerA", Seq: now.UnixNano(), Job: testDrv, Requester: "r", Lease: 1}
	data := signed(t, m, sk)
	if _, err := c.Check("peerA", data, now); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check("peerA", data, now); err == nil || !strings.Contains(err.Error(), "replayed") {
		t.Fatalf("the same message twice: %v", err)
	}
	m.Seq--
	if _, err := c.Check("peerA", signed(t, m, sk), now); err == nil || !strings.Contains(err.Error(), "replayed") {
		t.Fatalf("an older message: %v", err)
	}
	// Another sender's sequence is its own.
	m.From = "peerB"
	if _, err := c.Check("peerB", signed(t, m, sk), now); err != nil {
		t.Fatalf("another sender: %v", err)
	}
}

func TestSignedBy(t *testing.T) {
	sk1, pk1 := testKey(t, "b-1")
	sk2, pk2 := testKey(t, "b-2")
	skFake, _ := testKey(t, "b-1") // same name, other key
	m := Message{V: Version, Kind: KindResult, Network: "farm", From: "p", Seq: 1, Job: testDrv, Requester: "r", Status: StatusBuilt,
		Error: "bytes \xff\xfe that are not UTF-8"}
	trusted := []signature.PublicKey{pk1}

	decode := func(data []byte) Message {
		got, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if k, err := decode(signed(t, m, sk1)).SignedBy(trusted); err != nil || k.Name != "b-1" {
		t.Fatalf("trusted signature (after a round trip through JSON): %v", err)
	}
	if _, err := decode(signed(t, m, sk2)).SignedBy(trusted); err == nil || !strings.Contains(err.Error(), "untrusted key") {
		t.Fatalf("untrusted key: %v", err)
	}
	if _, err := decode(signed(t, m, skFake)).SignedBy(trusted); err == nil || !strings.Contains(err.Error(), "bad signature") {
		t.Fatalf("a key impersonating a trusted name: %v", err)
	}
	if _, err := decode(m.Encode()).SignedBy(trusted); err == nil || !strings.Contains(err.Error(), "unsigned") {
		t.Fatalf("unsigned: %v", err)
	}
	// Any change after signing breaks the signature.
	tampered := decode(signed(t, m, sk1))
	tampered.Outputs = []Output{{Path: testOut, PathInfo: "bafyother"}}
	if _, err := tampered.SignedBy([]signature.PublicKey{pk1, pk2}); err == nil {
		t.Fatal("a tampered message verified")
	}
}

func TestCompatible(t *testing.T) {
	tests := []struct {
		system                      string
		required, systems, features []string
		mandatory                   []string
		want                        bool
	}{
		{"x86_64-linux", nil, []string{"x86_64-linux"}, nil, nil, true},
		{"aarch64-linux", nil, []string{"x86_64-linux"}, nil, nil, false},
		{"x86_64-linux", []string{"kvm"}, []string{"x86_64-linux"}, []string{"kvm", "big-parallel"}, nil, true},
		{"x86_64-linux", []string{"kvm"}, []string{"x86_64-linux"}, nil, nil, false},
		// A builder with a mandatory feature takes only jobs asking for it.
		{"x86_64-linux", nil, []string{"x86_64-linux"}, []string{"benchmark"}, []string{"benchmark"}, false},
		{"x86_64-linux", []string{"benchmark"}, []string{"x86_64-linux"}, []string{"benchmark"}, []string{"benchmark"}, true},
	}
	for _, tt := range tests {
		if got := compatible(tt.system, tt.required, tt.systems, tt.features, tt.mandatory); got != tt.want {
			t.Errorf("compatible(%s, %v, %v, %v, %v) = %v", tt.system, tt.required, tt.systems, tt.features, tt.mandatory, got)
		}
	}
}

func FuzzDecode(f *testing.F) {
	sk, _ := testKey(f, "b-1")
	f.Add(signed(f, Message{V: Version, Kind: KindOffer, Network: "farm", From: "p", Seq: 1, Job: testDrv, Requester: "p",
		System: "x86_64-linux", Features: []string{"kvm"}, Inputs: []string{testOut}}, sk))
	f.Add(signed(f, Message{V: Version, Kind: KindResult, Network: "farm", From: "p", Seq: 1, Job: testDrv, Requester: "r",
		Lease: 3, Status: StatusBuilt, Outputs: []Output{{Path: testOut, PathInfo: "bafy"}}, Log: "bafk"}, sk))
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to something that decodes the same,
		// so signatures made over it verify on the other side.
		again, err := Decode(m.Encode())
		if err != nil {
			t.Fatalf("re-encoded message refused: %v", err)
		}
		if again.Fingerprint() != m.Fingerprint() {
			t.Fatalf("fingerprint changed in a round trip")
		}
	})
}

// TestInputLimitsFit checks that an offer or assignment with as many
// longest-possible input paths as they may carry stays under MaxMessage.
func TestInputLimitsFit(t *testing.T) {
	long := "/nix/store/0c4lyy5ds26hl3ic84crvck6al33xh3a-" + strings.Repeat("n", 211-44)
	inputs := make([]string, max(maxBidInputs, maxAssignInputs))
	for i := range inputs {
		inputs[i] = long
	}
	sk, _ := testKey(t, "requester-with-a-long-key-name")
	m := Message{V: Version, Kind: KindAssign, Network: strings.Repeat("n", 200), From: strings.Repeat("p", 60), Seq: time.Now().UnixNano(),
		Job: testDrv, Requester: strings.Repeat("p", 60), To: strings.Repeat("p", 60), Lease: 1 << 40,
		Manifest: strings.Repeat("k", 70), Inputs: inputs[:maxAssignInputs], LeaseMillis: 1 << 40, HeartbeatMillis: 1 << 40,
		System: "x86_64-linux", Features: []string{"kvm", "big-parallel", "benchmark"}}
	if n := len(signed(t, m, sk)); n > MaxMessage {
		t.Fatalf("assignment with %d inputs is %d bytes, over %d", maxAssignInputs, n, MaxMessage)
	}
}
