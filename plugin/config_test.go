package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// envOf is an environment holding exactly m, for configFromEnv.
func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestConfigDefaults(t *testing.T) {
	c, err := configFromEnv(envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.GossipPort != 7947 || c.VXLANPort != 4789 || c.DeadTimeout != 10*time.Second || c.LogLevel != slog.LevelInfo ||
		c.StateDir != "/var/lib/vxovl" || c.NetnsDir != "/run/vxovl-netns" || c.AdvertiseAddr != nil || len(c.Peers) != 0 ||
		c.MetricsAddr != "127.0.0.1:9747" || c.EncryptedPort != 4800 || c.KeyRotation != time.Hour {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestConfigParsesEverything(t *testing.T) {
	c, err := configFromEnv(envOf(map[string]string{
		"PEERS": " 10.98.0.2, 10.98.0.3:7000 ,", "ADVERTISE_ADDR": "10.98.0.1", "GOSSIP_PORT": "7000",
		"VXLAN_PORT": "4790", "GOSSIP_KEY": "MDEyMzQ1Njc4OWFiY2RlZg==", "MTU": "1400", "NODE_NAME": "h1",
		"LOG_LEVEL": "debug", "DEAD_TIMEOUT": "5s", "RECONCILE_INTERVAL": "2s",
		"ENCRYPTED_VXLAN_PORT": "4801", "KEY_ROTATION": "10m",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Peers, "|") != "10.98.0.2|10.98.0.3:7000" || c.AdvertiseAddr.String() != "10.98.0.1" ||
		c.GossipPort != 7000 || c.VXLANPort != 4790 || len(c.GossipKey) != 16 || c.MTU != 1400 || c.NodeName != "h1" ||
		c.LogLevel != slog.LevelDebug || c.DeadTimeout != 5*time.Second || c.ReconcileInterval != 2*time.Second ||
		c.EncryptedPort != 4801 || c.KeyRotation != 10*time.Minute {
		t.Fatalf("parsed: %+v", c)
	}
}

func TestConfigBadValuesNameTheVariable(t *testing.T) {
	for k, v := range map[string]string{
		"ADVERTISE_ADDR": "not-an-ip", "GOSSIP_PORT": "70000", "VXLAN_PORT": "x", "GOSSIP_KEY": "c2hvcnQ=",
		"MTU": "100", "LOG_LEVEL": "loud", "DEAD_TIMEOUT": "1ms", "RECONCILE_INTERVAL": "soon",
		"ENCRYPTED_VXLAN_PORT": "0", "KEY_ROTATION": "1s",
	} {
		_, err := configFromEnv(envOf(map[string]string{k: v}))
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: err = %v", k, v, err)
		}
	}
	for name, env := range map[string]map[string]string{
		"VXLAN_PORT":   {"GOSSIP_PORT": "4789"}, // the default VXLAN port
		"DEAD_TIMEOUT": {"DEAD_TIMEOUT": "1h"},  // beyond the cluster's removal records
		// encrypted networks need their own port for the IPsec policies
		"ENCRYPTED_VXLAN_PORT": {"ENCRYPTED_VXLAN_PORT": "4789"},
	} {
		if _, err := configFromEnv(envOf(env)); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: err = %v, want one naming %s", env, err, name)
		}
	}
	_, err := configFromEnv(envOf(map[string]string{"GOSSIP_KEY": "c2hvcnQ="}))
	if strings.Contains(err.Error(), "c2hvcnQ") {
		t.Error("the key leaked into the error message")
	}
}

func TestConfigMetricsAddr(t *testing.T) {
	for v, want := range map[string]string{
		"":                "", // set to nothing: off
		"  ":              "",
		"10.98.0.1:9000":  "10.98.0.1:9000",
		" 0.0.0.0:9747 ":  "0.0.0.0:9747",
		"[::1]:9747":      "[::1]:9747",
		"127.0.0.1:65535": "127.0.0.1:65535",
		"10.98.0.1:7948":  "10.98.0.1:7948",
	} {
		c, err := configFromEnv(envOf(map[string]string{"METRICS_ADDR": v}))
		if err != nil || c.MetricsAddr != want {
			t.Errorf("METRICS_ADDR=%q: %q, %v; want %q", v, c.MetricsAddr, err, want)
		}
	}
	for _, v := range []string{"9747", ":9747", "localhost:9747", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0",
		"127.0.0.1:70000", "127.0.0.1:http", "http://127.0.0.1:9747", "127.0.0.1:9747/metrics", "127.0.0.1:7947"} {
		_, err := configFromEnv(envOf(map[string]string{"METRICS_ADDR": v}))
		if err == nil || !strings.Contains(err.Error(), "METRICS_ADDR") {
			t.Errorf("METRICS_ADDR=%q: err = %v, want one naming METRICS_ADDR", v, err)
		}
	}
	// The gossip port is the one configured.
	if _, err := configFromEnv(envOf(map[string]string{"GOSSIP_PORT": "9747"})); err == nil || !strings.Contains(err.Error(), "GOSSIP_PORT's (9747)") {
		t.Errorf("default METRICS_ADDR on GOSSIP_PORT 9747: err = %v", err)
	}
}
