package fairqueue

import (
	"fmt"
	"testing"
)

func tenantOf(s string) string { return s[:1] }

func TestTenantsTakeTurnsAndEachKeepsItsOrder(t *testing.T) {
	q := New(tenantOf)
	for _, item := range []string{"a1", "a2", "a3", "b1", "c1", "b2"} {
		q.Push(item)
	}
	var got []string
	for q.Len() > 0 {
		got = append(got, q.Pop())
	}
	if want := fmt.Sprint([]string{"a1", "b1", "c1", "a2", "b2", "a3"}); fmt.Sprint(got) != want {
		t.Errorf("order %v, want %v", got, want)
	}
	q.Push("c2")
	if q.Len() != 1 || q.Pop() != "c2" || q.Len() != 0 {
		t.Error("an emptied queue does not serve a new item")
	}
}

func TestATenantWithManyItemsDelaysAnotherByOneItem(t *testing.T) {
	q := New(tenantOf)
	for i := range 20000 {
		q.Push(fmt.Sprintf("a%05d", i))
	}
	for range 1000 {
		q.Pop() // a's churn goes on
	}
	q.Push("b-revoke")
	if got := q.Pop(); got[0] != 'a' {
		t.Errorf("first pop %s; a's turn came first", got)
	}
	if got := q.Pop(); got != "b-revoke" {
		t.Errorf("second pop %s, want b-revoke", got)
	}
	if q.Len() != 20000-1001 {
		t.Errorf("Len %d", q.Len())
	}
}
