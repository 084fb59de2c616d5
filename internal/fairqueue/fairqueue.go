// Package fairqueue is the storage of a client-go workqueue that takes turns between tenants: items wait in
// one FIFO per tenant (for Keyward, per namespace), and the queue hands out the head of each tenant's FIFO
// in turn. One tenant with 20,000 queued items delays another tenant's next item by at most one item per
// other tenant with work, not by 20,000. client-go keeps its dedup, processing and delay semantics; this
// package only decides the order.
package fairqueue

import "k8s.io/client-go/util/workqueue"

// Queue holds items in one FIFO per tenant and pops the tenants in turn. It implements workqueue.Queue; like
// every such storage it is called only under the workqueue's lock, so it has none of its own.
type Queue[T comparable] struct {
	tenantOf func(T) string
	fifos    map[string]*fifo[T]
	// turns holds the tenants with queued items, in the order they are served; head is the next one.
	turns []string
	head  int
	n     int
}

var _ workqueue.Queue[string] = (*Queue[string])(nil)

// New returns an empty queue whose items belong to the tenant tenantOf names.
func New[T comparable](tenantOf func(T) string) *Queue[T] {
	return &Queue[T]{tenantOf: tenantOf, fifos: map[string]*fifo[T]{}}
}

// Touch is called when an item already queued is added again; its place stays.
func (q *Queue[T]) Touch(T) {}

// Push adds an item at the end of its tenant's FIFO; a tenant that had none joins the end of the turns.
func (q *Queue[T]) Push(item T) {
	tenant := q.tenantOf(item)
	f := q.fifos[tenant]
	if f == nil {
		f = &fifo[T]{}
		q.fifos[tenant] = f
		q.turns = append(q.turns, tenant)
	}
	f.push(item)
	q.n++
}

// Len is how many items are queued, over every tenant.
func (q *Queue[T]) Len() int { return q.n }

// Pop returns the head of the next tenant's FIFO; that tenant, if it has more, goes to the end of the turns.
// The workqueue calls it only when Len is above zero.
func (q *Queue[T]) Pop() T {
	tenant := q.turns[q.head]
	q.turns[q.head] = ""
	q.head++
	f := q.fifos[tenant]
	item := f.pop()
	q.n--
	if f.len() > 0 {
		q.turns = append(q.turns, tenant)
	} else {
		delete(q.fifos, tenant)
	}
	if q.head > len(q.turns)/2 && q.head > 16 {
		q.turns = append(q.turns[:0], q.turns[q.head:]...)
		q.head = 0
	}
	return item
}

// fifo is a slice-backed first-in first-out list that gives its memory back as it empties.
type fifo[T any] struct {
	items []T
	head  int
}

func (f *fifo[T]) push(item T) { f.items = append(f.items, item) }

func (f *fifo[T]) len() int { return len(f.items) - f.head }

func (f *fifo[T]) pop() T {
	var zero T
	item := f.items[f.head]
	f.items[f.head] = zero
	f.head++
	if f.head > len(f.items)/2 && f.head > 16 {
		f.items = append(f.items[:0], f.items[f.head:]...)
		f.head = 0
	}
	return item
}
