package cluster

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
)

// notifier coalesces change notifications and delivers them from one
// goroutine, so a burst of 10,000 records becomes one call per kind and
// scope (for endpoints: per VNI).
type notifier struct {
	mu      sync.Mutex
	pending changes
	wake    chan struct{}
}

func newNotifier() *notifier {
	return &notifier{pending: changes{}, wake: make(chan struct{}, 1)}
}

func (n *notifier) add(ch changes) {
	if len(ch) == 0 {
		return
	}
	n.mu.Lock()
	for kind, scopes := range ch {
		if n.pending[kind] == nil {
			n.pending[kind] = map[string]struct{}{}
		}
		for s := range scopes {
			n.pending[kind][s] = struct{}{}
		}
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifier) take() changes {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := n.pending
	n.pending = changes{}
	return ch
}

func (n *notifier) run(stop <-chan struct{}, deliver func(changes)) {
	for {
		select {
		case <-stop:
			return
		case <-n.wake:
			deliver(n.take())
		}
	}
}

// logBridge feeds memberlist's log.Logger lines into slog and counts the
// lines that mean "dropped: not encrypted with our key", which memberlist
// reports only through its log.
type logBridge struct {
	log      *slog.Logger
	decrypts *atomic.Uint64
}

var decryptMarkers = []string{
	"Decrypt packet failed",
	"could decrypt the message",
	"remote state is not encrypted",
	"encryption is not configured",
	"too small to decrypt",
}

func (b *logBridge) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError, "[ERROR]": slog.LevelError} {
		if strings.HasPrefix(line, prefix) {
			level = l
			line = strings.TrimSpace(strings.TrimPrefix(line, prefix))
			break
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	for _, m := range decryptMarkers {
		if strings.Contains(line, m) {
			b.decrypts.Add(1)
			line += " (is SecretKey the same on every node?)"
			level = slog.LevelWarn
			break
		}
	}
	b.log.Log(context.Background(), level, line, "component", "memberlist")
	return len(p), nil
}
