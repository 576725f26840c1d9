package builder

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nixipfs/nixipfs/manifests"
)

// Version is the protocol version every message carries.
const Version = 1

// MaxMessage bounds a job message. Pubsub silently drops anything over
// 1 MiB; ours are far smaller, and anything larger is refused unread.
const MaxMessage = 64 << 10

// Messages older than maxAge or more than maxSkew in the future are refused:
// every message is re-sent while it matters, so a stale one is a replay.
const (
	maxAge  = 2 * time.Minute
	maxSkew = time.Minute
)

// Topic is the pubsub topic carrying the jobs of a network (hashed: network
// names may be long or contain anything).
func Topic(network string) string {
	h := sha256.Sum256([]byte(network))
	return "/nixipfs/jobs/1/" + hex.EncodeToString(h[:16])
}

// Kind is what a message says.
type Kind string

// The message kinds, in the order a job sees them.
const (
	KindOffer     Kind = "offer"     // requester → all: a runnable job
	KindClaim     Kind = "claim"     // builder → requester: I can build it
	KindAssign    Kind = "assign"    // requester → one builder: the lease
	KindHeartbeat Kind = "heartbeat" // lease holder → requester: still building
	KindRelease   Kind = "release"   // lease holder → requester: giving it back
	KindResult    Kind = "result"    // lease holder → requester: built, failed or error
	KindAck       Kind = "ack"       // requester → builder: result taken (or refused)
)

// Result statuses. A failed build is final; an error (inputs unavailable,
// a crash) is retried elsewhere.
const (
	StatusBuilt  = "built"
	StatusFailed = "failed"
	StatusError  = "error"
)

// Message is one job message. Every field is covered by the signature.
type Message struct {
	V         int    `json:"v"`
	Kind      Kind   `json:"kind"`
	Network   string `json:"network"`
	From      string `json:"from"`      // sender's peer id; pubsub has verified it
	Seq       int64  `json:"seq"`       // Unix ns at sending, increasing per sender
	Job       string `json:"job"`       // the .drv store path
	Requester string `json:"requester"` // peer id of the job's requester
	To        string `json:"to,omitempty"`
	Lease     int64  `json:"lease,omitempty"` // lease number, from assign on

	// offer
	System   string   `json:"system,omitempty"`
	Features []string `json:"features,omitempty"` // required system features
	Inputs   []string `json:"inputs,omitempty"`   // the input store paths (for bids)
	Manifest string   `json:"manifest,omitempty"` // requester's manifest IPNS name

	// claim
	Systems  []string `json:"systems,omitempty"`
	Supports []string `json:"supports,omitempty"` // the builder's features
	Have     int      `json:"have,omitempty"`     // how many Inputs it holds
	Running  int      `json:"running,omitempty"`  // jobs it is building now

	// assign
	LeaseMillis     int64 `json:"leaseMs,omitempty"`
	HeartbeatMillis int64 `json:"heartbeatMs,omitempty"`

	// heartbeat: the end of the build log so far, and where in the log it
	// starts (heartbeats may be lost; the offset shows the gap)
	LogTail   string `json:"logTail,omitempty"`
	LogOffset int64  `json:"logOffset,omitempty"`

	// result
	Status  string   `json:"status,omitempty"`
	Outputs []Output `json:"outputs,omitempty"`
	Log     string   `json:"log,omitempty"` // CID of the build log (a UnixFS file)
	Error   string   `json:"error,omitempty"`

	// ack
	OK     bool   `json:"ok,omitempty"`
	Reason string `json:"reason,omitempty"`

	// Sig is the sender's Nix signature (name:base64) of Fingerprint.
	Sig string `json:"sig,omitempty"`
}

// Output is a built output as a result reports it.
type Output struct {
	Path     string `json:"path"`
	PathInfo string `json:"pathInfo"` // CID of its PathInfo record
}

// Fingerprint is what a message's signature signs: the message without its
// signature, as JSON (field order is fixed by the struct).
func (m Message) Fingerprint() string {
	m.Sig = ""
	b, _ := json.Marshal(m) // strings, ints, slices: cannot fail
	return "nixipfs-job-1;" + string(b)
}

// Sign sets m.Sig with sk. The message is first put in the form a receiver
// decodes (invalid UTF-8 replaced), so that both sides fingerprint the same
// bytes.
func (m *Message) Sign(sk signature.SecretKey) error {
	var norm Message
	if err := json.Unmarshal(m.Encode(), &norm); err != nil {
		return fmt.Errorf("sign %s message: %w", m.Kind, err)
	}
	*m = norm
	sig, err := sk.Sign(nil, m.Fingerprint())
	if err != nil {
		return fmt.Errorf("sign %s message: %w", m.Kind, err)
	}
	m.Sig = sig.String()
	return nil
}

