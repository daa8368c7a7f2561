package status

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// listLimit caps the endpoints the page and the text list per network, so
// that a network of thousands stays readable and quick to render; the JSON
// lists them all.
const listLimit = 200

// WriteJSON writes s as indented JSON.
func WriteJSON(w io.Writer, s Status) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// ReadJSON reads a status written by WriteJSON.
func ReadJSON(r io.Reader) (Status, error) {
	var s Status
	if err := json.NewDecoder(r).Decode(&s); err != nil {
		return Status{}, fmt.Errorf("decoding the vxovl status: %w", err)
	}
	return s, nil
}

// row is one line of a two-column table (settings, health); Bad marks a
// value that needs attention.
type row struct {
	Label, Value string
	Bad          bool
}

func settingRows(s Settings) []row {
	gossip := strconv.Itoa(s.GossipPort) + " (encrypted)"
	if !s.GossipEncrypted {
		gossip = strconv.Itoa(s.GossipPort) + " (NOT encrypted: GOSSIP_KEY unset)"
	}
	peers := strings.Join(s.Peers, ", ")
	if peers == "" {
		peers = "none (waits for others to join it)"
	}
	metrics := s.MetricsAddr
	if metrics == "" {
		metrics = "off"
	}
	return []row{
		{Label: "VXLAN_PORT", Value: strconv.Itoa(s.VXLANPort)},
		{Label: "GOSSIP_PORT", Value: gossip, Bad: !s.GossipEncrypted},
		{Label: "MTU (default)", Value: strconv.Itoa(s.DefaultMTU)},
		{Label: "DEAD_TIMEOUT", Value: s.DeadTimeout.String()},
		{Label: "RECONCILE_INTERVAL", Value: s.ReconcileInterval.String()},
		{Label: "PEERS", Value: peers},
		{Label: "METRICS_ADDR", Value: metrics},
	}
}

func healthRows(h Health, now time.Time) []row {
	count := func(label string, n uint64) row {
		return row{Label: label, Value: strconv.FormatUint(n, 10), Bad: n > 0}
	}
	last := "not yet"
	if !h.LastReconcile.IsZero() {
		last = h.LastReconcile.Format("2006-01-02 15:04:05 MST") + " (" + ago(now, h.LastReconcile) + ")"
	}
	return []row{
		{Label: "last reconcile", Value: last},
		{Label: "reconcile passes", Value: strconv.FormatUint(h.Reconciles, 10)},
		count("drift repairs", h.DriftRepairs),
		count("IP conflicts", h.IPConflicts),
		count("MAC conflicts", h.MACConflicts),
		count("unfinished clean-ups", uint64(h.UnfinishedCleanups)),
		count("sync errors", h.SyncErrors),
		count("network definition conflicts", h.NetworkConflicts),
		count("IPAM block conflicts", h.IPAMConflicts),
		count("gossip decrypt failures", h.GossipDecryptFailures),
		count("gossip malformed records", h.GossipMalformedRecords),
		count("gossip malformed messages", h.GossipMalformedMessages),
	}
}

// ago says how long before now t was, to the second.
func ago(now, t time.Time) string {
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		return "in " + (-d).String()
	}
	return d.String() + " ago"
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// listed returns the endpoints to list and how many are left out.
func listed(eps []Endpoint) ([]Endpoint, int) {
	if len(eps) > listLimit {
		return eps[:listLimit], len(eps) - listLimit
	}
	return eps, 0
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteText writes s for a terminal: warnings first, then aligned tables.
func WriteText(w io.Writer, s Status) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format, a...) }

	p("vxovl on %s (VTEP %s), version %s, at %s\n", s.Host.Node, s.Host.VTEP, s.Host.Version,
		s.Generated.Format("2006-01-02 15:04:05 MST"))
	for _, warning := range s.Warnings {
		p("\n!!! WARNING: %s\n", warning)
	}

	p("\nSETTINGS\n")
	for _, r := range settingRows(s.Host.Settings) {
		p("  %s\t%s\n", r.Label, r.Value)
	}

	p("\nMEMBERS (%d, all alive)\n", len(s.Members))
	p("  NAME\tADDRESS\tGOSSIP PORT\tSTATE\tENDPOINTS\n")
	for _, m := range s.Members {
		name := m.Name
		if m.Self {
			name += " (this host)"
		}
		p("  %s\t%s\t%d\t%s\t%d\n", name, m.Addr, m.Port, m.State, m.Endpoints)
	}

	p("\nNETWORKS (%d)\n", len(s.Networks))
	for _, n := range s.Networks {
		p("\n%s  VNI %d  subnet %s  gateway %s  MTU %d  flood %s  DNS %s\n",
			n.Label(), n.VNI, n.Subnet, orDash(n.Gateway), n.MTU, onOff(n.Flood), onOff(n.DNS))
		p("  id %s; endpoints: %d local, %d remote; programmed: %d neighbor, %d FDB, %d flood; conflicts: %d\n",
			shortID(n.ID), n.LocalEndpoints, n.RemoteEndpoints, n.Neighbors, n.FDB, n.FloodEntries, n.Conflicts)
		eps, more := listed(n.Endpoints)
		if len(eps) > 0 {
			p("  IP\tMAC\tHOST\tWHERE\tNAMES\n")
		}
		for _, ep := range eps {
			p("  %s\t%s\t%s\t%s\t%s\n", ep.IP, ep.MAC, ep.Host, ep.Location, orDash(strings.Join(ep.Names, ",")))
		}
		if more > 0 {
			p("  ... and %d more (vxovl status --json lists all)\n", more)
		}
	}

	p("\nHEALTH (counters since the plugin started)\n")
	for _, r := range healthRows(s.Health, s.Generated) {
		p("  %s\t%s\n", r.Label, r.Value)
	}
	return tw.Flush()
}
