// Package upload takes Nix's binary-cache uploads (`nix copy --to
// http://HOST:PORT`) into IPFS: an HTTP PUT of each NAR, compressed as the
// store URL's ?compression= says, then a PUT of the narinfo that describes
// it.
//
// A NAR is imported as a DAG while it streams and held, unpinned, until its
// narinfo arrives; only when that narinfo checks out (the NAR's hashes and
// sizes, its references, its signatures) is the path pinned and recorded.
// A bad or abandoned upload changes nothing. Nix sends references before
// the paths that use them and each narinfo right after its NAR, so a path's
// references are already recorded when its narinfo is checked.
package upload

import (
	"bufio"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/storepath"
	"github.com/ulikunitz/xz"

	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/internal/secretfile"
	"github.com/nixipfs/nixipfs/ipldnar"
)

// Store is where uploads go: it imports a NAR as a DAG held until Record
// or Discard (publish.Publisher, through the daemon).
type Store interface {
	Import(ctx context.Context, nar io.Reader) (Pending, error)
}

// Pending is an imported NAR that is not recorded yet.
type Pending interface {
	Result() ipldnar.Result
	// Record pins the DAG and records ni (the NAR was checked against it),
	// signing it if the store signs. An error that is the uploader's fault
	// wraps ErrRejected.
	Record(ctx context.Context, ni nixstore.PathInfo) error
	Discard()
}

// ErrRejected marks Record errors that are the upload's fault (a missing
// reference, say), answered with 400 rather than 500; see Rejected.
var ErrRejected = errors.New("upload rejected")

// Rejected marks err as the upload's fault: it reads as err and matches
// ErrRejected.
func Rejected(err error) error { return rejected{err} }

type rejected struct{ error }

func (r rejected) Unwrap() error        { return r.error }
func (r rejected) Is(target error) bool { return target == ErrRejected }

// Config configures a Handler.
type Config struct {
	// Token is the credential: sent as a bearer token, or as the password
	// of HTTP basic auth (what Nix sends from its netrc-file), any user.
	Token string
	Store Store
	// Trusted, if set, are the keys an upload must carry a valid signature
	// by. Empty: any upload is taken (the store then signs it with ours).
	Trusted  []signature.PublicKey
	StoreDir string // default /nix/store
	// MaxNARSize bounds a NAR, compressed and uncompressed (default 64 GiB).
	MaxNARSize int64
	// PendingTTL is how long a NAR waits for its narinfo (default 2 min);
	// Nix sends it right after the NAR.
	PendingTTL time.Duration
	// MaxPending bounds NARs waiting for their narinfo (default 64).
	MaxPending int
	// OnRecorded, if set, is called after each path is recorded.
	OnRecorded func(storePath string, narSize uint64)
	Logger     *slog.Logger
}

// Handler answers PUT requests; give it only those.
type Handler struct {
	cfg   Config
	token [32]byte

	mu      sync.Mutex
	pending map[string]*pending // by URL, "nar/<filehash>.nar.xz"
}

type pending struct {
	p           Pending
	compression string
	fileHash    [32]byte
	fileSize    int64
	timer       *time.Timer
}

