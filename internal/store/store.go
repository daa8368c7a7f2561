// Package store keeps vxovl's desired state in an embedded bbolt database.
//
// Docker replays nothing to a remote driver after the plugin restarts (only
// GetCapabilities arrives), so every network, endpoint, IPAM allocation and the
// node's identity live here, committed before the API call that made them
// returns. Values are JSON so that an operator can read them with any bbolt
// viewer and so that fields can be added without a migration. The file's
// format is versioned (SchemaVersion): Open migrates an older file forward
// and refuses one of a newer format.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrUnreadable wraps every failure to open or decode the state file, so the
// plugin can tell "your state is damaged" apart from ordinary I/O errors.
var ErrUnreadable = errors.New("state file unreadable")

// Store is a small bucket/key/JSON-value layer over bbolt.
type Store struct {
	db       *bolt.DB
	path     string
	migrated []Migration
}

// Open opens (creating if needed) the database at path and brings it to
// SchemaVersion (see upgrade). A damaged file, or one of a newer format, is
// never written to: the error says what to do.
func Open(path string) (s *Store, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory for %s: %w", path, err)
	}
	// bbolt has historically panicked on some corrupt files; a panic here must
	// become an error the operator can act on, not a crash loop.
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, unreadable(path, fmt.Errorf("panic while opening: %v", r))
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("state file %s is locked by another process (is a second vxovl running on this host?): %w", path, err)
	}
	if errors.Is(err, fs.ErrPermission) {
		// Not damage: moving the file aside would throw good state away.
		return nil, fmt.Errorf("%w: %s: %v; make it readable and writable by the plugin's user, root "+
			"(chown root:root %s; chmod 600 %s), and restart the plugin",
			ErrUnreadable, path, err, path, path)
	}
	if err != nil {
		return nil, unreadable(path, err)
	}
	st := &Store{db: db, path: path}
	// A full read-only walk catches page-level damage now, at start, rather
	// than as a surprise in the middle of an API call.
	if err := st.check(); err != nil {
		db.Close()
		return nil, err
	}
	if err := st.upgrade(migrations); err != nil {
		db.Close()
		return nil, err
	}
	return st, nil
}

func unreadable(path string, cause error) error {
	return fmt.Errorf("%w: %s: %v; vxovl will not start on state it cannot trust. "+
		"Move the file aside (mv %s %s.broken) and restart the plugin to begin with empty state, "+
		"then recreate the vxovl networks on this host", ErrUnreadable, path, cause, path, path)
}

func (s *Store) check() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = unreadable(s.path, fmt.Errorf("panic while checking: %v", r))
		}
	}()
	return s.db.View(func(tx *bolt.Tx) error {
		// Drain the channel fully: Check's walker goroutine would otherwise
		// block forever holding the transaction open.
		var first error
		for cerr := range tx.Check() {
			if first == nil {
				first = cerr
			}
		}
		if first != nil {
			return unreadable(s.path, first)
		}
		return nil
	})
}

// Path is the database file's location.
func (s *Store) Path() string { return s.path }

// Close releases the database file.
func (s *Store) Close() error { return s.db.Close() }

// Put stores v as JSON under bucket/key, committed (fsynced) on return.
func (s *Store) Put(bucket, key string, v any) error {
	return s.Write(bucket, map[string]any{key: v}, nil)
}

// Delete removes bucket/key; a missing key is not an error.
func (s *Store) Delete(bucket, key string) error {
	return s.Write(bucket, nil, []string{key})
}

// Write stores each of puts as JSON and removes each of deletes (missing
// keys are not an error) in one transaction: one fsync for many changes.
func (s *Store) Write(bucket string, puts map[string]any, deletes []string) error {
	raw := make(map[string][]byte, len(puts))
	for k, v := range puts {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding %s/%s: %w", bucket, k, err)
		}
		raw[k] = b
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			if len(raw) == 0 {
				return nil
			}
			var err error
			if b, err = tx.CreateBucket([]byte(bucket)); err != nil {
				return err
			}
		}
		for k, v := range raw {
			if err := b.Put([]byte(k), v); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
		for _, k := range deletes {
			if err := b.Delete([]byte(k)); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing bucket %s of %s: %w", bucket, s.path, err)
	}
	return nil
}

// Get decodes bucket/key into v and reports whether it existed.
func (s *Store) Get(bucket, key string, v any) (bool, error) {
	var raw []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(bucket)); b != nil {
			if r := b.Get([]byte(key)); r != nil {
				raw = append([]byte(nil), r...)
			}
		}
		return nil
	})
	if err != nil || raw == nil {
		return false, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, unreadable(s.path, fmt.Errorf("record %s/%s: %w", bucket, key, err))
	}
	return true, nil
}

// List decodes every value of bucket with decode, in key order. decode gets
// the raw JSON; a decode error is reported as damaged state.
func (s *Store) List(bucket string, decode func(key string, raw []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if err := decode(string(k), v); err != nil {
				return unreadable(s.path, fmt.Errorf("record %s/%s: %w", bucket, k, err))
			}
			return nil
		})
	})
}

// ListJSON is List for the common case of one Go type per bucket.
func ListJSON[T any](s *Store, bucket string) (map[string]T, error) {
	out := map[string]T{}
	err := s.List(bucket, func(key string, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		out[key] = v
		return nil
	})
	return out, err
}
