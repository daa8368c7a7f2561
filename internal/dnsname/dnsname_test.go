package dnsname

import (
	"slices"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	good := []string{"web", "app_web_1", "db.internal", "a1-b2", "x", strings.Repeat("a", 63),
		strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("b", 61)}
	bad := []string{"", "Web", "-web", "web-", "a..b", ".a", "a b", "a/b", "é", strings.Repeat("a", 64),
		strings.Repeat("a.", 127), "web\x00"}
	for _, n := range good {
		if err := Check(n); err != nil {
			t.Errorf("Check(%q) = %v, want ok", n, err)
		}
	}
	for _, n := range bad {
		if Check(n) == nil {
			t.Errorf("Check(%q) accepted", n)
		}
	}
}

func TestNormalize(t *testing.T) {
	got, err := Normalize([]string{"Web", "db.", "web", "", " api "})
	if err != nil || !slices.Equal(got, []string{"api", "db", "web"}) {
		t.Fatalf("Normalize = %v, %v", got, err)
	}
	if _, err := Normalize([]string{"ok", "not ok"}); err == nil {
		t.Fatal("Normalize accepted a bad name")
	}
	many := make([]string, MaxNames+1)
	for i := range many {
		many[i] = "n" + strings.Repeat("x", i)
	}
	if _, err := Normalize(many); err == nil {
		t.Fatal("Normalize accepted too many names")
	}
	if u := Usable(append([]string{"bad name", "Good"}, many...)); len(u) != MaxNames || !slices.Contains(u, "good") {
		t.Fatalf("Usable = %v", u)
	}
}
