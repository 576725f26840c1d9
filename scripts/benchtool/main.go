// Command benchtool is the Go half of scripts/bench: it writes the W2
// workload's Nix expression from the Go module cache, drives HTTP load
// against the nixipfs gateway and nginx, and prints the table of medians and
// ratios. scripts/bench runs the commands being measured and records their
// times; this program only does what is awkward in a shell.
//
//	benchtool mkw2 -modroot DIR -bb BBDIR [-limit N] -o FILE
//	benchtool narurls -base URL -list HASHES -o FILE
//	benchtool fetch -base URL -list FILE [-conns N] [-repeat R]
//	benchtool report -results FILE -info FILE
//	benchtool profile -data-dir DIR [-store S] [-cpu F] [-mem F] publish PATH...|render
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "mkw2":
		err = mkw2(args)
	case "narurls":
		err = narURLs(args)
	case "fetch":
		err = fetch(args)
	case "report":
		err = report(args)
	case "profile":
		err = profile(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchtool %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchtool mkw2|narurls|fetch|report|profile [flags]")
	os.Exit(2)
}
