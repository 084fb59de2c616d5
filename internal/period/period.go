// Package period parses Keyward's durations (90d, 12h, 6mo, 1y) and applies them to instants, with calendar
// arithmetic for months and years.
package period

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Unit is one of the units a Period may use.
type Unit string

// The units, as written after the number.
const (
	Second Unit = "s"
	Minute Unit = "m"
	Hour   Unit = "h"
	Day    Unit = "d"
	Week   Unit = "w"
	Month  Unit = "mo"
	Year   Unit = "y"
)

var fixed = map[Unit]time.Duration{
	Second: time.Second, Minute: time.Minute, Hour: time.Hour, Day: 24 * time.Hour, Week: 7 * 24 * time.Hour,
}

// Period is a whole number of one unit.
type Period struct {
	N    int
	Unit Unit
}

// Parse reads "<n><unit>", the syntax the APIKey CRD accepts.
func Parse(s string) (Period, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 || i > 9 {
		return Period{}, fmt.Errorf("duration %q must be a whole number followed by s, m, h, d, w, mo or y", s)
	}
	n, err := strconv.Atoi(s[:i])
	if err != nil {
		return Period{}, fmt.Errorf("duration %q: %w", s, err)
	}
	u := Unit(s[i:])
	if _, ok := fixed[u]; !ok && u != Month && u != Year {
		return Period{}, fmt.Errorf("duration %q has an unknown unit %q; use s, m, h, d, w, mo or y", s, u)
	}
	return Period{N: n, Unit: u}, nil
}

// MustParse is Parse for constants; it panics on malformed input.
func MustParse(s string) Period {
	p, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return p
}

// String writes the period back in the syntax Parse reads.
func (p Period) String() string { return strconv.Itoa(p.N) + string(p.Unit) }

// IsZero reports whether the period is empty.
func (p Period) IsZero() bool { return p.N == 0 }

// AddTo returns t plus the period. Months and years are calendar units: the day of the month is kept and
// clamped to the last day of a shorter month (31 January + 1mo = 28 or 29 February; 29 February 2028 + 1y =
// 28 February 2029), which is what people mean by "one month" rather than Go's AddDate overflow into March.
func (p Period) AddTo(t time.Time) time.Time { return p.shift(t, 1) }

// SubtractFrom returns t minus the period, with the same calendar rules as AddTo.
func (p Period) SubtractFrom(t time.Time) time.Time { return p.shift(t, -1) }

func (p Period) shift(t time.Time, sign int) time.Time {
	switch p.Unit {
	case Month:
		return addMonths(t, sign*p.N)
	case Year:
		return addMonths(t, sign*12*p.N)
	default:
		return t.Add(time.Duration(sign*p.N) * fixed[p.Unit])
	}
}

func addMonths(t time.Time, months int) time.Time {
	y, m, d := t.Date()
	total := int(m) - 1 + months
	year := y + floorDiv(total, 12)
	month := time.Month(total - floorDiv(total, 12)*12 + 1)
	if last := daysIn(year, month); d > last {
		d = last
	}
	hh, mm, ss := t.Clock()
	return time.Date(year, month, d, hh, mm, ss, t.Nanosecond(), t.Location())
}

func floorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func daysIn(year int, month time.Month) int {
	return time.Date(year, month+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// Approx is the period as a fixed duration, counting a month as 30 days and a year as 365 days, for bounds
// checks that need no anchor instant.
func (p Period) Approx() time.Duration {
	switch p.Unit {
	case Month:
		return time.Duration(p.N) * 30 * 24 * time.Hour
	case Year:
		return time.Duration(p.N) * 365 * 24 * time.Hour
	default:
		return time.Duration(p.N) * fixed[p.Unit]
	}
}

// ParseOr parses s, or returns def when s is empty (an unset optional field).
func ParseOr(s string, def Period) (Period, error) {
	if strings.TrimSpace(s) == "" {
		return def, nil
	}
	return Parse(s)
}
