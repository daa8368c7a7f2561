package dataplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vxovl/vxovl/internal/vxlan"
)

// Kinds of Leftover.
const (
	LeftoverNamespace = "overlay namespace" // a pinned vni-<N>, with its bridge, VXLAN device and veths
	LeftoverStalePin  = "stale pin file"    // a vni-<N> file no namespace is mounted on
	LeftoverVxlan     = "vxlan device"      // a temporary VXLAN device (tempVxlanName) left in the host namespace
	LeftoverVeth      = "veth"              // a container end (HostIfName) Docker never moved into a container
	LeftoverIPsec     = "IPsec state"       // the SAs and policies of encrypted networks (reqid XfrmReqID), as one
)

// Leftover is one kernel object of vxovl's dataplane, found by Leftovers.
type Leftover struct {
	Kind string
	// Name is the pin's path for namespaces and pin files, else the link's name.
	Name string
}

func (l Leftover) String() string { return l.Kind + " " + l.Name }

// IsPinName reports whether name is the file name of an overlay namespace's
// pin (NamespacePath): "vni-" and a VNI in canonical decimal.
func IsPinName(name string) bool {
	s, ok := strings.CutPrefix(name, pinPrefix)
	if !ok {
		return false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return err == nil && strconv.FormatUint(n, 10) == s && vxlan.CheckVNI(uint32(n)) == nil
}

// OwnHostLink returns the Leftover kind of a host-namespace link of the
// given type ("vxlan", "veth", ...) that vxovl's dataplane makes, or "" for
// any other link: a temporary VXLAN device is "vxo" and six hex digits
// (tempVxlanName), a container end "vxc" and the first up to 10 hex digits
// of a Docker endpoint ID (HostIfName). Both name and type must match.
func OwnHostLink(name, linkType string) string {
	switch {
	case linkType == "vxlan" && isHexSuffix(name, "vxo", 6, 6):
		return LeftoverVxlan
	case linkType == "veth" && isHexSuffix(name, "vxc", 1, 10):
		return LeftoverVeth
	}
	return ""
}

func isHexSuffix(name, prefix string, minLen, maxLen int) bool {
	s, ok := strings.CutPrefix(name, prefix)
	if !ok || len(s) < minLen || len(s) > maxLen {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// Leftovers lists vxovl's kernel objects: the overlay namespaces pinned
// under dir (and pin files whose namespace is gone), then vxovl's links in
// the calling thread's network namespace (the host's, when run on the host).
// A missing dir has none.
func Leftovers(dir string) ([]Leftover, error) {
	var out []Leftover
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listing overlay namespaces in %s: %w", dir, err)
	}
	for _, e := range entries {
		if !IsPinName(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		kind := LeftoverStalePin
		if IsPinnedNetns(path) {
			kind = LeftoverNamespace
		}
		out = append(out, Leftover{Kind: kind, Name: path})
	}
	h, err := hostHandle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := dump(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	for _, l := range links {
		if kind := OwnHostLink(l.Attrs().Name, l.Type()); kind != "" {
			out = append(out, Leftover{Kind: kind, Name: l.Attrs().Name})
		}
	}
	states, policies, err := xfrmCounts()
	if err != nil {
		return nil, err
	}
	if states+policies > 0 {
		out = append(out, Leftover{Kind: LeftoverIPsec, Name: fmt.Sprintf("(%d SAs, %d policies with reqid %#x)", states, policies, XfrmReqID)})
	}
	return out, nil
}

// RemoveLeftover removes l: a namespace with every link in it (which takes
// the host ends of its veths along) and its pin, a pin file, or a link in
// the calling thread's network namespace. Already gone is success.
func RemoveLeftover(l Leftover) error {
	switch l.Kind {
	case LeftoverNamespace:
		if IsPinnedNetns(l.Name) {
			if err := clearNamespace(l.Name); err != nil {
				return err
			}
		}
		return Unpin(l.Name)
	case LeftoverStalePin:
		if IsPinnedNetns(l.Name) {
			return fmt.Errorf("%s: a namespace is mounted on it again; list the leftovers again", l.Name)
		}
		if err := os.Remove(l.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	case LeftoverVxlan, LeftoverVeth:
		h, err := hostHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		link, err := linkByName(h, l.Name)
		if err != nil || link == nil {
			return err
		}
		// Checked again: the name may have been taken by something else since.
		if OwnHostLink(link.Attrs().Name, link.Type()) != l.Kind {
			return fmt.Errorf("link %s is now a %s, not vxovl's %s: left alone", l.Name, link.Type(), l.Kind)
		}
		return deleteLink(h, l.Name)
	case LeftoverIPsec:
		return RemoveXfrm()
	}
	return fmt.Errorf("unknown kind of leftover %q", l.Kind)
}
