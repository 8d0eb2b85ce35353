//go:build nokmem
// +build nokmem

package main

// With the nokmem tag the vendored libcontainer links cgroups/fs/kmem_disabled.go.
const (
	buildFlavour   = "nokmem"
	kmemCodeLinked = false
)
