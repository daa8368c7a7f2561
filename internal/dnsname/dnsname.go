// Package dnsname is the one home of the rules for the DNS names vxovl
// serves for containers: what a valid name is, how names are normalised, and
// how many one endpoint may have. The Engine API watcher, the gossip decoder
// and the DNS server all apply the same rules, so a name one part accepts is
// never refused by another.
package dnsname

import (
	"fmt"
	"slices"
	"strings"
)

const (
	// MaxLen is the longest name in presentation form, without a trailing dot (RFC 1035).
	MaxLen = 253
	// MaxLabelLen is the longest label (RFC 1035).
	MaxLabelLen = 63
	// MaxNames bounds the names of one endpoint: a container's name,
	// hostname, short ID and a handful of aliases fit with room to spare.
	MaxNames = 16
)

// Check reports whether name is usable: 1-253 characters in dot-separated
// labels of 1-63 letters, digits, '-' or '_', neither starting nor ending
// with '-'. The underscore is not in the hostname rules, but Docker allows
// it in container names (compose v1 names containers app_web_1) and its own
// embedded DNS answers them, so vxovl does too.
func Check(name string) error {
	if name == "" || len(name) > MaxLen {
		return fmt.Errorf("DNS name %q must be 1-%d characters", name, MaxLen)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > MaxLabelLen {
			return fmt.Errorf("DNS name %q: each dot-separated label must be 1-%d characters", name, MaxLabelLen)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("DNS name %q: a label cannot start or end with '-'", name)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("DNS name %q: only lower-case letters, digits, '-' and '_' are allowed", name)
			}
		}
	}
	return nil
}

// Normalize lower-cases names, drops a trailing dot, empty names and
// duplicates, and sorts them, so that two lists with the same names compare
// equal. It fails if a name breaks Check or there are more than MaxNames.
func Normalize(names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	for _, n := range names {
		n = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), ".")
		if n == "" {
			continue
		}
		if err := Check(n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > MaxNames {
		return nil, fmt.Errorf("%d DNS names for one endpoint: at most %d", len(out), MaxNames)
	}
	return out, nil
}

// Usable keeps the names Check accepts, normalised, at most MaxNames of
// them. It is for input vxovl does not control (a container's aliases): one
// bad alias must not cost the container its other names.
func Usable(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		n = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), ".")
		if Check(n) == nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > MaxNames {
		out = out[:MaxNames]
	}
	return out
}
