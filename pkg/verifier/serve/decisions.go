package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyward-dev/keyward/pkg/verifier"
)

// Decision is one verification as the decision log records it. Everything in it is public: never key
// material, and nothing derived from a presented key the verifier does not know (no key ID for an
// unknown or malformed key). A path loses its query, and any occurrence of the presented key, before it is
// recorded.
type Decision struct {
	Time time.Time `json:"time"`
	// Interface is forward_auth, json or ext_authz.
	Interface string        `json:"interface"`
	Code      verifier.Code `json:"code"`
	// Namespace, APIKey and KeyID name the key once it is known to belong to an APIKey.
	Namespace string `json:"namespace,omitempty"`
	APIKey    string `json:"apiKey,omitempty"`
	KeyID     string `json:"keyID,omitempty"`
	// Method, Host and Path are the route as the gateway forwarded it.
	Method string `json:"method,omitempty"`
	Host   string `json:"host,omitempty"`
	Path   string `json:"path,omitempty"`
	// Client is the client address from the header the operator trusts (--decision-log-client-header).
	Client string `json:"client,omitempty"`
	// RequiredScopes and RequiredNamespaces are what the route required; each namespaces entry is one list
	// of which the key's namespace had to be part.
	RequiredScopes     []string `json:"requiredScopes,omitempty"`
	RequiredNamespaces []string `json:"requiredNamespaces,omitempty"`
	// LatencyMicros is the time from the request's arrival at the handler to its decision.
	LatencyMicros int64 `json:"latencyMicros"`
}

// Bounds of the route fields a decision records: they come from the request, so a client could make
// them as long as its headers.
const (
	maxLoggedMethod = 16
	maxLoggedHost   = 255
	maxLoggedPath   = 1024
	maxLoggedClient = 64
)

// Decision log defaults (cmd/verifier's flags).
const (
	DefaultDecisionLogValidSample         = 0.01
	DefaultDecisionLogRejectionsPerSecond = 100
	DefaultDecisionLogBuffer              = 4096
)

// DecisionLogOptions tune a DecisionLog.
type DecisionLogOptions struct {
	// ValidSample is the fraction of valid decisions logged, 0 to 1.
	ValidSample float64
	// RejectionsPerSecond caps the rejections logged, with a burst of as many; those over it are counted.
	RejectionsPerSecond float64
	// Buffer is how many decisions may wait for the writer; when it is full they are counted, not logged.
	Buffer int
	// ClientHeader names the header a trusted proxy puts the client's address in; its last
	// comma-separated element is recorded (the one that proxy added). Empty: no client address.
	ClientHeader string
}

// DecisionLog writes one JSON line per logged decision to a writer, from its own goroutine: a decision
// only hands its record to a bounded queue, so a slow or stuck sink never holds up a verification, and
// decisions that find the queue full are counted in keyward_verifier_decision_log_dropped_total. Every
// rejection is logged up to a rate cap (so a flood of bad keys cannot flood the log); valid decisions are
// sampled.
type DecisionLog struct {
	opts  DecisionLogOptions
	out   io.Writer
	queue chan Decision

	mu     sync.Mutex
	tokens float64
	last   time.Time

	queueFull, overRate atomic.Int64
}

// NewDecisionLog returns a log writing to out; Start runs its writer.
func NewDecisionLog(out io.Writer, opts DecisionLogOptions) *DecisionLog {
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultDecisionLogBuffer
	}
	return &DecisionLog{opts: opts, out: out, queue: make(chan Decision, opts.Buffer), tokens: opts.RejectionsPerSecond}
}

// Sampled reports whether a decision with this code is to be logged, taking a rejection's token from the
// rate cap. The handler asks before it builds the record, so a decision that is not logged costs nothing
// more.
func (l *DecisionLog) Sampled(code verifier.Code, now time.Time) bool {
	if l == nil {
		return false
	}
	if code == verifier.CodeValid {
		return l.opts.ValidSample >= 1 || (l.opts.ValidSample > 0 && rand.Float64() < l.opts.ValidSample)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.tokens = min(l.opts.RejectionsPerSecond, l.tokens+now.Sub(l.last).Seconds()*l.opts.RejectionsPerSecond)
	}
	l.last = now
	if l.tokens < 1 {
		l.overRate.Add(1)
		return false
	}
	l.tokens--
	return true
}