// SignedBy returns the key among keys whose signature m carries, or an
// error saying why none does.
func (m Message) SignedBy(keys []signature.PublicKey) (signature.PublicKey, error) {
	if m.Sig == "" {
		return signature.PublicKey{}, errors.New("unsigned")
	}
	sig, err := signature.ParseSignature(m.Sig)
	if err != nil {
		return signature.PublicKey{}, fmt.Errorf("signature: %w", err)
	}
	for _, k := range keys {
		if k.Name == sig.Name {
			if k.Verify(m.Fingerprint(), sig) {
				return k, nil
			}
			return signature.PublicKey{}, fmt.Errorf("bad signature by key %q", sig.Name)
		}
	}
	return signature.PublicKey{}, fmt.Errorf("signed by untrusted key %q", sig.Name)
}

// Encode marshals m.
func (m Message) Encode() []byte {
	b, _ := json.Marshal(m)
	return b
}

// Decode parses a message strictly: size, JSON (unknown fields refused),
// version, kind, and the shape of its fields. It does not check who sent it
// or when; a Checker does.
func Decode(data []byte) (Message, error) {
	var m Message
	if len(data) > MaxMessage {
		return m, fmt.Errorf("%d bytes, over the %d-byte limit", len(data), MaxMessage)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("malformed: %w", err)
	}
	if dec.More() {
		return m, errors.New("malformed: data after the message")
	}
	if m.V != Version {
		return m, fmt.Errorf("version %d not understood", m.V)
	}
	switch m.Kind {
	case KindOffer, KindClaim, KindAssign, KindHeartbeat, KindRelease, KindResult, KindAck:
	default:
		return m, fmt.Errorf("unknown kind %q", m.Kind)
	}
	if !validDrv(m.Job) {
		return m, fmt.Errorf("job %q is not a .drv store path", m.Job)
	}
	for _, o := range m.Outputs {
		if _, ok := storePathHash(o.Path); !ok {
			return m, fmt.Errorf("output %q is not a store path", o.Path)
		}
	}
	for _, p := range m.Inputs {
		if _, ok := storePathHash(p); !ok {
			return m, fmt.Errorf("input %q is not a store path", p)
		}
	}
	if m.Kind == KindResult {
		switch m.Status {
		case StatusBuilt, StatusFailed, StatusError:
		default:
			return m, fmt.Errorf("unknown result status %q", m.Status)
		}
	}
	if m.LogOffset < 0 {
		return m, errors.New("negative log offset")
	}
	if len(m.LogTail) > 8<<10 {
		return m, errors.New("log tail over 8 KiB")
	}
	return m, nil
}

// storePathHash returns the hash part of a /nix/store path.
func storePathHash(p string) (string, bool) {
	base, ok := strings.CutPrefix(p, "/nix/store/")
	if !ok || strings.Contains(base, "/") {
		return "", false
	}
	hash, name, ok := strings.Cut(base, "-")
	if !ok || name == "" || !manifests.ValidHashPart(hash) {
		return "", false
	}
	return hash, true
}

func validDrv(p string) bool {
	_, ok := storePathHash(p)
	return ok && strings.HasSuffix(p, ".drv")
}

// Checker refuses messages that are stale, replayed, forged or for another
// network. It remembers each sender's last sequence number.
type Checker struct {
	Network string
	mu      sync.Mutex
	last    map[string]int64
}

// Check decodes data, sent by the peer from (as pubsub verified it), and
// checks it. A message that passes is recorded as the sender's latest.
func (c *Checker) Check(from string, data []byte, now time.Time) (Message, error) {
	m, err := Decode(data)
	if err != nil {
		return m, err
	}
	if m.Network != c.Network {
		return m, fmt.Errorf("for network %q", m.Network)
	}
	if m.From != from {
		return m, fmt.Errorf("forged: says it is from %s but was sent by %s", m.From, from)
	}
	sent := time.Unix(0, m.Seq)
	if sent.Before(now.Add(-maxAge)) || sent.After(now.Add(maxSkew)) {
		return m, fmt.Errorf("stale: sent at %s", sent.UTC().Format(time.RFC3339Nano))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last = map[string]int64{}
	}
	if m.Seq <= c.last[from] {
		return m, fmt.Errorf("replayed: seq %d, already had %d", m.Seq, c.last[from])
	}
	c.last[from] = m.Seq
	return m, nil
}

// compatible reports whether a builder with systems and features may build
// a job for system that requires features, given the builder's mandatory
// features (a job must ask for every one of those), as Nix's remote
// builders decide.
func compatible(system string, required, systems, features, mandatory []string) bool {
	if !slices.Contains(systems, system) {
		return false
	}
	for _, f := range required {
		if !slices.Contains(features, f) {
			return false
		}
	}
	for _, f := range mandatory {
		if !slices.Contains(required, f) {
			return false
		}
	}
	return true
}
