package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// target is one GET: a path relative to the base URL and, if known, the
// number of bytes its body must have.
type target struct {
	path string
	size int64 // -1: unchecked
}

func readTargets(file string) ([]target, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ts []target
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		t := target{path: fields[0], size: -1}
		if len(fields) > 1 {
			if t.size, err = strconv.ParseInt(fields[1], 10, 64); err != nil {
				return nil, fmt.Errorf("%s: size %q", file, fields[1])
			}
		}
		ts = append(ts, t)
	}
	if len(ts) == 0 && sc.Err() == nil {
		return nil, fmt.Errorf("%s: no targets", file)
	}
	return ts, sc.Err()
}

// newClient returns a keep-alive HTTP client for up to conns connections,
// never asking for compressed answers (both servers send identity bodies).
func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Minute,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			DisableCompression:  true,
			IdleConnTimeout:     time.Minute,
			WriteBufferSize:     64 << 10,
			ReadBufferSize:      256 << 10,
		},
	}
}

// get fetches one target, reads its whole body and checks status and size.
func get(ctx context.Context, c *http.Client, base string, t target, buf []byte) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/"+strings.TrimPrefix(t.path, "/"), nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, fmt.Errorf("GET %s: after %d bytes: %w", req.URL, n, err)
		}
	}
	if resp.StatusCode != http.StatusOK {
		return n, fmt.Errorf("GET %s: %s", req.URL, resp.Status)
	}
	if t.size >= 0 && n != t.size {
		return n, fmt.Errorf("GET %s: %d bytes, want %d", req.URL, n, t.size)
	}
	return n, nil
}

// fetch GETs every target of -list (-repeat times over) with -conns
// workers sharing one queue and keep-alive connections, and prints the
// elapsed seconds and the body bytes. Any error status, short body or wrong
// size fails the run.
func fetch(args []string) error {
	fl := flag.NewFlagSet("fetch", flag.ExitOnError)
	base := fl.String("base", "", "base URL, e.g. http://127.0.0.1:8080")
	list := fl.String("list", "", "file of targets: PATH [SIZE] per line")
	conns := fl.Int("conns", 1, "concurrent connections")
	repeat := fl.Int("repeat", 1, "fetch the list this many times")
	_ = fl.Parse(args)
	if *base == "" || *list == "" || *conns < 1 || *repeat < 1 {
		return errors.New("-base and -list are required; -conns and -repeat at least 1")
	}
	ts, err := readTargets(*list)
	if err != nil {
		return err
	}
	var all []target
	for range *repeat {
		all = append(all, ts...)
	}
	client := newClient(*conns)
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var next, total atomic.Int64
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	start := time.Now()
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for {
				i := next.Add(1) - 1
				if i >= int64(len(all)) || ctx.Err() != nil {
					return
				}
				n, err := get(ctx, client, strings.TrimSuffix(*base, "/"), all[i], buf)
				total.Add(n)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return first
	}
	fmt.Printf("%.6f %d\n", elapsed.Seconds(), total.Load())
	return nil
}

// narURLs reads the narinfo of each store-path hash in -list from -base and
// writes "URL FileSize" lines: the NAR targets of that server. It insists on
// Compression: none, so both servers are timed on the same bytes.
func narURLs(args []string) error {
	fl := flag.NewFlagSet("narurls", flag.ExitOnError)
	base := fl.String("base", "", "base URL of a binary cache")
	list := fl.String("list", "", "file of store-path hashes, one per line")
	out := fl.String("o", "", "output file")
	_ = fl.Parse(args)
	if *base == "" || *list == "" || *out == "" {
		return errors.New("-base, -list and -o are required")
	}
	ts, err := readTargets(*list)
	if err != nil {
		return err
	}
	client := newClient(1)
	var b strings.Builder
	for _, t := range ts {
		resp, err := client.Get(strings.TrimSuffix(*base, "/") + "/" + t.path + ".narinfo")
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s.narinfo: %s", t.path, resp.Status)
		}
		fields := map[string]string{}
		for _, line := range strings.Split(string(body), "\n") {
			if k, v, ok := strings.Cut(line, ": "); ok {
				fields[k] = v
			}
		}
		if c := fields["Compression"]; c != "none" {
			return fmt.Errorf("%s.narinfo: Compression %q, want none", t.path, c)
		}
		if fields["URL"] == "" || fields["FileSize"] == "" {
			return fmt.Errorf("%s.narinfo: no URL or FileSize:\n%s", t.path, body)
		}
		fmt.Fprintf(&b, "%s %s\n", fields["URL"], fields["FileSize"])
	}
	return os.WriteFile(*out, []byte(b.String()), 0o644)
}
