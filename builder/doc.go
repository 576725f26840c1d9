// Package builder will hold the pubsub job protocol for distributed builds:
// the requester and builder sides. Not implemented yet; it comes with the
// distributed-builds issue.
package builder
