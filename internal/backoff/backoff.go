// Package backoff computes the waits between retries.
package backoff

import "time"

// Doubling is the wait before retry n (1 for the first): first, doubled
// for each retry after it, at most max.
func Doubling(first, max time.Duration, n int) time.Duration {
	d := first
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}
