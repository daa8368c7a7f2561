package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/vxovl/vxovl/internal/dataplane"
)

// hostNetnsDir is where the plugin's overlay namespaces are pinned as seen
// from the host: the default source of config.json's `netns` mount, which
// the plugin sees as NETNS_DIR. cleanup runs on the host, so it looks here.
const hostNetnsDir = "/run/vxovl"

// cleanupCommand is `vxovl cleanup [--netns-dir DIR] [--dry-run]`, for a
// host where the plugin will not start again (after `docker plugin rm`): it
// removes the overlay namespaces pinned under DIR (with their bridges, VXLAN
// devices and veths) and vxovl's links in this network namespace, and
// nothing else (dataplane.OwnHostLink). Running it again finds nothing.
// Exit 0 when nothing is left, 1 when something could not be removed, 2 for
// bad usage.
func cleanupCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vxovl cleanup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("netns-dir", hostNetnsDir, "host directory where the plugin pinned its overlay namespaces (the source of its netns mount)")
	dry := fs.Bool("dry-run", false, "list what would be removed, remove nothing")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: vxovl cleanup [--netns-dir DIR] [--dry-run]\n\n"+
			"Removes what vxovl left in the kernel on a host where the plugin will not run again: run it as root on\n"+
			"the host after `docker plugin rm`. Do not run it while the plugin is enabled: its containers lose their network.\n\n")
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	return cleanup(*dir, *dry, stdout, stderr)
}

func cleanup(dir string, dry bool, stdout, stderr io.Writer) int {
	found, err := dataplane.Leftovers(dir)
	if err != nil {
		fmt.Fprintf(stderr, "vxovl cleanup: %v\n", err)
		return 1
	}
	if len(found) == 0 {
		fmt.Fprintf(stdout, "nothing of vxovl's left (namespaces under %s, vxovl's links and IPsec state in this host's namespace)\n", dir)
		return 0
	}
	if dry {
		for _, l := range found {
			fmt.Fprintf(stdout, "would remove %s\n", l)
		}
		return 0
	}
	failed := 0
	for _, l := range found {
		if err := dataplane.RemoveLeftover(l); err != nil {
			fmt.Fprintf(stderr, "could not remove %s: %v\n", l, err)
			failed++
			continue
		}
		fmt.Fprintf(stdout, "removed %s\n", l)
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "vxovl cleanup: %d of %d not removed; fix the cause and run it again\n", failed, len(found))
		return 1
	}
	return 0
}
