package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type rec struct {
	Name string
	N    int
}

func TestPutGetListDelete(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Put("nets", "a", rec{"a", 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("nets", "b", rec{"b", 2}); err != nil {
		t.Fatal(err)
	}
	var got rec
	ok, err := s.Get("nets", "a", &got)
	if err != nil || !ok || got != (rec{"a", 1}) {
		t.Fatalf("Get = %v %v %v", got, ok, err)
	}
	if ok, _ := s.Get("nets", "zz", &got); ok {
		t.Fatal("missing key reported present")
	}
	if ok, _ := s.Get("nobucket", "a", &got); ok {
		t.Fatal("missing bucket reported present")
	}
	all, err := ListJSON[rec](s, "nets")
	if err != nil || len(all) != 2 || all["b"].N != 2 {
		t.Fatalf("ListJSON = %v, %v", all, err)
	}
	if err := s.Delete("nets", "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("nets", "a"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if err := s.Delete("nobucket", "a"); err != nil {
		t.Fatalf("delete from missing bucket: %v", err)
	}
	all, _ = ListJSON[rec](s, "nets")
	if len(all) != 1 {
		t.Fatalf("after delete: %v", all)
	}
}

func TestSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put("node", "name", "n1"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var name string
	if ok, err := s.Get("node", "name", &name); !ok || err != nil || name != "n1" {
		t.Fatalf("after reopen: %q %v %v", name, ok, err)
	}
}

func TestCorruptFileIsAClearErrorAndNotWiped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	garbage := []byte(strings.Repeat("not a bolt database ", 1000))
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path)
	if !errors.Is(err, ErrUnreadable) {
		t.Fatalf("Open(corrupt) = %v, want ErrUnreadable", err)
	}
	if !strings.Contains(err.Error(), "mv "+path) {
		t.Errorf("error does not tell the way out: %v", err)
	}
	after, _ := os.ReadFile(path)
	if string(after) != string(garbage) {
		t.Fatal("corrupt state file was modified")
	}
}

func TestDamagedRecordIsReported(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Put("nets", "a", "a string, not a rec"); err != nil {
		t.Fatal(err)
	}
	if _, err := ListJSON[rec](s, "nets"); !errors.Is(err, ErrUnreadable) {
		t.Fatalf("ListJSON on damaged record = %v", err)
	}
}

// TestWriteIsOneTransaction: puts and deletes land together, and a value
// that cannot be encoded changes nothing.
func TestWriteIsOneTransaction(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Put("nets", "old", rec{"old", 0}); err != nil {
		t.Fatal(err)
	}
	if err := s.Write("nets", map[string]any{"a": rec{"a", 1}, "b": rec{"b", 2}}, []string{"old", "never-there"}); err != nil {
		t.Fatal(err)
	}
	all, err := ListJSON[rec](s, "nets")
	if err != nil || len(all) != 2 || all["a"].N != 1 || all["b"].N != 2 {
		t.Fatalf("after Write: %v, %v; want a and b only", all, err)
	}
	if err := s.Write("nets", map[string]any{"c": rec{"c", 3}, "bad": make(chan int)}, []string{"a"}); err == nil {
		t.Fatal("Write with an unencodable value succeeded")
	}
	if all, _ := ListJSON[rec](s, "nets"); len(all) != 2 || all["a"].N != 1 {
		t.Fatalf("a failed Write changed the bucket: %v", all)
	}
	if err := s.Write("empty", nil, []string{"x"}); err != nil {
		t.Fatalf("deleting from a missing bucket: %v", err)
	}
}
