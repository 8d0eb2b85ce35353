// Command probe creates a pod-style v1 memory cgroup the way kubelet's cgroupfs
// driver does (pkg/kubelet/cm/cgroup_manager_linux.go in Kubernetes 1.20), using
// the runc libcontainer code that Kubernetes vendors (runc v1.0.0-rc92).
//
// Built without the `nokmem` tag it links vendor/.../cgroups/fs/kmem.go, and the
// memory controller's Apply writes 1 then -1 to memory.kmem.limit_in_bytes of
// every memory cgroup it creates (the cgroup v1 kmem leak). Built with `nokmem`
// it links kmem_disabled.go and never opens that file. Run it under
// `strace -f -e trace=openat,openat2,write` to see the difference.
//
// See README.md for how it is built (scripts/build-probes.sh) and used.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path"
	"strings"
	"syscall"

	"github.com/opencontainers/runc/libcontainer/cgroups"
	"github.com/opencontainers/runc/libcontainer/cgroups/fs"
	"github.com/opencontainers/runc/libcontainer/configs"
)

const childEnv = "K8S_NOKMEM_PROBE_CHILD"

// Exit codes: 0 ok, 1 the cgroup operation failed, 2 usage error.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() {
	if os.Getenv(childEnv) == "1" {
		// The child only waits until the parent closes its stdin.
		buf := make([]byte, 1)
		_, _ = os.Stdin.Read(buf)
		os.Exit(exitOK)
	}
	os.Exit(run())
}

type options struct {
	parent string
	name   string
	limit  int64
	pid    string
	remove bool
}

func parseArgs() (options, error) {
	var o options
	fl := flag.NewFlagSet("probe", flag.ContinueOnError)
	fl.Usage = func() {
		fmt.Fprintf(fl.Output(), `usage: probe --parent DIR --name NAME [--limit BYTES] [--pid child|self|none] [--remove]

Creates the v1 cgroup /DIR/NAME in every mounted v1 hierarchy with the runc
libcontainer fs manager vendored by Kubernetes (like kubelet's pod cgroups),
puts a process in it, sets memory.limit_in_bytes, then exits.
Build: %s (kmem-enabling code linked: %v)

`, buildFlavour, kmemCodeLinked)
		fl.PrintDefaults()
	}
	fl.StringVar(&o.parent, "parent", "", "parent cgroup, relative to each hierarchy's root (e.g. k8s-nokmem-test-1234)")
	fl.StringVar(&o.name, "name", "", "leaf cgroup name (e.g. pod<uid>)")
	fl.Int64Var(&o.limit, "limit", 64<<20, "memory limit in bytes written to memory.limit_in_bytes")
	fl.StringVar(&o.pid, "pid", "child", "process to apply: child (a short-lived child process), self (this process; it moves back before --remove), none (Apply(-1) as kubelet's Create does)")
	fl.BoolVar(&o.remove, "remove", false, "remove the leaf cgroup afterwards, and the parent in each hierarchy where this run created it")
	if err := fl.Parse(os.Args[1:]); err != nil {
		return o, err
	}
	if fl.NArg() != 0 {
		return o, fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	for flagName, v := range map[string]string{"--parent": o.parent, "--name": o.name} {
		if v == "" {
			return o, fmt.Errorf("%s is required", flagName)
		}
		if strings.Contains(v, "..") || strings.HasPrefix(v, "/") {
			return o, fmt.Errorf("%s %q must be relative and must not contain '..'", flagName, v)
		}
	}
	if o.limit <= 0 {
		return o, fmt.Errorf("--limit must be positive, got %d", o.limit)
	}
	switch o.pid {
	case "child", "self", "none":
	default:
		return o, fmt.Errorf("--pid must be child, self or none, got %q", o.pid)
	}
	return o, nil
}

func run() int {
	o, err := parseArgs()
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "probe: error: %v\n", err)
		return exitUsage
	}
	fmt.Printf("build=%s kmem_code_linked=%v\n", buildFlavour, kmemCodeLinked)
	if err := probe(o); err != nil {
		fmt.Fprintf(os.Stderr, "probe: error: %v\n", err)
		return exitFail
	}
	return exitOK
}

