package kerneltest

import "testing"

func TestWithoutRoot(t *testing.T) {
	for _, c := range []struct {
		euid     int
		env      map[string]string
		run      bool
		wantFail bool
	}{
		{euid: 0, env: map[string]string{"CI": "true", "VXOVL_REQUIRE_ROOT": "1"}, run: true},
		{euid: 1000, env: nil},
		{euid: 1000, env: map[string]string{"CI": "false"}},
		{euid: 1000, env: map[string]string{"VXOVL_REQUIRE_ROOT": "0"}},
		{euid: 1000, env: map[string]string{"CI": "true"}, wantFail: true},
		{euid: 1000, env: map[string]string{"CI": "1"}, wantFail: true},
		{euid: 1000, env: map[string]string{"VXOVL_REQUIRE_ROOT": "1"}, wantFail: true},
	} {
		fail, msg := withoutRoot(c.euid, func(k string) string { return c.env[k] })
		if (msg == "") != c.run || fail != c.wantFail {
			t.Errorf("euid %d, env %v: fail=%v msg=%q; want run=%v fail=%v", c.euid, c.env, fail, msg, c.run, c.wantFail)
		}
	}
}
