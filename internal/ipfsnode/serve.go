package ipfsnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/nixipfs/nixipfs/internal/atomicfile"

	oldcmds "github.com/ipfs/kubo/commands"
	"github.com/ipfs/kubo/core"
	"github.com/ipfs/kubo/core/corehttp"
)

// ServeAPI serves the embedded node's kubo RPC API on a unix socket in the
// data dir (mode 0600: only this user) and records it in the api file, so
// that `nixipfs publish` and friends, run while the daemon holds the repo
// lock, use the daemon's node. It returns when ctx ends.
func (n *Node) ServeAPI(ctx context.Context, dataDir string) (ready <-chan struct{}, errc <-chan error) {
	rdy := make(chan struct{})
	ec := make(chan error, 1)
	go func() { ec <- n.serveAPI(ctx, dataDir, rdy) }()
	return rdy, ec
}

func (n *Node) serveAPI(ctx context.Context, dataDir string, ready chan<- struct{}) error {
	if n.embedded == nil {
		return errors.New("serve API: only an embedded node has one to serve")
	}
	sock := filepath.Join(dataDir, "ipfs.sock")
	_ = os.Remove(sock) // a stale socket from a killed daemon
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sock, err)
	}
	// The socket is the repo: only this user may talk to it (the data dir is
	// 0700 too, which closes the window before this chmod).
	if err := os.Chmod(sock, 0o600); err != nil {
		lis.Close()
		return fmt.Errorf("chmod %s: %w", sock, err)
	}
	defer os.Remove(sock)
	apiFile := APIFile(dataDir)
	if err := atomicfile.WriteFile(apiFile, []byte("/unix/"+sock+"\n"), 0o600); err != nil {
		lis.Close()
		return err
	}
	defer os.Remove(apiFile)
	cctx := oldcmds.Context{
		ConfigRoot:    n.repoPath,
		ReqLog:        &oldcmds.ReqLog{},
		ConstructNode: func() (*core.IpfsNode, error) { return n.embedded, nil },
	}
	go func() {
		<-ctx.Done()
		lis.Close()
	}()
	close(ready)
	err = corehttp.ServeWithReady(n.embedded, lis, nil, corehttp.CommandsOption(cctx))
	if ctx.Err() != nil {
		return nil
	}
	return err
}