// Record queues d for the writer, or counts it when the queue is full. It never blocks.
func (l *DecisionLog) Record(d Decision) {
	select {
	case l.queue <- d:
	default:
		l.queueFull.Add(1)
	}
}

// Start writes queued decisions until ctx ends, then what is still queued. It implements manager.Runnable.
func (l *DecisionLog) Start(ctx context.Context) error {
	w := bufio.NewWriter(l.out)
	enc := json.NewEncoder(w)
	write := func(d Decision) {
		_ = enc.Encode(d) // a Decision always encodes; a failing sink loses lines, never decisions
	}
	for {
		select {
		case d := <-l.queue:
			write(d)
			if len(l.queue) == 0 {
				_ = w.Flush()
			}
		case <-ctx.Done():
			for {
				select {
				case d := <-l.queue:
					write(d)
				default:
					return w.Flush()
				}
			}
		}
	}
}

// Dropped returns the decisions not logged because the queue was full and those over the rejection cap.
func (l *DecisionLog) Dropped() (queueFull, overRate int64) {
	return l.queueFull.Load(), l.overRate.Load()
}

// Collectors are keyward_verifier_decision_log_dropped_total{reason="queue_full"|"rejection_rate"}.
func (l *DecisionLog) Collectors() []prometheus.Collector {
	counter := func(reason string, f func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "keyward_verifier_decision_log_dropped_total",
			Help:        "Decisions the decision log left out: its queue was full (a slow sink), or a rejection was over the rate cap.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(f()) })
	}
	return []prometheus.Collector{
		counter("queue_full", l.queueFull.Load),
		counter("rejection_rate", l.overRate.Load),
	}
}

// started is when a request reached the handler, for the latency of its decision; zero without a log, so a
// verifier that logs nothing reads no clock for it.
func (l *DecisionLog) started() time.Time {
	if l == nil {
		return time.Time{}
	}
	return time.Now()
}

// decide records the decision res, when the log samples it; key is the presented key, scrubbed from the
// path; start is when the request reached the handler. A nil log records nothing.
// The route is read only then: a decision that is not logged costs a sampling draw and nothing more.
func (l *DecisionLog) decide(iface string, res verifier.Result, req verifier.Requirements, rt func() route, key string, start time.Time) {
	if l == nil {
		return
	}
	if now := time.Now(); l.Sampled(res.Code, now) {
		l.Record(l.decisionOf(iface, res, req, rt(), key, start, now))
	}
}

// decisionOf makes the record of res.
func (l *DecisionLog) decisionOf(iface string, res verifier.Result, req verifier.Requirements, route route, key string, start, now time.Time) Decision {
	d := Decision{Time: now.UTC(), Interface: iface, Code: res.Code, LatencyMicros: now.Sub(start).Microseconds(),
		Method: bounded(route.method, maxLoggedMethod), Host: bounded(route.host, maxLoggedHost), Path: loggedPath(route.path, key)}
	if res.Name != "" { // the key belongs to an APIKey: naming it reveals nothing the presenter did not have
		d.Namespace, d.APIKey, d.KeyID = res.Namespace, res.Name, res.KeyID
	}
	if l.opts.ClientHeader != "" && route.header != nil {
		v := route.header(l.opts.ClientHeader)
		if i := strings.LastIndexByte(v, ','); i >= 0 {
			v = v[i+1:]
		}
		d.Client = bounded(strings.TrimSpace(v), maxLoggedClient)
	}
	d.RequiredScopes, d.RequiredNamespaces = req.Lists()
	return d
}

// route is where a request was going, as the gateway forwarded it, and its headers.
type route struct {
	method, host, path string
	header             func(string) string
}

// loggedPath is p without its query and without any occurrence of the presented key, bounded.
func loggedPath(p, key string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	if key != "" {
		p = strings.ReplaceAll(p, key, "[key]")
	}
	return bounded(p, maxLoggedPath)
}

// bounded cuts s to at most n bytes, dropping a rune the cut would split.
func bounded(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
