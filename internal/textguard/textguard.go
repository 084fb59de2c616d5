// Package textguard makes text that others wrote safe to show in Keyward's voice: in condition messages,
// event notes and errors in status (which kubectl and dashboards print), and in the plugin's output. A
// terminal acts on control characters (ESC sequences rewrite the screen, set the window title or the
// clipboard), a newline forges a line, and bidirectional formatting characters reorder what is shown.
package textguard

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with every control character (C0, DEL, C1), every Unicode bidirectional formatting
// character and every byte that is not UTF-8 written as a visible escape: \n, \t, \x1b, \u202e.
func Escape(s string) string { return escape(s, false) }

// EscapeKeepingLayout is Escape but for newlines and tabs, for a whole output whose layout they are.
func EscapeKeepingLayout(s string) string { return escape(s, true) }

// MaxQuoted is the longest text Quote copies; the rest is cut and marked.
const MaxQuoted = 256

// Quote returns s, written by someone else (a tenant, a receiver), as Keyward quotes it in its own voice (a
// condition message, an event note, an error in status): between double quotes, escaped, and cut to
// MaxQuoted bytes. It can neither end the quote, nor forge a line, nor drive a terminal that shows it.
func Quote(s string) string {
	cut := ""
	if len(s) > MaxQuoted {
		s, cut = s[:MaxQuoted], "…"
	}
	return `"` + strings.ReplaceAll(Escape(s), `"`, `\"`) + cut + `"`
}

func escape(s string, keepLayout bool) string {
	if !NeedsEscape(s, keepLayout) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case keepLayout && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case unsafeRune(r) && r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		i += n
	}
	return b.String()
}

// NeedsEscape reports whether s holds anything Escape would change; with keepLayout, newlines and tabs are
// left alone.
func NeedsEscape(s string, keepLayout bool) bool {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || (unsafeRune(r) && !(keepLayout && (r == '\n' || r == '\t'))) {
			return true
		}
		i += n
	}
	return false
}

// unsafeRune reports control characters and the bidirectional formatting characters that reorder what a
// terminal shows (Trojan Source).
func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || r == '\u061c' || r == '\u200e' || r == '\u200f' ||
		(r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069')
}
