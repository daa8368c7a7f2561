package e2e

// Observability tools the lab tests drive, all real: Debian's Prometheus server and promtool,
// and chromium headless. The server and the browser run inside the lab's wire namespace (the
// underlay's own), so they reach every host's METRICS_ADDR as a monitoring box on the hosts'
// network would, and nothing beyond the lab: the wire namespace has no route off the underlay.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

const (
	// promListen is where the lab's Prometheus serves its API: the wire namespace's own
	// loopback, reached by the test through WireClient.
	promListen       = "127.0.0.1:9090"
	promStartTimeout = 30 * time.Second
	promStopTimeout  = 10 * time.Second
	// browserTimeout bounds one chromium run; a first start on a busy 2-core machine takes a
	// few seconds.
	browserTimeout = 90 * time.Second
	// httpTimeout bounds one HTTP request from the wire namespace.
	httpTimeout = 10 * time.Second
)

// requireTools fails the test when a program it drives is not installed.
func requireTools(t testing.TB, bins ...string) {
	t.Helper()
	var missing []string
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("VXOVL_E2E=1 but %s not installed: run `make deps` as root (Debian packages prometheus, chromium)",
			strings.Join(missing, ", "))
	}
}

// WireNetns is the path of the lab's wire namespace (the underlay bridge's).
func (l *Lab) WireNetns() string { return filepath.Join("/run/netns", l.Name+"-wire") }

// WireClient is an HTTP client whose connections start in the lab's wire namespace: it reaches
// the hosts' underlay addresses and the wire namespace's own loopback.
func (l *Lab) WireClient() *http.Client {
	ns := l.WireNetns()
	return &http.Client{
		Timeout: httpTimeout,
		Transport: &http.Transport{
			Proxy: nil, // never the machine's proxy: the lab has no way out
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				timeout := httpTimeout
				if d, ok := ctx.Deadline(); ok {
					timeout = time.Until(d)
				}
				return dialIn(ns, network, addr, timeout)
			},
			MaxIdleConnsPerHost: 2,
		},
	}
}

// GetFromWire fetches url from the wire namespace and returns the body; a status other than
// 200 is an error that quotes the body.
func (l *Lab) GetFromWire(url string) (string, error) {
	c := l.WireClient()
	// An idle connection would keep its socket, and with it the wire namespace, past lab down.
	defer c.CloseIdleConnections()
	return httpGet(c, url)
}

func httpGet(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return "", fmt.Errorf("GET %s: reading the body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("GET %s: %s: %.300s", url, resp.Status, body)
	}
	return string(body), nil
}

// Prometheus is a real Prometheus server (Debian's prometheus package) running in the lab's
// wire namespace, scraping a fixed list of targets. Its config, data and log live under the
// lab dir; it is stopped when the test ends (and lab.sh down would end it too: it runs in a
// lab namespace).
type Prometheus struct {
	Dir  string // config, data dir and log
	Addr string // where its API listens, inside the wire namespace

	client *http.Client
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been waited for
	err    error         // its exit status, valid once exited is closed
}

// StartPrometheus starts a Prometheus server in the wire namespace that scrapes every target
// (host:port, path /metrics) at interval, waits until it is ready (bounded), and stops it when
// the test ends. Each target's instance label is its host:port.
func (l *Lab) StartPrometheus(t testing.TB, interval time.Duration, targets ...string) *Prometheus {
	t.Helper()
	requireTools(t, "prometheus")
	p := &Prometheus{Dir: filepath.Join(l.Dir, "prometheus"), Addr: promListen, client: l.WireClient(), exited: make(chan struct{})}
	if err := os.MkdirAll(filepath.Join(p.Dir, "data"), 0o755); err != nil {
		t.Fatalf("prometheus dir: %v", err)
	}
	cfg := filepath.Join(p.Dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(promConfig(interval, targets)), 0o644); err != nil {
		t.Fatalf("prometheus config: %v", err)
	}
	logPath := filepath.Join(p.Dir, "prometheus.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("prometheus log: %v", err)
	}
	defer logf.Close() // the child has its own copy
	// nsenter execs prometheus: the PID is the server's.
	p.cmd = exec.Command("nsenter", "--net="+l.WireNetns(), "prometheus",
		"--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(p.Dir, "data"),
		"--web.listen-address="+promListen,
		"--log.level=info")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("%v\n%s", err, tail(logPath, 20))
		}
	})
	poll.Until(t, promStartTimeout, "prometheus ready on "+promListen+" in the wire namespace", func() (bool, string) {
		select {
		case <-p.exited:
			t.Fatalf("prometheus exited at start (%v):\n%s", p.err, tail(logPath, 30))
		default:
		}
		_, err := httpGet(p.client, "http://"+promListen+"/-/ready")
		return err == nil, fmt.Sprint(err)
	})
	t.Logf("prometheus (pid %d) ready in %v, scraping %s every %v; dir %s",
		p.cmd.Process.Pid, time.Since(start).Round(10*time.Millisecond), strings.Join(targets, " "), interval, p.Dir)
	return p
}

