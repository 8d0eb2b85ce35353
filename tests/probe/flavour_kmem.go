//go:build !nokmem
// +build !nokmem

package main

// Without the nokmem tag the vendored libcontainer links cgroups/fs/kmem.go.
const (
	buildFlavour   = "kmem"
	kmemCodeLinked = true
)
