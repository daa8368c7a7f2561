package engine

import (
	"slices"
	"strings"
	"testing"
)

func TestEndpointUpdates(t *testing.T) {
	id := strings.Repeat("0123456789ab", 5) + "cdef"
	vx, vx2, other := strings.Repeat("a", 64), strings.Repeat("d", 64), strings.Repeat("b", 64)
	isVX := func(n string) bool { return n == vx || n == vx2 }
	mk := func(name, hostname string, nets map[string]endpointSettings) container {
		var c container
		c.ID, c.Name, c.Config.Hostname, c.NetworkSettings.Networks = id, name, hostname, nets
		return c
	}
	tests := []struct {
		name string
		c    container
		want []Update
	}{{
		name: "Docker 20.10: short ID and hostname among the aliases",
		c: mk("/web", "webhost", map[string]endpointSettings{
			"app": {NetworkID: vx, EndpointID: "e1", Aliases: []string{"frontend", "0123456789ab", "webhost"}},
		}),
		want: []Update{{NetworkID: vx, NetworkName: "app", EndpointID: "e1", ContainerID: id,
			Names: []string{"0123456789ab", "frontend", "web", "webhost"}}},
	}, {
		name: "Docker 25: DNSNames, which also count when nothing else names them",
		c: mk("/web", "webhost", map[string]endpointSettings{
			"app": {NetworkID: vx, EndpointID: "e1", Aliases: []string{"frontend"},
				DNSNames: []string{"web", "frontend", "0123456789ab", "webhost", "extra"}},
		}),
		want: []Update{{NetworkID: vx, NetworkName: "app", EndpointID: "e1", ContainerID: id,
			Names: []string{"0123456789ab", "extra", "frontend", "web", "webhost"}}},
	}, {
		name: "built from the parts when the API has neither",
		c: mk("/App_Web_1", "", map[string]endpointSettings{
			"app": {NetworkID: vx, EndpointID: "e1"},
		}),
		want: []Update{{NetworkID: vx, NetworkName: "app", EndpointID: "e1", ContainerID: id,
			Names: []string{"0123456789ab", "app_web_1"}}},
	}, {
		name: "other drivers' networks and endpoints of a stopped container are left out; one per vxovl network, by name",
		c: mk("/web", "web", map[string]endpointSettings{
			"zeta":   {NetworkID: vx2, EndpointID: "e2", Aliases: []string{"bad alias", "api.internal"}},
			"bridge": {NetworkID: other, EndpointID: "e3"},
			"app":    {NetworkID: vx, EndpointID: "e1"},
			"gone":   {NetworkID: vx, EndpointID: ""},
		}),
		want: []Update{
			{NetworkID: vx, NetworkName: "app", EndpointID: "e1", ContainerID: id, Names: []string{"0123456789ab", "web"}},
			{NetworkID: vx2, NetworkName: "zeta", EndpointID: "e2", ContainerID: id, Names: []string{"0123456789ab", "api.internal", "web"}},
		},
	}, {
		name: "no network",
		c:    mk("/web", "web", nil),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := endpointUpdates(tt.c, isVX)
			if !slices.EqualFunc(got, tt.want, equalUpdate) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestShortID(t *testing.T) {
	for in, want := range map[string]string{"": "", "abc": "abc", strings.Repeat("f", 64): strings.Repeat("f", 12)} {
		if got := shortID(in); got != want {
			t.Errorf("shortID(%q) = %q, want %q", in, got, want)
		}
	}
}
