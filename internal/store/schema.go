package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the state format this build reads and writes. Raise it,
// and append a step to migrations, whenever a change to the stored records
// cannot be read by the code as it is (a renamed or re-keyed bucket, a field
// whose zero value means something else than "absent", ...). A field added
// with omitempty, whose zero value is what an older record meant, needs no
// new version.
const SchemaVersion = 1

// The schema version lives apart from the records, under its own bucket.
const (
	bucketMeta = "meta"
	keySchema  = "schema_version"
)

// ErrNewerSchema is returned (wrapped) by Open for a state file written by a
// newer vxovl than this one: it is left untouched.
var ErrNewerSchema = errors.New("state file written by a newer vxovl")

// migration turns the state of format to-1 into format to. It runs in one
// transaction with the stamping of the new version, so it happens entirely
// or not at all; it must still be idempotent (a record already in the new
// shape is left as it is), so that hand-repaired or partly restored files
// migrate too. A step must not use the live record types of driver or ipam:
// they describe the newest format, not the one the step starts from.
type migration struct {
	to    int
	what  string
	apply func(tx *bolt.Tx) error
}

// migrations are the steps from version 0, in order: migrations[i] leads to
// version i+1, and the last to SchemaVersion.
var migrations = []migration{
	{to: 1, what: "stamp the schema version; no record changes", apply: migrateV0toV1},
}

// migrateV0toV1 has nothing to rewrite. Version 0 is the format of the
// release before state was versioned (commit 30c331b), which this build reads
// as it is:
//   - endpoints without Created: the driver stamps the claim at the
//     endpoint's first publish after the start, which that release did at
//     every start anyway (it kept no stamp). No stored value knows the old
//     claim's age: the node's version floor is only an upper bound, which
//     would not keep a lost duplicate-IP claim lost either.
//   - endpoints without Names, networks without Name: learned from the Engine
//     API at start. Networks without NoDNS get the name server, as every
//     network of this release does.
//   - IPAM pools: their IDs are the definition (subnet, range, block size)
//     as this build names the first network of a definition; a pool the old
//     release shared among several networks keeps its "refs" and lives until
//     the last of them is removed. Pools without "creating" are of networks
//     Docker already created, which is what false means.
//   - IPAM allocations still carry the "mac" the old release kept: ignored
//     on reading, dropped when the allocation is next written.
func migrateV0toV1(*bolt.Tx) error { return nil }

// Migration is one step Open applied, for the log.
type Migration struct {
	From, To int
	What     string
}

// Migrations are the steps Open applied to bring the file to SchemaVersion,
// in order; none for a file already current or new.
func (s *Store) Migrations() []Migration { return s.migrated }

// Backup is where Open copied a file before migrating it from version from.
func Backup(path string, from int) string { return fmt.Sprintf("%s.v%d.bak", path, from) }

// upgrade stamps a new file with SchemaVersion, refuses a file of a newer
// format without writing to it, and migrates an older one forward step by
// step, after copying it aside (Backup), so that the operator can go back
// to the release that wrote it.
func (s *Store) upgrade(steps []migration) error {
	target := len(steps)
	var (
		version int
		fresh   bool
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		version, fresh, err = readSchema(tx)
		return err
	})
	if err != nil {
		return unreadable(s.path, err)
	}
	switch {
	case fresh:
		return s.db.Update(func(tx *bolt.Tx) error { return stampSchema(tx, target) })
	case version > target:
		return fmt.Errorf("%w: %s is in state format %d, this vxovl understands formats up to %d. "+
			"Downgrading is not supported: upgrade the plugin to the release that wrote the file (or a newer one); "+
			"to go back to this release, restore the copy the upgrade made (%s) or your own backup of the file, "+
			"taken before the upgrade", ErrNewerSchema, s.path, version, target, Backup(s.path, target))
	case version == target:
		return nil
	}
	backup := Backup(s.path, version)
	if err := s.copyTo(backup); err != nil {
		return fmt.Errorf("copying %s to %s before migrating it from state format %d: %w; nothing was changed",
			s.path, backup, version, err)
	}
	for _, m := range steps[version:] {
		err := s.db.Update(func(tx *bolt.Tx) error {
			if err := m.apply(tx); err != nil {
				return err
			}
			return stampSchema(tx, m.to)
		})
		if err != nil {
			return fmt.Errorf("migrating %s from state format %d to %d (%s): %w; the file is as it was in format %d, "+
				"and a copy of it in format %d is in %s", s.path, m.to-1, m.to, m.what, err, m.to-1, version, backup)
		}
		s.migrated = append(s.migrated, Migration{From: m.to - 1, To: m.to, What: m.what})
	}
	return nil
}

// readSchema reads the version; a file without one is of version 0, unless
// it has no bucket at all (a file just created).
func readSchema(tx *bolt.Tx) (version int, fresh bool, err error) {
	b := tx.Bucket([]byte(bucketMeta))
	if b == nil {
		fresh = true
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { fresh = false; return nil })
		return 0, fresh, nil
	}
	raw := b.Get([]byte(keySchema))
	if raw == nil {
		return 0, false, nil
	}
	if err := json.Unmarshal(raw, &version); err != nil || version < 0 {
		return 0, false, fmt.Errorf("record %s/%s: %q is not a schema version", bucketMeta, keySchema, raw)
	}
	return version, false, nil
}

func stampSchema(tx *bolt.Tx, version int) error {
	b, err := tx.CreateBucketIfNotExists([]byte(bucketMeta))
	if err != nil {
		return err
	}
	return b.Put([]byte(keySchema), []byte(fmt.Sprint(version)))
}

// copyTo writes a consistent copy of the database to path, fsynced.
func (s *Store) copyTo(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = s.db.View(func(tx *bolt.Tx) error { _, err := tx.WriteTo(f); return err })
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
