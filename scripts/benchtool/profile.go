package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/nixstore"
	"github.com/nixipfs/nixipfs/internal/publish"
	"github.com/nixipfs/nixipfs/ipldnar"
	"github.com/nixipfs/nixipfs/manifests"
)

// profile runs one of the measured code paths in process, under pprof:
//
//	publish  nixipfs publish of PATHS into the data dir (the import path)
//	render   every NAR the data dir's manifest lists, rendered and hashed
//	         as the gateway does (the render path), -repeat times
//
// It writes a CPU profile (-cpu), a heap profile at the end (-mem) and an
// execution trace (-trace; `go tool trace -pprof=sync` shows where the
// goroutines waited, e.g. pebble's write stalls).
func profile(args []string) error {
	fs := flag.NewFlagSet("profile", flag.ExitOnError)
	dataDir := fs.String("data-dir", "", "nixipfs data dir")
	store := fs.String("store", "", "Nix store (--store) to publish from")
	cpu := fs.String("cpu", "", "write a CPU profile here")
	mem := fs.String("mem", "", "write a heap profile here")
	trc := fs.String("trace", "", "write an execution trace here")
	repeat := fs.Int("repeat", 1, "render: passes over the manifest")
	maxNar := fs.Int64("max-nar", 0, "render: only NARs of at most this many bytes (0: all)")
	fs.Parse(args)
	if fs.NArg() < 1 || *dataDir == "" {
		return errors.New("usage: profile -data-dir DIR [-store S] [-cpu F] [-mem F] publish PATH...|render")
	}
	ctx := context.Background()
	node, err := ipfsnode.Open(ctx, ipfsnode.Options{DataDir: *dataDir})
	if err != nil {
		return err
	}
	defer node.Close()
	local := manifests.OpenLocalNode(*dataDir, node)

	for _, r := range []struct {
		path  string
		start func(io.Writer) error
		stop  func()
	}{{*cpu, pprof.StartCPUProfile, pprof.StopCPUProfile}, {*trc, trace.Start, trace.Stop}} {
		if r.path == "" {
			continue
		}
		f, err := os.Create(r.path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := r.start(f); err != nil {
			return err
		}
		defer r.stop()
	}
	start := time.Now()
	switch fs.Arg(0) {
	case "publish":
		p := &publish.Publisher{Node: node, Store: nixstore.New(*store), Manifest: local}
		res, err := p.Publish(ctx, fs.Args()[1:]...)
		if err != nil {
			return err
		}
		fmt.Printf("published %d paths in %.2f s\n", len(res), time.Since(start).Seconds())
	case "render":
		n, bytes, err := renderAll(ctx, node, local, *repeat, *maxNar)
		if err != nil {
			return err
		}
		d := time.Since(start).Seconds()
		fmt.Printf("rendered %d NARs, %d bytes in %.2f s (%.0f MB/s)\n", n, bytes, d, float64(bytes)/d/1e6)
	default:
		return fmt.Errorf("unknown profile target %q", fs.Arg(0))
	}
	if *mem != "" {
		f, err := os.Create(*mem)
		if err != nil {
			return err
		}
		defer f.Close()
		runtime.GC()
		if err := pprof.WriteHeapProfile(f); err != nil {
			return err
		}
	}
	return nil
}

// renderAll renders every store path of the manifest (with a NAR of at
// most maxNar bytes, unless 0), repeat times, and checks each NAR's size
// and SHA-256 as the gateway does.
func renderAll(ctx context.Context, node *ipfsnode.Node, local *manifests.Local, repeat int, maxNar int64) (int, int64, error) {
	m, err := local.Current(ctx)
	if err != nil {
		return 0, 0, err
	}
	var infos []*manifests.PathInfo
	err = m.Walk(ctx, func(key string, c cid.Cid) error {
		if !strings.HasPrefix(key, "p/") {
			return nil
		}
		p, err := manifests.Load(ctx, node.API, c)
		if err != nil {
			return err
		}
		if maxNar == 0 || p.NarSize <= maxNar {
			infos = append(infos, p)
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	var total int64
	for range repeat {
		for _, p := range infos {
			h := sha256.New()
			n, err := ipldnar.Render(ctx, h, p.Root, ipldnar.WithRecycle(node.LocalBlocks(), node.Recycle))
			if err != nil {
				return 0, 0, fmt.Errorf("render %s: %w", p.StorePath, err)
			}
			if n != p.NarSize || !bytes.Equal(h.Sum(nil), p.NarHash) {
				return 0, 0, fmt.Errorf("render %s: NAR does not match its record", p.StorePath)
			}
			total += n
		}
	}
	return len(infos) * repeat, total, nil
}
