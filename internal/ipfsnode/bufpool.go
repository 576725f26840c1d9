package ipfsnode

import (
	"math/bits"
	"sync"
	"unsafe"
)

// bufPool lends the buffers that reads of large blocks copy their values
// into, and takes them back once the reader is done (Node.Recycle). A
// render reads a NAR's worth of 1 MiB blocks and drops each once written:
// without reuse that was most of the daemon's allocation, its garbage
// collection and the page faults of fresh heap (a tenth of a render's CPU).
//
// A buffer lent is remembered until put gives it back; put ignores a slice
// it did not lend, or lent so long ago that it forgot it, so callers may
// offer any block's data and only a caller that holds the sole reference
// may offer it at all. Buffers never given back are garbage as before.
type bufPool struct {
	mu        sync.Mutex
	free      [bufClasses][][]byte
	lent, old map[*byte]struct{} // the current and the previous generation
}

const (
	bufMinShift = 16   // smallest class 64 KiB; values under 32 KiB are not pooled
	bufClasses  = 6    // 64 KiB to 2 MiB
	bufLentMax  = 1024 // buffers remembered per generation
	bufFreeMax  = 16   // idle buffers kept per class
)

func newBufPool() *bufPool {
	return &bufPool{lent: map[*byte]struct{}{}, old: map[*byte]struct{}{}}
}

// bufClass is the class whose buffers hold n bytes.
func bufClass(n int) int {
	if n <= 1<<bufMinShift {
		return 0
	}
	return bits.Len(uint(n-1)) - bufMinShift
}

// get returns a buffer of length n.
func (p *bufPool) get(n int) []byte {
	c := bufClass(n)
	if n < 1<<(bufMinShift-1) || c >= bufClasses {
		return make([]byte, n)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var b []byte
	if f := p.free[c]; len(f) > 0 {
		b = f[len(f)-1][:n]
		f[len(f)-1] = nil
		p.free[c] = f[:len(f)-1]
	} else {
		b = make([]byte, n, 1<<(c+bufMinShift))
	}
	if len(p.lent) >= bufLentMax {
		// Buffers lent two generations ago were kept by their readers.
		p.old, p.lent = p.lent, make(map[*byte]struct{}, bufLentMax)
	}
	p.lent[unsafe.SliceData(b)] = struct{}{}
	return b
}

// forget has the pool forget that it lent b, so that put ignores b, and
// returns b.
func (p *bufPool) forget(b []byte) []byte {
	if cap(b) < 1<<bufMinShift {
		return b
	}
	k := unsafe.SliceData(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.lent, k)
	delete(p.old, k)
	return b
}

// put takes back b if the pool lent it and has not forgotten it.
func (p *bufPool) put(b []byte) {
	if cap(b) < 1<<bufMinShift {
		return
	}
	k := unsafe.SliceData(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.lent[k]; ok {
		delete(p.lent, k)
	} else if _, ok := p.old[k]; ok {
		delete(p.old, k)
	} else {
		return
	}
	if c := bufClass(cap(b)); len(p.free[c]) < bufFreeMax {
		p.free[c] = append(p.free[c], b[:0])
	}
}
