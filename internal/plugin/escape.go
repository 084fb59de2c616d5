package plugin

import (
	"fmt"
	"io"
	"reflect"

	"github.com/keyward-dev/keyward/internal/textguard"
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

// Escape returns s with every control character, bidirectional formatting character and invalid byte
// written as a visible escape (textguard.Escape).
func Escape(s string) string { return textguard.Escape(s) }

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
	if !textguard.NeedsEscape(s, true) {
		return t.w.Write(p)
	}
	if _, err := io.WriteString(t.w, textguard.EscapeKeepingLayout(s)); err != nil {
		return 0, err
	}
	return len(p), nil
}