// New returns a Handler; cfg.Token and cfg.Store are required.
func New(cfg Config) (*Handler, error) {
	if cfg.Token == "" || cfg.Store == nil {
		return nil, errors.New("upload: a token and a store are required")
	}
	if cfg.StoreDir == "" {
		cfg.StoreDir = "/nix/store"
	}
	if cfg.MaxNARSize <= 0 {
		cfg.MaxNARSize = 64 << 30
	}
	if cfg.PendingTTL <= 0 {
		cfg.PendingTTL = 2 * time.Minute
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Handler{cfg: cfg, token: sha256.Sum256([]byte(cfg.Token)), pending: map[string]*pending{}}, nil
}

var (
	narURL     = regexp.MustCompile(`^nar/([0-9a-df-np-sv-z]{52})\.nar(\.(xz|zst|bz2|gz))?$`)
	narinfoURL = regexp.MustCompile(`^([0-9a-df-np-sv-z]{32})\.narinfo$`)
)

// compressions maps a NAR file's extension to the narinfo's Compression.
var compressions = map[string]string{"": "none", "xz": "xz", "zst": "zstd", "bz2": "bzip2", "gz": "gzip"}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		http.Error(w, "upload: only PUT", http.StatusMethodNotAllowed)
		return
	}
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="nixipfs uploads"`)
		http.Error(w, "upload: missing or wrong credential (send the token as a bearer token or as the password of basic auth, e.g. from Nix's netrc-file)", http.StatusUnauthorized)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/")
	switch {
	case narURL.MatchString(name):
		h.putNAR(w, r, name)
	case narinfoURL.MatchString(name):
		h.putNarinfo(w, r, name)
	default:
		// Listings (write-nar-listing), build logs and realisations are
		// not taken: answer so the client says why.
		http.Error(w, fmt.Sprintf("upload: %q is not a NAR (nar/<filehash>.nar[.xz|.zst|.bz2|.gz]) or a narinfo; this cache takes only those (turn off write-nar-listing and log uploads)", name), http.StatusForbidden)
	}
}

func (h *Handler) authorized(r *http.Request) bool {
	var got string
	if a := r.Header.Get("Authorization"); a != "" {
		if t, ok := strings.CutPrefix(a, "Bearer "); ok {
			got = t
		} else if _, pw, ok := r.BasicAuth(); ok {
			got = pw
		}
	}
	// Hashes of equal length: the comparison takes the same time whatever
	// the token's length or how much of it matches.
	sum := sha256.Sum256([]byte(got))
	return got != "" && subtle.ConstantTimeCompare(sum[:], h.token[:]) == 1
}

// badRequest answers a rejected upload; the text reaches the user in Nix's
// error message.
func (h *Handler) badRequest(w http.ResponseWriter, what string, err error) {
	h.cfg.Logger.Warn("upload rejected", "file", what, "err", err)
	http.Error(w, fmt.Sprintf("upload %s: %v", what, err), http.StatusBadRequest)
}

// countingHash hashes and counts what is read through it.
type countingHash struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (c *countingHash) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.h.Write(b[:n])
	c.n += int64(n)
	return n, err
}

func (h *Handler) putNAR(w http.ResponseWriter, r *http.Request, name string) {
	m := narURL.FindStringSubmatch(name)
	wantHash, err := nixbase32.DecodeString(m[1])
	if err != nil || len(wantHash) != sha256.Size {
		h.badRequest(w, name, fmt.Errorf("file hash %q is not a nixbase32 SHA-256", m[1]))
		return
	}
	h.mu.Lock()
	full := len(h.pending) >= h.cfg.MaxPending
	h.mu.Unlock()
	if full {
		http.Error(w, fmt.Sprintf("upload %s: %d NARs already wait for their narinfo; try again", name, h.cfg.MaxPending), http.StatusServiceUnavailable)
		return
	}

	body := &countingHash{r: http.MaxBytesReader(w, r.Body, h.cfg.MaxNARSize), h: sha256.New()}
	nar, closeNAR, err := decompress(m[3], bufio.NewReaderSize(body, 1<<20))
	if err != nil {
		h.badRequest(w, name, err)
		return
	}
	defer closeNAR()
	limited := &io.LimitedReader{R: nar, N: h.cfg.MaxNARSize + 1}
	p, err := h.cfg.Store.Import(r.Context(), limited)
	if err != nil {
		if limited.N <= 0 {
			err = fmt.Errorf("NAR larger than %d bytes", h.cfg.MaxNARSize)
		}
		h.badRequest(w, name, fmt.Errorf("not a valid NAR: %w", err))
		return
	}
	// The file must end where the NAR does, and be what its name says.
	if n, err := io.Copy(io.Discard, limited); err != nil || n != 0 {
		p.Discard()
		h.badRequest(w, name, fmt.Errorf("data after the end of the NAR (%d bytes, %v)", n, err))
		return
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		p.Discard()
		h.badRequest(w, name, fmt.Errorf("read: %w", err))
		return
	}
	var got [32]byte
	body.h.Sum(got[:0])
	if subtle.ConstantTimeCompare(got[:], wantHash) != 1 {
		p.Discard()
		h.badRequest(w, name, fmt.Errorf("the file's SHA-256 is %s, not the %s its name says", nixbase32.EncodeToString(got[:]), m[1]))
		return
	}

	pd := &pending{p: p, compression: compressions[m[3]], fileHash: got, fileSize: body.n}
	h.mu.Lock()
	if old := h.pending[name]; old != nil {
		old.timer.Stop()
		old.p.Discard()
	}
	h.pending[name] = pd
	pd.timer = time.AfterFunc(h.cfg.PendingTTL, func() {
		if h.take(name, pd) != nil {
			h.cfg.Logger.Warn("uploaded NAR discarded: its narinfo never came", "file", name, "after", h.cfg.PendingTTL)
			pd.p.Discard()
		}
	})
	h.mu.Unlock()
	h.cfg.Logger.Debug("NAR uploaded", "file", name, "narSize", p.Result().NarSize, "root", p.Result().Root)
	w.WriteHeader(http.StatusOK)
}

// take removes and returns name's pending NAR, if there is one and it is
// only (nil: whichever it is); else it returns nil.
func (h *Handler) take(name string, only *pending) *pending {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := h.pending[name]
	if cur == nil || (only != nil && cur != only) {
		return nil
	}
	delete(h.pending, name)
	cur.timer.Stop()
	return cur
}

func decompress(ext string, r io.Reader) (io.Reader, func(), error) {
	switch ext {
	case "":
		return r, func() {}, nil
	case "xz":
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("xz: %w", err)
		}
		return xr, func() {}, nil
	case "zst":
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	case "bz2":
		return bzip2.NewReader(r), func() {}, nil
	case "gz":
		gr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return gr, func() { gr.Close() }, nil
	}
	return nil, nil, fmt.Errorf("compression %q is not supported", ext)
}

func (h *Handler) putNarinfo(w http.ResponseWriter, r *http.Request, name string) {
	ni, err := narinfo.Parse(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		h.badRequest(w, name, fmt.Errorf("not a narinfo: %w", err))
		return
	}
	pd := h.take(ni.URL, nil)
	if pd == nil {
		h.badRequest(w, name, fmt.Errorf("its NAR %s was not uploaded here, or waited more than %s for this narinfo; upload it first", ni.URL, h.cfg.PendingTTL))
		return
	}
	// From here on the NAR is recorded with this narinfo or dropped: Nix
	// does not send another.
	info, err := h.check(ni, strings.TrimSuffix(name, ".narinfo"))
	if err == nil {
		err = checkFile(ni, pd)
	}
	if err != nil {
		pd.p.Discard()
		h.badRequest(w, name, err)
		return
	}
	if err := pd.p.Record(r.Context(), info); err != nil {
		if errors.Is(err, ErrRejected) {
			h.badRequest(w, name, err)
			return
		}
		h.cfg.Logger.Error("record upload", "path", info.Path, "err", err)
		http.Error(w, fmt.Sprintf("upload %s: %v", name, err), http.StatusInternalServerError)
		return
	}
	h.cfg.Logger.Info("path uploaded", "path", info.Path, "narSize", info.NarSize)
	if h.cfg.OnRecorded != nil {
		h.cfg.OnRecorded(info.Path, info.NarSize)
	}
	w.WriteHeader(http.StatusOK)
}

// check validates a narinfo on its own (names, hashes, signatures) and
// returns the path info it describes.
func (h *Handler) check(ni *narinfo.NarInfo, hashPart string) (nixstore.PathInfo, error) {
	var info nixstore.PathInfo
	if path.Dir(ni.StorePath) != h.cfg.StoreDir {
		return info, fmt.Errorf("StorePath %q is not in %s", ni.StorePath, h.cfg.StoreDir)
	}
	sp, err := storepath.FromString(path.Base(ni.StorePath))
	if err != nil {
		return info, fmt.Errorf("StorePath %q: %w", ni.StorePath, err)
	}
	if nixbase32.EncodeToString(sp.Digest) != hashPart {
		return info, fmt.Errorf("StorePath %s is not the path %s.narinfo names", ni.StorePath, hashPart)
	}
	if ni.NarHash == nil || ni.NarHash.Algo().String() != "sha256" {
		return info, errors.New("NarHash is missing or not SHA-256")
	}
	if ni.NarSize == 0 {
		return info, errors.New("NarSize is missing")
	}
	if !narURL.MatchString(ni.URL) {
		return info, fmt.Errorf("URL %q is not nar/<filehash>.nar[.ext]", ni.URL)
	}
	info = nixstore.PathInfo{
		Path:    ni.StorePath,
		NarHash: "sha256:" + nixbase32.EncodeToString(ni.NarHash.Digest()),
		NarSize: ni.NarSize,
		CA:      ni.CA,
	}
	for _, ref := range ni.References {
		if _, err := storepath.FromString(ref); err != nil {
			return info, fmt.Errorf("reference %q: %w", ref, err)
		}
		info.References = append(info.References, path.Join(h.cfg.StoreDir, ref))
	}
	if ni.Deriver != "" {
		if _, err := storepath.FromString(ni.Deriver); err != nil || !strings.HasSuffix(ni.Deriver, ".drv") {
			return info, fmt.Errorf("the narinfo's Deriver %q is not a .drv store path", ni.Deriver)
		}
		info.Deriver = path.Join(h.cfg.StoreDir, ni.Deriver)
	}
	// Signatures by keys we trust must verify; one of them is required if
	// any are configured. Others are kept as they are, for whoever trusts
	// them (no new trust: Nix checks them when it substitutes).
	fp := info.Fingerprint()
	trusted := false
	for _, sig := range ni.Signatures {
		for _, k := range h.cfg.Trusted {
			if k.Name != sig.Name {
				continue
			}
			if !k.Verify(fp, sig) {
				return info, fmt.Errorf("signature by %s does not verify", sig.Name)
			}
			trusted = true
		}
		info.Signatures = append(info.Signatures, sig.String())
	}
	if len(h.cfg.Trusted) > 0 && !trusted {
		return info, fmt.Errorf("no signature by a trusted key (%s); sign it (nix store sign) or upload with ?secret-key=", keyNames(h.cfg.Trusted))
	}
	return info, nil
}

// checkFile compares a narinfo's description of its file and NAR with what
// was uploaded.
func checkFile(ni *narinfo.NarInfo, pd *pending) error {
	res := pd.p.Result()
	if ni.Compression != pd.compression && !(ni.Compression == "" && pd.compression == "bzip2") {
		return fmt.Errorf("the narinfo says Compression %q, but %s is %s", ni.Compression, ni.URL, pd.compression)
	}
	if ni.FileHash != nil && (ni.FileHash.Algo().String() != "sha256" || subtle.ConstantTimeCompare(ni.FileHash.Digest(), pd.fileHash[:]) != 1) {
		return fmt.Errorf("FileHash %s is not the hash of %s", ni.FileHash, ni.URL)
	}
	if ni.FileSize != 0 && int64(ni.FileSize) != pd.fileSize {
		return fmt.Errorf("FileSize %d, but %s has %d bytes", ni.FileSize, ni.URL, pd.fileSize)
	}
	if subtle.ConstantTimeCompare(ni.NarHash.Digest(), res.NarHash[:]) != 1 || ni.NarSize != res.NarSize {
		return fmt.Errorf("the NAR uploaded is sha256:%s (%d bytes), not the NarHash %s (%d bytes) this narinfo says; nothing recorded",
			nixbase32.EncodeToString(res.NarHash[:]), res.NarSize, ni.NarHash, ni.NarSize)
	}
	return nil
}

func keyNames(keys []signature.PublicKey) string {
	var names []string
	for _, k := range keys {
		names = append(names, k.Name)
	}
	return strings.Join(names, ", ")
}

// BasicAuth is the Authorization header value for token, for clients
// other than Nix (tests, scripts).
func BasicAuth(token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("nixipfs:"+token))
}

// MinTokenLen is the shortest token LoadToken accepts.
const MinTokenLen = 16

// LoadToken reads the upload token from file (surrounding white space
// ignored). The file must be readable by its owner only, like a key.
func LoadToken(file string) (string, error) {
	b, err := secretfile.Read(file)
	if err != nil {
		return "", fmt.Errorf("upload token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < MinTokenLen || strings.ContainsAny(tok, " \t\r\n:") {
		return "", fmt.Errorf("upload token %s: want one line of at least %d characters, no spaces or colons (e.g. head -c 24 /dev/urandom | base64)", file, MinTokenLen)
	}
	return tok, nil
}
