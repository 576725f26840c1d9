package daemon

import (
	"testing"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
)

// Hot blocks are on by default only without a NAR cache; a size given is
// taken as it is.
func TestHotBlocks(t *testing.T) {
	for _, c := range []struct {
		hot, narCache, want int64
	}{
		{-1, 0, ipfsnode.DefaultHotBlocks()},
		{-1, 4 << 30, 0},
		{0, 0, 0},
		{64 << 20, 0, 64 << 20},
		{64 << 20, 4 << 30, 64 << 20},
	} {
		if got := hotBlocks(c.hot, c.narCache); got != c.want {
			t.Errorf("hotBlocks(%d, %d) = %d, want %d", c.hot, c.narCache, got, c.want)
		}
	}
}