// promConfig is a Prometheus config with one job, "vxovl", scraping targets at interval (the
// scrape timeout is the interval: Prometheus refuses a longer one).
func promConfig(interval time.Duration, targets []string) string {
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = strconv.Quote(tg)
	}
	iv := promDuration(interval)
	return fmt.Sprintf(`global:
  scrape_interval: %s
  scrape_timeout: %s
  evaluation_interval: %s
scrape_configs:
  - job_name: vxovl
    static_configs:
      - targets: [%s]
`, iv, iv, iv, strings.Join(quoted, ", "))
}

// promDuration writes a duration as Prometheus configs take it (whole milliseconds: "1500ms").
func promDuration(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" }

// Stop ends the server: TERM, then KILL after promStopTimeout (its whole process group, which
// is only itself). Stopping twice is fine.
func (p *Prometheus) Stop() error {
	p.client.CloseIdleConnections()
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(promStopTimeout):
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
	return fmt.Errorf("prometheus (pid %d) ignored TERM for %v: killed", p.cmd.Process.Pid, promStopTimeout)
}

// PromTarget is one scrape target as Prometheus sees it (/api/v1/targets).
type PromTarget struct {
	Labels     map[string]string `json:"labels"`
	ScrapeURL  string            `json:"scrapeUrl"`
	Health     string            `json:"health"` // "up", "down" or "unknown"
	LastError  string            `json:"lastError"`
	LastScrape time.Time         `json:"lastScrape"`
}

// Targets lists the active targets.
func (p *Prometheus) Targets() ([]PromTarget, error) {
	var data struct {
		ActiveTargets []PromTarget `json:"activeTargets"`
	}
	if err := p.api("/api/v1/targets?state=active", &data); err != nil {
		return nil, err
	}
	return data.ActiveTargets, nil
}

// PromSample is one series of an instant query's result.
type PromSample struct {
	Metric map[string]string
	Value  float64
}

// Query evaluates expr now (/api/v1/query) and returns its series; an expression whose result
// is not an instant vector is an error.
func (p *Prometheus) Query(expr string) ([]PromSample, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"` // [unix time, "value as text"]
		} `json:"result"`
	}
	if err := p.api("/api/v1/query?query="+url.QueryEscape(expr), &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: result type %q, want vector", expr, data.ResultType)
	}
	out := make([]PromSample, 0, len(data.Result))
	for _, r := range data.Result {
		text, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v of %v: %w", expr, r.Value[1], r.Metric, err)
		}
		out = append(out, PromSample{Metric: r.Metric, Value: v})
	}
	return out, nil
}

// QueryValue is the value of an expression that must yield exactly one series.
func (p *Prometheus) QueryValue(expr string) (float64, error) {
	s, err := p.Query(expr)
	if err != nil {
		return 0, err
	}
	if len(s) != 1 {
		return 0, fmt.Errorf("query %s: %d series %v, want one", expr, len(s), s)
	}
	return s[0].Value, nil
}

// api GETs a Prometheus API path and decodes the data of a successful answer into data.
func (p *Prometheus) api(path string, data any) error {
	body, err := httpGet(p.client, "http://"+p.Addr+path)
	var resp struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if jerr := json.Unmarshal([]byte(body), &resp); jerr != nil {
		if err != nil {
			return err
		}
		return fmt.Errorf("prometheus %s: %w: %.300s", path, jerr, body)
	}
	if resp.Status != "success" {
		return fmt.Errorf("prometheus %s: %s: %s", path, resp.Status, resp.Error)
	}
	if err := json.Unmarshal(resp.Data, data); err != nil {
		return fmt.Errorf("prometheus %s: decoding data: %w", path, err)
	}
	return nil
}

// CheckMetrics runs `promtool check metrics` (the linter Prometheus ships) on a text exposition
// as a /metrics endpoint serves it. It returns what promtool printed; the error says it found
// problems (or could not run).
func CheckMetrics(t testing.TB, exposition string) (string, error) {
	t.Helper()
	requireTools(t, "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	out, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("promtool check metrics: %w", err)
	}
	return strings.TrimSpace(string(out)), err
}

// Page is a web page as chromium headless rendered it.
type Page struct {
	Screenshot string // PNG path under the lab dir
	DOM        string // the document after load, serialized (--dump-dom)
	Text       string // the DOM's visible text, whitespace collapsed
}

