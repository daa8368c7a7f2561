package store

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vxovl/vxovl/internal/store/storetest"
	bolt "go.etcd.io/bbolt"
)

// dump is every record of the file at path, bucket/key -> value, read
// without opening it through Open.
func dump(t *testing.T, path string) map[string]string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]string{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error { out[string(name)+"/"+string(k)] = string(v); return nil })
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMigrationsLeadToSchemaVersion(t *testing.T) {
	if len(migrations) != SchemaVersion {
		t.Fatalf("%d migrations for schema version %d", len(migrations), SchemaVersion)
	}
	for i, m := range migrations {
		if m.to != i+1 || m.what == "" || m.apply == nil {
			t.Errorf("migrations[%d] = {to %d, %q}: want a described step to %d", i, m.to, m.what, i+1)
		}
	}
}

// TestOpenMigratesThePreviousFormat opens a state file written by the
// release before versioning (commit 30c331b; see testdata/state-v0-generator):
// it is stamped with the current version, a copy of it is kept, its records
// are what they were, and a second Open changes nothing.
func TestOpenMigratesThePreviousFormat(t *testing.T) {
	path := storetest.StateV0(t)
	before := dump(t, path)
	if _, ok := before[bucketMeta+"/"+keySchema]; ok {
		t.Fatal("testdata/state-v0.db has a schema version")
	}
	// The shapes of the previous release, as stored: the test is about them.
	for _, want := range []string{
		"networks/n1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"endpoints/e1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
		"peers/00000042", "ipam-pools/vxovl:10.10.0.0/24", "ipam-allocs/10.10.0.208", "ipam-owned/10.10.0.208/28", "node/name",
	} {
		if _, ok := before[want]; !ok {
			t.Fatalf("testdata/state-v0.db lacks %s: %v", want, slices.Sorted(maps.Keys(before)))
		}
	}

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Migration{{From: 0, To: 1, What: migrations[0].what}}
	if got := s.Migrations(); !slices.Equal(got, want) {
		t.Fatalf("Migrations() = %v, want %v", got, want)
	}
	var name string
	if ok, err := s.Get("node", "name", &name); !ok || err != nil || name != "oldhost-a1b2c3" {
		t.Fatalf("node name after migration: %q %v %v", name, ok, err)
	}
	s.Close()

	after := dump(t, path)
	if v := after[bucketMeta+"/"+keySchema]; v != fmt.Sprint(SchemaVersion) {
		t.Fatalf("schema version after Open = %q, want %d", v, SchemaVersion)
	}
	delete(after, bucketMeta+"/"+keySchema)
	if !maps.Equal(before, after) {
		t.Fatalf("records changed by the migration:\nbefore %v\nafter  %v", before, after)
	}
	if backup := dump(t, Backup(path, 0)); !maps.Equal(before, backup) {
		t.Fatalf("the copy taken before migrating is not the file as it was:\n%v\n%v", before, backup)
	}

	stamped := readFile(t, path)
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Migrations(); len(got) != 0 {
		t.Fatalf("second Open migrated again: %v", got)
	}
	s.Close()
	if !bytes.Equal(stamped, readFile(t, path)) {
		t.Fatal("second Open of a current file changed it")
	}
}

func TestNewFileIsOfTheCurrentVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Migrations(); len(got) != 0 {
		t.Fatalf("a new file was migrated: %v", got)
	}
	s.Close()
	if v := dump(t, path)[bucketMeta+"/"+keySchema]; v != fmt.Sprint(SchemaVersion) {
		t.Fatalf("schema version of a new file = %q, want %d", v, SchemaVersion)
	}
	if _, err := os.Stat(Backup(path, 0)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a new file was copied aside: %v", err)
	}
}

// writeRaw makes a bbolt file at path holding records (bucket/key -> value).
func writeRaw(t *testing.T, path string, records map[string]string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		for k, v := range records {
			bucket, key, _ := strings.Cut(k, "/")
			b, err := tx.CreateBucketIfNotExists([]byte(bucket))
			if err != nil {
				return err
			}
			if err := b.Put([]byte(key), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestNewerFormatIsRefusedUntouched: a file of a format this build does not
// know is refused with the versions and the way out, and not written to.
func TestNewerFormatIsRefusedUntouched(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	writeRaw(t, path, map[string]string{
		bucketMeta + "/" + keySchema: fmt.Sprint(SchemaVersion + 1),
		"networks/n1":                `{"ID":"n1","SomethingNew":true}`,
	})
	before := readFile(t, path)
	_, err := Open(path)
	if !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("Open(newer format) = %v, want ErrNewerSchema", err)
	}
	for _, want := range []string{
		fmt.Sprintf("state format %d", SchemaVersion+1), fmt.Sprintf("up to %d", SchemaVersion),
		"Downgrading is not supported", "upgrade the plugin", Backup(path, SchemaVersion),
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if !bytes.Equal(before, readFile(t, path)) {
		t.Fatal("a refused file was modified")
	}
	if _, err := os.Stat(Backup(path, SchemaVersion+1)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused file was copied aside: %v", err)
	}
}

func TestUnreadableSchemaVersionIsUntouched(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	writeRaw(t, path, map[string]string{bucketMeta + "/" + keySchema: `"one"`, "node/name": `"h1"`})
	before := readFile(t, path)
	_, err := Open(path)
	if !errors.Is(err, ErrUnreadable) || !strings.Contains(err.Error(), "mv "+path) {
		t.Fatalf("Open(bad schema version) = %v, want ErrUnreadable with the way out", err)
	}
	if !bytes.Equal(before, readFile(t, path)) {
		t.Fatal("the file was modified")
	}
}

// TestFailedStepChangesNothing: a step that fails leaves the file in the
// version before it, its writes undone; the steps before it stay done.
func TestFailedStepChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	writeRaw(t, path, map[string]string{"node/name": `"h1"`})
	broken := errors.New("broken step")
	steps := []migration{
		migrations[0],
		{to: 2, what: "rename node to nodes", apply: func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket([]byte("nodes"))
			if err != nil {
				return err
			}
			if err := b.Put([]byte("name"), []byte(`"h1"`)); err != nil {
				return err
			}
			return broken
		}},
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{db: db, path: path}
	err = s.upgrade(steps)
	db.Close()
	if !errors.Is(err, broken) || !strings.Contains(err.Error(), "from state format 1 to 2 (rename node to nodes)") {
		t.Fatalf("upgrade with a failing step = %v", err)
	}
	got := dump(t, path)
	want := map[string]string{"node/name": `"h1"`, bucketMeta + "/" + keySchema: "1"}
	if !maps.Equal(got, want) {
		t.Fatalf("after a failed step: %v, want %v", got, want)
	}
}
