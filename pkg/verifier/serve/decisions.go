package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyward-dev/keyward/internal/keys"
	"github.com/keyward-dev/keyward/pkg/verifier"
)

// Decision is one verification as the decision log records it. Everything in it is public: never key
// material, and nothing derived from a presented key the verifier does not know (no key ID for an
// unknown or malformed key). A path loses its query and is percent-decoded, and every key in it or in the
// host, presented or not, becomes [key], before it is recorded.
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

// Decision log defaults (cmd/verifier's flags). The log is complete by default, as an audit trail must be:
// every decision on a key the verifier knows is written, rejections of known keys up to a budget per
// namespace, and rejections of unknown, malformed or missing keys up to a budget of their own, so that a
// flood of made-up keys cannot crowd out the lines about a tenant's real keys.
const (
	DefaultDecisionLogValidSample         = 1
	DefaultDecisionLogRejectionsPerSecond = 100
	DefaultDecisionLogUnknownPerSecond    = 100
	DefaultDecisionLogBuffer              = 4096
)

// maxBudgetNamespaces bounds the namespaces with a rejection budget of their own; beyond it (a cluster with
// more namespaces whose keys are refused within one refill) they share one.
const maxBudgetNamespaces = 4096

// DecisionLogOptions tune a DecisionLog.
type DecisionLogOptions struct {
	// ValidSample is the fraction of valid decisions logged, 0 to 1.
	ValidSample float64
	// RejectionsPerSecond caps the rejections of known keys (expired, disabled, wrong namespace, missing
	// scope, rate limited...) logged per second in each namespace, with a burst of as many; those over it
	// are counted.
	RejectionsPerSecond float64
	// UnknownPerSecond caps the decisions on unknown, malformed or missing keys logged per second, over all
	// of them; those over it are counted.
	UnknownPerSecond float64
	// Buffer is how many decisions may wait for the writer; when it is full they are counted, not logged.
	Buffer int
	// ClientHeader names the header a trusted proxy puts the client's address in; its last
	// comma-separated element is recorded (the one that proxy added). Empty: no client address.
	ClientHeader string
}

// Category is what kind of decision a line records, for the budgets and the drop counts.
type Category int

// The categories of decisions.
const (
	// CategoryValid is a valid decision.
	CategoryValid Category = iota
	// CategoryKnownKey is a rejection of a key the verifier knows (it names the key's APIKey).
	CategoryKnownKey
	// CategoryUnknownKey is a rejection of a key the verifier does not know, a malformed key or none.
	CategoryUnknownKey
	categories
)

var categoryNames = [categories]string{"valid", "known_key", "unknown_key"}

func (c Category) String() string { return categoryNames[c] }

// categoryOf is the category of a decision with code on a key of namespace ("" when the key is unknown).
func categoryOf(code verifier.Code, namespace string) Category {
	switch {
	case code == verifier.CodeValid:
		return CategoryValid
	case namespace != "":
		return CategoryKnownKey
	}
	return CategoryUnknownKey
}

// DecisionLog writes one JSON line per logged decision to a writer, from its own goroutine: a decision
// only hands its record to a bounded queue, so a slow or stuck sink never holds up a verification, and
// decisions that find the queue full are counted in keyward_verifier_decision_log_dropped_total. Valid
// decisions are sampled (all by default); rejections are logged within their budgets (per namespace for
// known keys, one for unknown ones), so a flood of one kind cannot hide another.
type DecisionLog struct {
	opts  DecisionLogOptions
	out   io.Writer
	queue chan Decision

	mu sync.Mutex
	// known holds each namespace's budget for rejections of its keys; unknown the one for unknown keys.
	known   map[string]*budget
	unknown budget

	queueFull, overRate [categories]atomic.Int64
}

// budget is a token bucket refilled at a rate per second, with a burst of as many.
type budget struct {
	tokens float64
	last   time.Time
}