// Browse opens url in chromium headless inside the wire namespace, twice with fresh profiles:
// once for a 1280x1200 screenshot saved as <lab dir>/observe/<name>.png (logged; lab.sh down
// removes the lab dir, so it is also copied to the test's artifact dir, kept by
// `go test -artifacts -outputdir DIR`), once for the DOM, so that a test can assert what the
// screenshot shows.
func (l *Lab) Browse(t testing.TB, url, name string) Page {
	t.Helper()
	requireTools(t, "chromium")
	dir := filepath.Join(l.Dir, "observe")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("browser dir: %v", err)
	}
	p := Page{Screenshot: filepath.Join(dir, name+".png")}
	_ = os.Remove(p.Screenshot)
	start := time.Now()
	if _, err := l.chromium(dir, name+"-shot", "--screenshot="+p.Screenshot, "--window-size=1280,1200", url); err != nil {
		t.Fatalf("screenshot of %s: %v", url, err)
	}
	png, err := os.ReadFile(p.Screenshot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot of %s: no PNG at %s (%v)", url, p.Screenshot, err)
	}
	shot := time.Since(start)
	kept := filepath.Join(t.ArtifactDir(), name+".png")
	if err := os.WriteFile(kept, png, 0o644); err != nil {
		t.Errorf("copying the screenshot to the artifact dir: %v", err)
	}
	start = time.Now()
	dom, err := l.chromium(dir, name+"-dom", "--dump-dom", url)
	if err != nil {
		t.Fatalf("DOM of %s: %v", url, err)
	}
	p.DOM, p.Text = dom, domText(dom)
	t.Logf("chromium: %s: screenshot %s (%d bytes, %v; artifact %s), DOM %d bytes (%v)",
		url, p.Screenshot, len(png), shot.Round(10*time.Millisecond), kept, len(dom), time.Since(start).Round(10*time.Millisecond))
	return p
}

// chromium runs one headless chromium in the wire namespace with a fresh profile under dir
// (its HOME and XDG dirs too: nothing lands in root's home) and returns its stdout. Whatever it
// left running in its process group (zygotes, crash handler) is killed when it returns.
func (l *Lab) chromium(dir, run string, args ...string) (string, error) {
	profile, err := os.MkdirTemp(dir, run+"-profile-")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + l.WireNetns(), "chromium",
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + profile}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+profile, "XDG_CONFIG_HOME="+profile, "XDG_CACHE_HOME="+profile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // ESRCH when nothing is left: fine
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("chromium did not finish within %v", browserTimeout)
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("%w\n%s", err, lastLines(stderr.String(), 20))
	}
	return stdout.String(), nil
}

var (
	reInvisible = regexp.MustCompile(`(?is)<(script|style|head)\b.*?</(script|style|head)>`)
	reTag       = regexp.MustCompile(`(?s)<[^>]*>`)
)

// domText is the text a serialized DOM shows: no head, scripts, styles or tags, entities
// decoded, whitespace collapsed to single spaces.
func domText(dom string) string {
	s := reInvisible.ReplaceAllString(dom, " ")
	s = reTag.ReplaceAllString(s, " ")
	return strings.Join(strings.Fields(html.UnescapeString(s)), " ")
}

// VxovlStatus runs `vxovl status` on host i as its README tells an operator to: the plugin's
// own binary from its rootfs under the docker data root, in the host's network namespace. With
// no args it is given the host's plugin socket (--socket): dockerd keeps a managed plugin's
// socket in /run/docker/plugins/<id>/, which lab.sh binds from <host dir>/run-plugins.
func (l *Lab) VxovlStatus(t testing.TB, i int, args ...string) (string, error) {
	t.Helper()
	id := l.MustDocker(t, i, "plugin", "inspect", "-f", "{{.Id}}", PluginName)
	bin := filepath.Join(l.HostDir(i), "data", "plugins", id, "rootfs", "usr", "bin", "vxovl")
	if len(args) == 0 {
		sock := filepath.Join(l.HostDir(i), "run-plugins", id, "vxovl.sock")
		if len(sock) >= 108 { // sun_path
			t.Fatalf("host %d: plugin socket path %s is too long for a unix socket: use a shorter VXOVL_E2E_LAB_NAME", i, sock)
		}
		args = []string{"--socket", sock}
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + l.Netns(i), bin, "status"}, args...)...).CombinedOutput()
	if err != nil {
		err = fmt.Errorf("host %d: vxovl status %s: %w", i, strings.Join(args, " "), err)
	}
	return strings.TrimRight(string(out), "\n"), err
}

// tail is the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return lastLines(string(b), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
