package dataplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Namespaces are pinned by bind-mounting a thread's /proc/thread-self/ns/net
// onto a plain file, the same trick `ip netns add` uses. The pin keeps the
// namespace alive after every process inside it is gone, so overlay networks
// outlive plugin restarts and can be re-adopted.

// Do runs fn with the calling goroutine's work moved into the network
// namespace pinned at nsPath. fn runs on a dedicated, locked OS thread; the
// caller's thread never changes namespace. Goroutines started by fn do not
// inherit the namespace. If switching back fails, the thread is left locked so
// the Go runtime destroys it instead of reusing a thread in a foreign namespace.
func Do(nsPath string, fn func() error) error {
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	defer target.Close()

	return onSwitchedThread(func() error {
		if err := netns.Set(target); err != nil {
			return fmt.Errorf("enter network namespace %s: %w", nsPath, err)
		}
		return nil
	}, fn)
}

// onSwitchedThread runs enter and then fn on a fresh goroutine locked to its
// OS thread, and switches that thread back to its original network namespace
// afterwards. enter must leave the thread where it was when it fails. If
// switching back fails, the thread stays locked so that the Go runtime
// destroys it with the goroutine instead of reusing a thread in a foreign
// namespace.
func onSwitchedThread(enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// fn may end this goroutine without returning: runtime.Goexit, which
		// is what t.Fatal does when a test calls it in namespace work. The
		// deferred send still answers the caller (who would otherwise wait
		// forever), and the thread, maybe still in the other namespace, stays
		// locked and dies with the goroutine.
		err := errors.New("namespace work ended without returning (runtime.Goexit; in a test: t.Fatal inside Do, which must return an error instead)")
		defer func() { errc <- err }()
		err = switchedRun(enter, fn)
	}()
	return <-errc
}

// switchedRun is onSwitchedThread's work on its locked thread. It unlocks the
// thread only once the thread is back in its original namespace.
func switchedRun(enter, fn func() error) error {
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current network namespace: %w", err)
	}
	defer orig.Close()
	if err := enter(); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	fnErr := recovered(fn)
	if err := netns.Set(orig); err != nil {
		// Deliberately no UnlockOSThread: the thread dies with its goroutine.
		return errors.Join(fnErr, fmt.Errorf("restore network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// recovered runs fn and turns a panic into an error: fn runs on a goroutine
// of its own, where a panic would end the whole plugin, not one API call.
func recovered(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in namespace work: %v", r)
		}
	}()
	return fn()
}

// handleIn opens a netlink socket in ns. It is made on a switched thread
// rather than with netlink.NewHandleAt, which switches the caller's own
// thread and ignores a failure to switch it back.
func handleIn(ns netns.NsHandle) (h *netlink.Handle, err error) {
	err = onSwitchedThread(func() error { return netns.Set(ns) }, func() error {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	return h, err
}

// CreatePinned creates a new, empty network namespace and pins it at path.
// The parent directory is created if needed. It fails if path already holds a
// live namespace; a stale file (not an nsfs mount) at path is replaced.
func CreatePinned(path string) error {
	if IsPinnedNetns(path) {
		return fmt.Errorf("create network namespace at %s: %w", path, os.ErrExist)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create namespace pin directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale namespace pin %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create namespace pin file: %w", err)
	}
	f.Close()

	err = onSwitchedThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare network namespace: %w", err)
		}
		return nil
	}, func() error {
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pin network namespace at %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
		return err
	}
	return nil
}

// PinAgain pins the namespace pinned at src at dst as well (a bind mount),
// creating dst's directory and file; a stale file at dst is replaced.
func PinAgain(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("create namespace pin directory: %w", err)
	}
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale namespace pin %s: %w", dst, err)
	}
	f, err := os.OpenFile(dst, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create namespace pin file: %w", err)
	}
	f.Close()
	if err := unix.Mount(src, dst, "none", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(dst)
		return fmt.Errorf("pin the namespace of %s at %s: %w", src, dst, err)
	}
	return nil
}

// Unpin unmounts and removes a namespace pin. The namespace itself is freed by
// the kernel once nothing else (process, open fd, other mount) refers to it.
// A missing pin is not an error.
func Unpin(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount namespace pin %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove namespace pin %s: %w", path, err)
	}
	return nil
}

// IsPinnedNetns reports whether path is a live network namespace reference
// (an nsfs mount or /proc/<pid>/ns/net link), as opposed to a plain file.
func IsPinnedNetns(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}