// take takes a token at now, refilling at rate, and reports whether there was one.
func (b *budget) take(rate float64, now time.Time) bool {
	if b.last.IsZero() {
		b.tokens = rate
	} else {
		b.tokens = min(rate, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// NewDecisionLog returns a log writing to out; Start runs its writer.
func NewDecisionLog(out io.Writer, opts DecisionLogOptions) *DecisionLog {
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultDecisionLogBuffer
	}
	return &DecisionLog{opts: opts, out: out, queue: make(chan Decision, opts.Buffer), known: map[string]*budget{}}
}

// Sampled reports whether a decision with this code, on a key of namespace ("" for an unknown key), is to
// be logged, taking a token from its budget. The handler asks before it builds the record, so a decision
// that is not logged costs nothing more.
func (l *DecisionLog) Sampled(code verifier.Code, namespace string, now time.Time) bool {
	if l == nil {
		return false
	}
	cat := categoryOf(code, namespace)
	if cat == CategoryValid {
		return l.opts.ValidSample >= 1 || (l.opts.ValidSample > 0 && rand.Float64() < l.opts.ValidSample)
	}
	l.mu.Lock()
	var ok bool
	if cat == CategoryKnownKey {
		b := l.known[namespace]
		if b == nil {
			if len(l.known) >= maxBudgetNamespaces {
				namespace = "" // the shared budget of the namespaces past the bound
			}
			if b = l.known[namespace]; b == nil {
				b = &budget{}
				l.known[namespace] = b
			}
		}
		ok = b.take(l.opts.RejectionsPerSecond, now)
	} else {
		ok = l.unknown.take(l.opts.UnknownPerSecond, now)
	}
	l.mu.Unlock()
	if !ok {
		l.overRate[cat].Add(1)
	}
	return ok
}

// Record queues d for the writer, or counts it when the queue is full. It never blocks.
func (l *DecisionLog) Record(d Decision) {
	select {
	case l.queue <- d:
	default:
		l.queueFull[categoryOf(d.Code, d.Namespace)].Add(1)
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

// Dropped returns the decisions not logged because the queue was full and those over their budgets.
func (l *DecisionLog) Dropped() (queueFull, overRate int64) {
	for c := range categories {
		queueFull += l.queueFull[c].Load()
		overRate += l.overRate[c].Load()
	}
	return queueFull, overRate
}

// DroppedOf returns, for one category, the decisions not logged because the queue was full and those over
// its budget.
func (l *DecisionLog) DroppedOf(c Category) (queueFull, overRate int64) {
	return l.queueFull[c].Load(), l.overRate[c].Load()
}

// Collectors are keyward_verifier_decision_log_dropped_total{reason="queue_full"|"over_budget",
// category="valid"|"known_key"|"unknown_key"}.
func (l *DecisionLog) Collectors() []prometheus.Collector {
	var out []prometheus.Collector
	for c := range categories {
		for reason, n := range map[string]*atomic.Int64{"queue_full": &l.queueFull[c], "over_budget": &l.overRate[c]} {
			out = append(out, prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "keyward_verifier_decision_log_dropped_total",
				Help: "Decisions the decision log left out, by category: its queue was full (a slow sink), or the " +
					"category's budget was spent (rejections of a namespace's known keys, or of unknown keys).",
				ConstLabels: prometheus.Labels{"reason": reason, "category": c.String()},
			}, func() float64 { return float64(n.Load()) }))
		}
	}
	return out
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
	ns := ""
	if res.Name != "" {
		ns = res.Namespace
	}
	if now := time.Now(); l.Sampled(res.Code, ns, now) {
		l.Record(l.decisionOf(iface, res, req, rt(), key, start, now))
	}
}

// decisionOf makes the record of res.
func (l *DecisionLog) decisionOf(iface string, res verifier.Result, req verifier.Requirements, route route, key string, start, now time.Time) Decision {
	d := Decision{Time: now.UTC(), Interface: iface, Code: res.Code, LatencyMicros: now.Sub(start).Microseconds(),
		Method: bounded(route.method, maxLoggedMethod), Host: loggedText(route.host, key, maxLoggedHost), Path: loggedPath(route.path, key)}
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

// loggedPath is p without its query, percent-decoded, with every key in it redacted (the presented one and
// any other: loggedText), bounded.
func loggedPath(p, key string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	if decoded, err := url.PathUnescape(p); err == nil {
		p = decoded // a key written as kw%5F... is a key all the same
	}
	return loggedText(p, key, maxLoggedPath)
}

// loggedText is s with the presented key and every other key in it (any checksum-valid key shape, whether
// presented or not: keys.Redact) replaced by [key], then bounded. Redaction comes first, so that the bound
// cannot cut a key into a part that no longer looks like one.
func loggedText(s, key string, n int) string {
	if key != "" {
		s = strings.ReplaceAll(s, key, "[key]")
	}
	return bounded(keys.Redact(s, "[key]"), n)
}

// bounded cuts s to at most n bytes, dropping a rune the cut would split.
func bounded(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
