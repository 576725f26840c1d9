package retrieve

import (
	"bytes"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
)

// FuzzHolderAnswer: whatever bytes a holder answers with, the render ends
// with the right NAR (the next holder has the DAG), and only blocks of the
// DAG are stored.
func FuzzHolderAnswer(f *testing.F) {
	fx := newFixtureSize(f, 40<<10) // small: the fuzzer runs it instrumented
	car := carOf(f, fx.root, dagBlocks(f, fx.src, fx.root))
	f.Add(car[:100])
	f.Add(car[:2000])
	f.Add(car)
	f.Add([]byte("not a car"))
	f.Add([]byte{})
	var mu sync.Mutex
	var answer []byte
	bad := newHolder(f, fx.src, func(_ []byte, w http.ResponseWriter, _ *http.Request) bool {
		mu.Lock()
		b := answer
		mu.Unlock()
		w.Write(b)
		return true
	})
	good := newHolder(f, fx.src, nil)
	dag := map[cid.Cid]bool{}
	for _, b := range dagBlocks(f, fx.src, fx.root) {
		dag[b.Cid()] = true
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		client := &http.Client{Transport: &http.Transport{}}
		mu.Lock()
		answer = body
		mu.Unlock()
		fx.mu.Lock()
		fx.stored = map[cid.Cid][]byte{}
		fx.mu.Unlock()
		r := fx.retriever([]string{bad.srv.URL, good.srv.URL}, func(c *Config) {
			c.Stall = 500 * time.Millisecond
			c.Logger = slog.New(slog.DiscardHandler) // thousands of inputs, each a failed stream
			c.Client = client
		})
		defer client.CloseIdleConnections() // no connections piling up over inputs
		var got []byte
		var err error
		done := make(chan struct{})
		go func() { got, err = fx.render(t, r); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("render hung:\n%s", buf[:runtime.Stack(buf, true)])
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, fx.nar) {
			t.Fatal("rendered NAR differs")
		}
		fx.mu.Lock()
		defer fx.mu.Unlock()
		for c := range fx.stored {
			if !dag[c] {
				t.Fatalf("stored %s, which is not in the DAG", c)
			}
		}
	})
}
