// Package builder is the build farm's pubsub job protocol: the requester
// side (offer runnable jobs, assign each to one builder with a lease, accept
// results only from the lease holder signed by a trusted key) and the
// builder side (advertise, claim, fetch inputs through its own gateway,
// build, publish outputs, report).
package builder
