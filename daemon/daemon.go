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
	"time"

	"github.com/nixipfs/nixipfs/gateway"
	"github.com/nixipfs/nixipfs/ipfsnode"
	"github.com/nixipfs/nixipfs/manifests"
)

// Config configures a daemon.
type Config struct {
	DataDir string
	Node    *ipfsnode.Node
	Index   *manifests.Index
	Listen  string // gateway address, e.g. 127.0.0.1:8080
	Gateway gateway.Config
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

	gc := cfg.Gateway
	gc.API = cfg.Node.API
	gc.Paths = manifests.NewLookup(cfg.Index, cfg.Node.API)
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
