package textguard

import (
	"strings"
	"testing"
)

func TestQuoteEscapesBoundsAndCannotBeClosedFromInside(t *testing.T) {
	cases := []struct{ in, want string }{
		{"db", `"db"`},
		{"X\r\nReady=True KeyReady", `"X\r\nReady=True KeyReady"`},
		{"n\x1b]52;c;ZXZpbA==\x07", `"n\x1b]52;c;ZXZpbA==\x07"`},
		{"abc\u202edef", `"abc\u202edef"`},
		{`a" forged="b`, `"a\" forged=\"b"`},
	}
	for _, tc := range cases {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	long := Quote(strings.Repeat("x", 10*MaxQuoted))
	if len(long) > MaxQuoted+8 || !strings.HasSuffix(long, `…"`) {
		t.Errorf("a long text quoted as %d bytes: %q...", len(long), long[:20])
	}
}
