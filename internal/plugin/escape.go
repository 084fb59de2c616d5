package plugin

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Everything the plugin prints passes through two guards, because most of it was written by tenants:
// condition messages quote Secret names, event notes quote annotations, and webhook errors quote what a
// receiver answered. A terminal acts on control characters (ESC sequences rewrite the screen, set the
// window title or the clipboard) and a newline forges a line.
//
//   - Escape is applied to every value a format prints (printf does it by construction), so a value can
//     neither break a line nor move the cursor;
//   - terminalWriter, around the plugin's output, escapes any control character left in the whole stream
//     but the newlines and tabs of the plugin's own layout.

// Escape returns s with every control character (C0, DEL, C1), every Unicode bidirectional formatting
// character and every byte that is not UTF-8 written as a visible escape: \n, \t, \x1b, \u202e.
func Escape(s string) string { return escape(s, false) }

func escape(s string, keepLayout bool) string {
	if !needsEscape(s, keepLayout) {
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

func needsEscape(s string, keepLayout bool) bool {
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

// printf writes format with every string-like argument escaped. The formats are the plugin's own.
func printf(w io.Writer, format string, args ...any) {
	for i, a := range args {
		switch v := a.(type) {
		case error:
			args[i] = Escape(v.Error())
		case fmt.Stringer:
			args[i] = Escape(v.String())
		default:
			if rv := reflect.ValueOf(a); rv.IsValid() && rv.Kind() == reflect.String {
				args[i] = Escape(rv.String())
			}
		}
	}
	fmt.Fprintf(w, format, args...)
}

// terminalWriter escapes, in everything written through it, the control characters other than the newline
// and tab of the plugin's layout.
type terminalWriter struct{ w io.Writer }

func (t terminalWriter) Write(p []byte) (int, error) {
	s := string(p)
	if !needsEscape(s, true) {
		return t.w.Write(p)
	}
	if _, err := io.WriteString(t.w, escape(s, true)); err != nil {
		return 0, err
	}
	return len(p), nil
}
