package carfile

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
)

// Import reads a CARv1 or CARv2 from r and passes each block to put, in CAR
// order, after checking that its bytes hash to its CID. It refuses CIDs with
// hash functions outside boxo's allowlist (and SHA-1), identity digests over
// 128 bytes, blocks over 2 MiB, CARs without roots or with duplicate roots,
// and truncated input. It returns the header roots.
//
// Import holds at most one block (plus a 64 KiB read buffer) in memory,
// whatever the size of the CAR; a hostile length prefix is refused before
// anything is allocated for it.
// On error it stops at once; blocks already passed to put are unreferenced,
// so callers pin nothing unless Import returned nil. A CARv1 cut exactly at a
// block boundary is indistinguishable from a shorter CAR, so callers must
// still run Complete on the returned roots before pinning. Import may read
// past the end of a CARv2's data payload.
func Import(ctx context.Context, r io.Reader, put func(ctx context.Context, b blocks.Block) error) ([]cid.Cid, Stats, error) {
	var st Stats
	br := bufio.NewReaderSize(r, 64<<10)
	// The CARv2 header says how long its data payload is, which lets us tell
	// a truncated CARv2 from a complete one; go-car keeps it to itself.
	v2end, err := peekV2End(br)
	if err != nil {
		return nil, st, fmt.Errorf("import CAR: read header: %w", err)
	}
	// go-car seeks over CARv2 padding when its reader can seek; cr cannot,
	// so go-car reads forward instead and a hostile DataOffset can never
	// rewind a seekable r.
	cr := &countingReader{r: br}
	car, err := carv2.NewBlockReader(cr,
		carv2.MaxAllowedHeaderSize(maxHeaderSize),
		carv2.MaxAllowedSectionSize(maxSectionSize),
		// verifyBlock hashes every block itself, after refusing hash
		// functions we do not trust; go-car need not hash it first.
		carv2.WithTrustedCAR(true),
	)
	if err != nil {
		return nil, st, fmt.Errorf("import CAR: read header: %w", err)
	}
	if err := checkRoots(car.Roots); err != nil {
		return nil, st, fmt.Errorf("import CAR: header: %w", err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, st, fmt.Errorf("import CAR: %w", err)
		}
		start := cr.n
		b, err := car.Next()
		if err == io.EOF {
			// go-car reports a section cut after its length prefix as a clean
			// end; only a stream that ends between sections is complete.
			if cr.n != start {
				return nil, st, fmt.Errorf("import CAR: section %d: %w", st.Blocks+1, io.ErrUnexpectedEOF)
			}
			if v2end >= 0 && cr.n != v2end {
				return nil, st, fmt.Errorf("import CAR: CARv2 data payload ends at %d, input at %d: %w", v2end, cr.n, io.ErrUnexpectedEOF)
			}
			break
		}
		if err != nil {
			return nil, st, fmt.Errorf("import CAR: section %d: %w", st.Blocks+1, err)
		}
		c, data := b.Cid(), b.RawData()
		if err := verifyBlock(c, data); err != nil {
			return nil, st, fmt.Errorf("import CAR: block %s: %w", c, err)
		}
		if err := put(ctx, b); err != nil {
			return nil, st, fmt.Errorf("import CAR: block %s: %w", c, err)
		}
		st.Blocks++
		st.Bytes += int64(len(data))
	}
	return car.Roots, st, nil
}

// peekV2End returns the offset at which a CARv2's data payload ends, or -1
// if br does not start with the CARv2 pragma.
func peekV2End(br *bufio.Reader) (int64, error) {
	const headerEnd = carv2.PragmaSize + carv2.HeaderSize
	p, _ := br.Peek(headerEnd)
	if len(p) < len(carv2.Pragma) || !bytes.Equal(p[:len(carv2.Pragma)], carv2.Pragma) {
		return -1, nil
	}
	if len(p) < headerEnd {
		return -1, fmt.Errorf("CARv2 header: %w", io.ErrUnexpectedEOF)
	}
	var h carv2.Header
	if _, err := h.ReadFrom(bytes.NewReader(p[len(carv2.Pragma):])); err != nil {
		return -1, fmt.Errorf("CARv2 header: %w", err)
	}
	// ReadFrom has checked both fit in an int64; their sum may not.
	end := h.DataOffset + h.DataSize
	if end < h.DataOffset || end > 1<<63-1 {
		return -1, errors.New("CARv2 header: data payload past 2^63")
	}
	return int64(end), nil
}

// countingReader counts the bytes go-car consumes, to tell where its
// sections end.
type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// ReadByte keeps go-car's varint reads on the buffered path.
func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}
