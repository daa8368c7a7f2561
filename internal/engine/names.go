package engine

import (
	"slices"
	"strings"

	"github.com/vxovl/vxovl/internal/dnsname"
)

// Update is what the watcher learned about one endpoint on a vxovl network.
type Update struct {
	NetworkID   string
	NetworkName string
	// EndpointID is empty in an update that only names a network (one this
	// host has no container on yet).
	EndpointID  string
	ContainerID string
	// Names is the endpoint's complete set of DNS names, normalised by
	// dnsname.Usable: it replaces whatever an earlier update said.
	Names []string
}

// container is the part of GET /containers/{id}/json that names endpoints.
type container struct {
	ID     string `json:"Id"`
	Name   string // "/web"
	Config struct {
		Hostname string
	}
	NetworkSettings struct {
		Networks map[string]endpointSettings // by network name
	}
}

// endpointSettings is one entry of NetworkSettings.Networks, in the
// container inspect and in the container list alike.
type endpointSettings struct {
	NetworkID  string
	EndpointID string // empty while the container is not running
	// Aliases are the --network-alias names (compose adds the service
	// name). Before API 1.45 Docker also put the short ID and the hostname
	// here.
	Aliases []string
	// DNSNames (API 1.44, Docker 25) is every name Docker's own DNS serves
	// for the endpoint: name, aliases, short ID, hostname.
	DNSNames []string
}

// shortIDLen is the length of the container ID prefix Docker shows and
// resolves as a name.
const shortIDLen = 12

// endpointUpdates lists an update for each endpoint c has on a network
// managed reports true for, ordered by network name. Its names are the
// ones Docker's own DNS answers on a user-defined network, in every API
// version: the container's name, its aliases, its short ID and its
// hostname, plus DNSNames where the API has them. Docker 20.10 has no
// DNSNames and puts the short ID and hostname among the aliases; Docker 25
// lists all of them in DNSNames; building the set from its parts gives the
// same answer from both.
func endpointUpdates(c container, managed func(networkID string) bool) []Update {
	var out []Update
	for netName, es := range c.NetworkSettings.Networks {
		if es.EndpointID == "" || es.NetworkID == "" || !managed(es.NetworkID) {
			continue
		}
		names := make([]string, 0, 3+len(es.Aliases)+len(es.DNSNames))
		names = append(names, strings.TrimPrefix(c.Name, "/"), shortID(c.ID), c.Config.Hostname)
		names = append(names, es.Aliases...)
		names = append(names, es.DNSNames...)
		out = append(out, Update{
			NetworkID:   es.NetworkID,
			NetworkName: netName,
			EndpointID:  es.EndpointID,
			ContainerID: c.ID,
			Names:       dnsname.Usable(names),
		})
	}
	slices.SortFunc(out, func(a, b Update) int { return strings.Compare(a.NetworkName, b.NetworkName) })
	return out
}

// shortID is the first 12 characters of a Docker ID, as Docker shows it;
// also how IDs are logged.
func shortID(id string) string {
	if len(id) > shortIDLen {
		return id[:shortIDLen]
	}
	return id
}
