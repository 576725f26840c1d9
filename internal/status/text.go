package status

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nixipfs/nixipfs/internal/remotepin"
)

// FromDaemon asks the daemon running on dataDir for its live report, at the
// gateway address it recorded. It fails fast when no daemon answers.
func FromDaemon(ctx context.Context, dataDir string) (*Report, error) {
	b, err := os.ReadFile(GatewayFile(dataDir))
	if err != nil {
		return nil, fmt.Errorf("no daemon: %w", err)
	}
	url := strings.TrimSpace(string(b)) + "/status.json"
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("daemon status %s: %w", url, err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("daemon status: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("daemon status %s: %s", url, res.Status)
	}
	var r Report
	if err := json.NewDecoder(io.LimitReader(res.Body, 16<<20)).Decode(&r); err != nil {
		return nil, fmt.Errorf("daemon status %s: %w", url, err)
	}
	return &r, nil
}

// RemoteState says where one remote pin stands, for people.
func RemoteState(e remotepin.Entry) string {
	switch e.State {
	case remotepin.StatePinned:
		return fmt.Sprintf("pinned on %s, %d holders", e.Remote, e.Holders)
	case remotepin.StateFailed:
		return fmt.Sprintf("failed on %s (attempt %d, retry at %s): %s", e.Remote, e.Attempts, e.NextTry.Format(time.RFC3339), e.Error)
	default:
		return e.State + " on " + e.Remote
	}
}

// WriteText prints a report for people.
func WriteText(w io.Writer, r *Report) error {
	ew := &errWriter{w: w}
	p := ew.printf
	if r.Daemon {
		p("daemon:   running, gateway %s\n", r.Gateway)
	} else {
		p("daemon:   not running\n")
	}
	p("node:     %s IPFS node, peer %s\n", r.Node.Kind, r.Node.PeerID)
	p("ipns:     /ipns/%s\n", r.Node.IPNS)
	if r.Node.Datastore != "" {
		p("storage:  %s, %.1f MB on disk\n", r.Node.Datastore, float64(r.Node.RepoBytes)/1e6)
	}
	if r.Node.HotMax > 0 {
		p("memory:   hot blocks %.1f MB of %.1f MB, %d reads answered\n", float64(r.Node.HotBytes)/1e6, float64(r.Node.HotMax)/1e6, r.Node.HotHits)
	}
	if m := r.Manifest; m.Version != "" {
		p("manifest: %s (seq %d, %d paths, %s)\n", m.Version, m.Seq, m.Paths, m.Time)
	} else {
		p("manifest: nothing published yet\n")
	}
	if r.Pins != nil {
		p("pins:     %d recursive, %d direct\n", r.Pins.Recursive, r.Pins.Direct)
	}
	p("queue:    %d waiting, %d failed\n", r.Queue.Waiting, r.Queue.Failed)
	for _, e := range r.Queue.Entries {
		state := "waiting"
		if e.LastError != "" {
			state = fmt.Sprintf("attempt %d failed, retry at %s: %s", e.Attempts, e.NextTry.Format(time.RFC3339), e.LastError)
		}
		p("  waiting %s %s (%s)\n", e.ID, strings.Join(e.Paths, " "), state)
	}
	for _, e := range r.Queue.FailedEntries {
		p("  failed  %s %s: %s\n", e.ID, strings.Join(e.Paths, " "), e.LastError)
	}
	if rp := r.RemotePins; rp != nil {
		p("remote:   %s: %d pinned, %d pinning, %d pending, %d failed\n", strings.Join(rp.Remotes, ", "),
			rp.Counts[remotepin.StatePinned], rp.Counts[remotepin.StatePinning], rp.Counts[remotepin.StatePending], rp.Counts[remotepin.StateFailed])
		for _, e := range rp.Entries {
			p("  %s %s\n", cmp.Or(e.StorePath, "manifest "+e.PathInfo), RemoteState(e))
		}
		if rp.Truncated {
			p("  (more in --json)\n")
		}
	}
	if len(r.Followed) == 0 {
		p("followed: none\n")
	}
	for i, f := range r.Followed {
		label := "followed:"
		if i > 0 {
			label = "         "
		}
		switch {
		case f.Version != "":
			p("%s /ipns/%s version %s, %d paths, updated %s\n", label, f.Name, f.Version, f.Count, f.Updated.Format(time.RFC3339))
			if !f.Resolved && f.LastErr != "" {
				// A version kept from before a restart, its name not found since.
				p("           not resolved since the daemon started: %s\n", f.LastErr)
			}
		case r.Daemon:
			p("%s /ipns/%s not resolved yet %s\n", label, f.Name, f.LastErr)
		default:
			p("%s /ipns/%s\n", label, f.Name)
		}
	}
	p("peers:    %d connected\n", len(r.Peers.Connected))
	for _, c := range r.Peers.Connected {
		p("  %s\n", c)
	}
	for _, n := range r.Peers.Network {
		p("network:  %s %d paths, last seen %s\n", n.Name, n.Paths, n.LastSeen.Format(time.RFC3339))
	}
	if s := r.Serving; s != nil {
		p("serving:  %d requests, narinfo hit rate %.1f %% (%d hits, %d misses), %d NARs, %d bytes, render %.0f MB/s\n",
			s.Requests, 100*s.HitRate, s.NarinfoHits, s.NarinfoMisses, s.NARs, s.BytesServed, s.RenderMBps)
	}
	if f := r.Prefetch; f != nil {
		p("prefetch: %d queued, %d active, %d done, %d failed (%d paths to try again), %d bytes (%d workers)\n",
			f.Queued, f.Active, f.Done, f.Failed, f.Retrying, f.Bytes, f.Workers)
	}
	for _, x := range r.Recent {
		p("recent:   %s %s %s\n", x.StorePath, x.Status, x.Time.Format(time.RFC3339))
	}
	for _, e := range r.Errors {
		p("error:    %s\n", e)
	}
	return ew.err
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
