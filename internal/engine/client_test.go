package engine

import "testing"

func TestAgreeVersion(t *testing.T) {
	for server, want := range map[string]string{
		"1.41": "1.41", // Docker 20.10
		"1.43": "1.43",
		"1.44": "1.44",
		"1.51": "1.44", // Docker 28
		"2.3":  "1.44",
		"1.40": "", // Docker 19.03
		"0.99": "",
		"":     "",
		"1":    "",
		"1.x":  "",
		"-1.4": "",
		"1.-4": "",
	} {
		got, err := agreeVersion(server)
		if want == "" {
			if err == nil {
				t.Errorf("agreeVersion(%q) = %q, want an error", server, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("agreeVersion(%q) = %q, %v; want %q", server, got, err, want)
		}
	}
}