func probe(o options) (err error) {
	cgPath := "/" + path.Join(o.parent, o.name)
	cg := &configs.Cgroup{
		Path: cgPath,
		Resources: &configs.Resources{
			// Memory != 0 makes memoryAssigned() true: the memory controller then
			// creates the directory itself and (without nokmem) enables kmem.
			Memory:      o.limit,
			SkipDevices: true,
		},
	}
	// Where the parent exists before we start: --remove leaves those alone.
	parentExisted := map[string]bool{}
	mounts, err := cgroups.GetCgroupMounts(false)
	if err != nil {
		return fmt.Errorf("failed to list cgroup v1 mounts: %v", err)
	}
	for _, m := range mounts {
		p := path.Join(m.Mountpoint, o.parent)
		if _, statErr := os.Stat(p); statErr == nil {
			parentExisted[p] = true
		}
	}

	pid := -1
	var child *exec.Cmd
	var childIn *os.File
	childKill := false
	switch o.pid {
	case "self":
		pid = os.Getpid()
	case "child":
		exe, exeErr := os.Executable()
		if exeErr != nil {
			return fmt.Errorf("failed to find own executable: %v", exeErr)
		}
		r, w, pipeErr := os.Pipe()
		if pipeErr != nil {
			return fmt.Errorf("failed to create pipe: %v", pipeErr)
		}
		child = exec.Command(exe)
		child.Env = append(os.Environ(), childEnv+"=1")
		child.Stdin = r
		child.Stdout = os.Stdout
		child.Stderr = os.Stderr
		if startErr := child.Start(); startErr != nil {
			// Under qemu-user without binfmt_misc a foreign binary cannot exec
			// itself; any process will do, so fall back to sleep(1), which exits
			// when we kill it.
			sleep, lookErr := exec.LookPath("sleep")
			if lookErr != nil {
				return fmt.Errorf("failed to start child %q: %v (and no sleep in PATH)", exe, startErr)
			}
			fmt.Fprintf(os.Stderr, "probe: note: cannot exec %q (%v); using %q as the child\n", exe, startErr, sleep)
			child = exec.Command(sleep, "600")
			child.Stdout = os.Stdout
			child.Stderr = os.Stderr
			if startErr := child.Start(); startErr != nil {
				return fmt.Errorf("failed to start child %q: %v", sleep, startErr)
			}
			childKill = true
		}
		r.Close()
		childIn = w
		pid = child.Process.Pid
	}
	stopChild := func() {
		if child != nil {
			childIn.Close()
			if childKill {
				_ = child.Process.Kill()
			}
			_ = child.Wait()
			child = nil
		}
	}
	defer stopChild()

	// Same calls as kubelet's cgroupManagerImpl.Create: NewManager, Apply.
	manager := fs.NewManager(cg, nil, false)
	if err := manager.Apply(pid); err != nil {
		return fmt.Errorf("failed to apply pid %d to cgroup %q: %v", pid, cgPath, err)
	}
	paths := manager.GetPaths()
	memPath := paths["memory"]
	if memPath == "" {
		return fmt.Errorf("no v1 memory hierarchy mounted (cgroup %q got no memory path)", cgPath)
	}
	fmt.Printf("cgroup=%s\nmemory_path=%s\npid=%d\n", cgPath, memPath, pid)

	// Same as kubelet's Update (setSupportedSubsystemsV1): the memory
	// controller's Set on its path.
	memory := &fs.MemoryGroup{}
	if err := memory.Set(memPath, cg); err != nil {
		return fmt.Errorf("failed to set memory limit %d on %q: %v", o.limit, memPath, err)
	}
	fmt.Printf("memory_limit=%d\n", o.limit)

	if !o.remove {
		return nil
	}
	stopChild()
	if o.pid == "self" {
		// Move back to each hierarchy's root so that the leaf can go.
		for _, p := range paths {
			root, rootErr := hierarchyRoot(p, mounts)
			if rootErr != nil {
				return rootErr
			}
			if err := cgroups.WriteCgroupProc(root, os.Getpid()); err != nil {
				return fmt.Errorf("failed to move pid %d back to %q: %v", os.Getpid(), root, err)
			}
		}
	}
	if err := manager.Destroy(); err != nil {
		return fmt.Errorf("failed to remove cgroup %q: %v", cgPath, err)
	}
	for _, m := range mounts {
		p := path.Join(m.Mountpoint, o.parent)
		if parentExisted[p] {
			continue
		}
		if err := syscall.Rmdir(p); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("failed to remove parent cgroup %q: %v", p, err)
		}
	}
	fmt.Printf("removed=%s\n", cgPath)
	return nil
}

func hierarchyRoot(p string, mounts []cgroups.Mount) (string, error) {
	for _, m := range mounts {
		if strings.HasPrefix(p, m.Mountpoint+"/") {
			return m.Mountpoint, nil
		}
	}
	return "", fmt.Errorf("no cgroup mount holds %q", p)
}
