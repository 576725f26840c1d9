// Package docs holds the user's manual (the Markdown pages in this
// directory) and a test that every relative link in it, and in the
// top-level README, leads somewhere.
package docs
