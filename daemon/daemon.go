// Package daemon runs a nixipfs node: the IPFS node (online, loopback-only
// unless peers are named), its RPC API socket for other nixipfs commands on
// the same data dir, and the binary-cache gateway.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nixipfs/nixipfs/gateway"
	"github.com/nixipfs/nixipfs/ipfsnode"
	"github.com/nixipfs/nixipfs/manifests"
)

// Config configures a daemon.
type Config struct {
	DataDir string
	Node    *ipfsnode.Node
	Listen  string // gateway address, e.g. 127.0.0.1:8080
	Gateway gateway.Config
	// Follow are IPNS names to follow besides those in the data dir's
	// follow list (nixipfs follow add).
	Follow []string
	// FollowInterval is how often followed names are resolved.
	FollowInterval time.Duration
	// Trusted, if set, are the keys a path must be signed by to be served.
	Trusted []signature.PublicKey
	// Ready, if set, is called with the gateway's address once it listens.
	Ready func(addr net.Addr)
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var apiErr <-chan error
	if cfg.Node.Embedded() != nil {
		ready, errc := cfg.Node.ServeAPI(ctx, cfg.DataDir)
		select {
		case <-ready:
		case err := <-errc:
			return fmt.Errorf("daemon: %w", err)
		}
		apiErr = errc
	}

	local := manifests.OpenLocal(cfg.DataDir, cfg.Node.API)
	if v, err := local.CurrentVersion(); err == nil && v.Defined() {
		// Announce the current version: publishes made while offline reach
		// peers now.
		if name, err := local.Publish(ctx); err != nil {
			slog.Warn("republish manifest", "err", err)
		} else {
			slog.Info("manifest", "ipns", name, "version", v)
		}
	}
	follower := manifests.NewFollower(cfg.Node.API)
	if err := watchFollowList(ctx, cfg, follower); err != nil {
		return err
	}
	interval := cfg.FollowInterval
	if interval <= 0 {
		interval = time.Second
	}
	go follower.Run(ctx, interval)
	resolver, err := manifests.NewResolver(cfg.Node.API, local, follower, cfg.Trusted)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}

	gc := cfg.Gateway
	gc.API = cfg.Node.API
	gc.Paths = resolver
	gc.Sources = resolver
	srv := &http.Server{
		Handler:           logRequests(gateway.New(gc)),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("daemon: listen on %s: %w", cfg.Listen, err)
	}
	slog.Info("gateway listening", "addr", lis.Addr().String(), "ipfs", cfg.Node.Kind())
	if cfg.Ready != nil {
		cfg.Ready(lis.Addr())
	}
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(lis) }()

	select {
	case <-ctx.Done():
	case err = <-srvErr:
	case err = <-apiErr:
		if err != nil {
			err = fmt.Errorf("daemon: IPFS API: %w", err)
		}
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// watchFollowList keeps the follower's names in step with the flags and the
// data dir's follow list, re-read every few seconds.
func watchFollowList(ctx context.Context, cfg Config, f *manifests.Follower) error {
	var flagNames []string
	for _, n := range cfg.Follow {
		name, err := manifests.ParseName(n)
		if err != nil {
			return fmt.Errorf("daemon: --follow: %w", err)
		}
		flagNames = append(flagNames, name)
	}
	load := func() {
		names, err := manifests.ReadFollowList(cfg.DataDir)
		if err != nil {
			slog.Warn("follow list", "err", err)
		}
		all := append([]string(nil), flagNames...)
		for _, n := range names {
			if !slices.Contains(all, n) {
				all = append(all, n)
			}
		}
		f.Set(all)
	}
	load()
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				load()
			}
		}
	}()
	return nil
}

// statusRecorder remembers the status a handler wrote, for the request log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Flush keeps streaming responses streaming through the wrapper.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			slog.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "dur", time.Since(start))
		}()
		h.ServeHTTP(rec, r)
	})
}
