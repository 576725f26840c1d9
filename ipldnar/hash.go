package ipldnar

import (
	"crypto/sha256"
	"hash"
	"io"
	"sync"

	"lukechampine.com/blake3"
)

// hashBufSize is the unit of work handed to the hashing goroutine: large
// enough that the channel round trip is noise, small enough to stay in cache.
const hashBufSize = 256 << 10

// hashBufs holds at most this many buffers per import (one being filled, the
// rest queued or being hashed), which bounds the lag and the memory.
const hashBufs = 16

var hashBufPool = sync.Pool{New: func() any { return new([hashBufSize]byte) }}

// hashingReader passes reads through and computes the SHA-256 and BLAKE3 of
// every byte read, counting them.
//
// The hashes are computed on a separate goroutine: importing already spends
// most of its time in SHA-256 for the block CIDs, and hashing the NAR twice
// more on the same core would halve the throughput. The bytes are copied into
// buffers of our own because the caller may reuse its buffer after Read
// returns.
type hashingReader struct {
	r io.Reader
	n uint64

	cur  *[hashBufSize]byte // being filled, nil until the first read
	fill int
	work chan *[hashBufSize]byte // full buffers, in read order
	free chan *[hashBufSize]byte
	done chan struct{}

	sha hash.Hash
	b3  *blake3.Hasher
}

func newHashingReader(r io.Reader) *hashingReader {
	h := &hashingReader{
		r:    r,
		work: make(chan *[hashBufSize]byte, hashBufs),
		free: make(chan *[hashBufSize]byte, hashBufs),
		done: make(chan struct{}),
		sha:  sha256.New(),
		b3:   blake3.New(32, nil),
	}
	go h.hashLoop()
	return h
}

func (h *hashingReader) hashLoop() {
	defer close(h.done)
	for buf := range h.work {
		h.sha.Write(buf[:])
		h.b3.Write(buf[:])
		select {
		case h.free <- buf:
		default:
			hashBufPool.Put(buf)
		}
	}
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.n += uint64(n)
	for q := p[:n]; len(q) > 0; {
		if h.cur == nil {
			select {
			case h.cur = <-h.free:
			default:
				h.cur = hashBufPool.Get().(*[hashBufSize]byte)
			}
		}
		c := copy(h.cur[h.fill:], q)
		h.fill += c
		q = q[c:]
		if h.fill == hashBufSize {
			h.work <- h.cur
			h.cur, h.fill = nil, 0
		}
	}
	return n, err
}

// finish stops the hashing goroutine and returns the digests of everything
// read so far. It must be called exactly once, also on error paths, so the
// goroutine does not leak.
func (h *hashingReader) finish() (sha [32]byte, b3 [32]byte) {
	close(h.work)
	<-h.done
	if h.cur != nil {
		h.sha.Write(h.cur[:h.fill])
		h.b3.Write(h.cur[:h.fill])
		hashBufPool.Put(h.cur)
		h.cur = nil
	}
	close(h.free)
	for buf := range h.free {
		hashBufPool.Put(buf)
	}
	h.sha.Sum(sha[:0])
	h.b3.Sum(b3[:0])
	return sha, b3
}
