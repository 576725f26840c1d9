package backoff

import (
	"testing"
	"time"
)

func TestDoubling(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{0, time.Second}, {1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second},
		{7, 60 * time.Second}, {8, 60 * time.Second}, {1000, 60 * time.Second},
	} {
		if got := Doubling(time.Second, time.Minute, tc.n); got != tc.want {
			t.Errorf("Doubling(1s, 1m, %d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}
