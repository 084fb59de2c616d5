package period

import (
	"testing"
	"time"
)

func date(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestParse(t *testing.T) {
	cases := []struct {
		in      string
		want    Period
		wantErr bool
	}{
		{"90d", Period{90, Day}, false},
		{"12h", Period{12, Hour}, false},
		{"30m", Period{30, Minute}, false},
		{"6mo", Period{6, Month}, false},
		{"1y", Period{1, Year}, false},
		{"2w", Period{2, Week}, false},
		{"0s", Period{0, Second}, false},
		{"", Period{}, true},
		{"d", Period{}, true},
		{"90", Period{}, true},
		{"90days", Period{}, true},
		{"1.5d", Period{}, true},
		{"-1d", Period{}, true},
		{"9999999999d", Period{}, true},
	}
	for _, tc := range cases {
		got, err := Parse(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err == nil && got.String() != tc.in {
			t.Errorf("Parse(%q).String() = %q", tc.in, got.String())
		}
	}
}

func TestAddToUsesCalendarMonthsAndYears(t *testing.T) {
	cases := []struct {
		name  string
		from  string
		p     string
		want  string
		minus bool
	}{
		{"days are exact", "2026-11-24T10:00:00Z", "90d", "2027-02-22T10:00:00Z", false},
		{"hours", "2026-11-24T10:00:00Z", "36h", "2026-11-25T22:00:00Z", false},
		{"weeks", "2026-11-24T10:00:00Z", "2w", "2026-12-08T10:00:00Z", false},
		{"one month keeps the day", "2026-01-15T08:30:00Z", "1mo", "2026-02-15T08:30:00Z", false},
		{"31 January plus a month is the end of February", "2026-01-31T00:00:00Z", "1mo", "2026-02-28T00:00:00Z", false},
		{"31 January plus a month in a leap year", "2028-01-31T00:00:00Z", "1mo", "2028-02-29T00:00:00Z", false},
		{"months cross the year", "2026-11-30T00:00:00Z", "3mo", "2027-02-28T00:00:00Z", false},
		{"29 February plus a year", "2028-02-29T12:00:00Z", "1y", "2029-02-28T12:00:00Z", false},
		{"29 February plus four years", "2028-02-29T12:00:00Z", "4y", "2032-02-29T12:00:00Z", false},
		{"a year over a leap day is 366 days", "2027-06-01T00:00:00Z", "1y", "2028-06-01T00:00:00Z", false},
		{"subtracting a month from 31 March", "2026-03-31T00:00:00Z", "1mo", "2026-02-28T00:00:00Z", true},
		{"subtracting months across the year", "2027-01-15T00:00:00Z", "2mo", "2026-11-15T00:00:00Z", true},
		{"subtracting days", "2027-01-15T00:00:00Z", "30d", "2026-12-16T00:00:00Z", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := MustParse(tc.p)
			got := p.AddTo(date(tc.from))
			if tc.minus {
				got = p.SubtractFrom(date(tc.from))
			}
			if !got.Equal(date(tc.want)) {
				t.Errorf("got %s, want %s", got.Format(time.RFC3339), tc.want)
			}
		})
	}
}

func TestApprox(t *testing.T) {
	if got := MustParse("1mo").Approx(); got != 30*24*time.Hour {
		t.Errorf("1mo ≈ %v", got)
	}
	if got := MustParse("1y").Approx(); got != 365*24*time.Hour {
		t.Errorf("1y ≈ %v", got)
	}
	if got := MustParse("90m").Approx(); got != 90*time.Minute {
		t.Errorf("90m ≈ %v", got)
	}
}

func TestParseOr(t *testing.T) {
	def := MustParse("90d")
	if got, err := ParseOr("", def); err != nil || got != def {
		t.Errorf("ParseOr(\"\") = %v, %v", got, err)
	}
	if got, err := ParseOr("1h", def); err != nil || got != MustParse("1h") {
		t.Errorf("ParseOr(1h) = %v, %v", got, err)
	}
}
