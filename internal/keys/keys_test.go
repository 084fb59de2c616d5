package keys

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"regexp"
	"strings"
	"testing"
)

func TestGenerateProducesParseableKeysInTheDesignFormat(t *testing.T) {
	for _, prefix := range []string{"kw", "ord", "trial", "a234567890123456"} {
		key, err := Generate(prefix, rand.Reader)
		if err != nil {
			t.Fatalf("Generate(%q): %v", prefix, err)
		}
		if !strings.HasPrefix(key, prefix+"_") || len(key) != len(prefix)+1+BodyLength {
			t.Errorf("Generate(%q) = key of length %d with the wrong shape", prefix, len(key))
		}
		p, err := Parse(key)
		if err != nil {
			t.Errorf("Parse of a fresh %q key: %v", prefix, err)
		}
		if p.Prefix != prefix {
			t.Errorf("Parse prefix = %q, want %q", p.Prefix, prefix)
		}
	}
}

func TestGenerateIsDeterministicForTheSameRandomness(t *testing.T) {
	seed := bytes.Repeat([]byte{7, 99, 200, 250, 3}, 100)
	a, err := Generate("kw", bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Generate("kw", bytes.NewReader(seed))
	if a != b {
		t.Error("the same randomness gave two different keys")
	}
	// 250 is rejected (≥ 248), so the body is 7, 99%62=37, 200%62=14, 3 repeating: 7 b E 3.
	if got := a[3 : 3+8]; got != "7bE37bE3" {
		t.Errorf("random part starts %q, want 7bE37bE3 (rejection sampling)", got)
	}
}

func TestGenerateReportsFailingRandomness(t *testing.T) {
	if _, err := Generate("kw", bytes.NewReader([]byte{1, 2, 3})); err == nil {
		t.Error("Generate succeeded with 3 bytes of randomness")
	}
}

func TestGenerateRejectsBadPrefixes(t *testing.T) {
	for _, prefix := range []string{"", "k", "Kw", "1kw", "k_w", "abcdefghijklmnopq"} {
		if _, err := Generate(prefix, rand.Reader); err == nil {
			t.Errorf("Generate(%q) succeeded", prefix)
		}
	}
}

func TestParseRejectsBadKeys(t *testing.T) {
	good, err := Generate("ord", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	cases := []struct {
		name string
		key  string
		want error
	}{
		{"empty", "", ErrMalformed},
		{"no underscore", strings.Replace(good, "_", "", 1), ErrMalformed},
		{"one-letter prefix", "o" + good[3:], ErrMalformed},
		{"uppercase prefix", "ORD" + good[3:], ErrMalformed},
		{"too short", good[:len(good)-1], ErrMalformed},
		{"too long", good + "a", ErrMalformed},
		{"non-base62 character", good[:10] + "-" + good[11:], ErrMalformed},
		{"trailing newline", good[:len(good)-1] + "\n", ErrMalformed},
		{"one random character changed", flip(good, 10), ErrBadChecksum},
		{"checksum changed", flip(good, len(good)-1), ErrBadChecksum},
		{"prefix changed", "orx" + good[3:], ErrBadChecksum},
		{"checksum above 2^32", "kw_" + strings.Repeat("a", RandomLength) + "zzzzzz", ErrBadChecksum},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.key); !errors.Is(err, tc.want) {
				t.Errorf("Parse = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseErrorsNeverContainTheKey(t *testing.T) {
	key, _ := Generate("kw", rand.Reader)
	bad := key[:10] + string(rune(key[10]^1)) + key[11:]
	if _, err := Parse(bad); err == nil || strings.Contains(err.Error(), bad[3:20]) {
		t.Errorf("Parse error %v leaks the key", err)
	}
}

func TestHashIDAndHint(t *testing.T) {
	key, _ := Generate("ord", bytes.NewReader(bytes.Repeat([]byte{10}, 64)))
	hash := Hash(key)
	if !strings.HasPrefix(hash, "sha256:") || len(hash) != 7+64 {
		t.Fatalf("Hash = %q, want sha256:<64 hex>", hash)
	}
	d, err := ParseHash(hash)
	if err != nil || d != Sum(key) {
		t.Fatalf("ParseHash(Hash(key)) = %v, %v", d, err)
	}
	id := Sum(key).ID()
	if id != "kid_"+hash[7:19] || IDFromHash(hash) != id {
		t.Errorf("ID = %q, want kid_ and the first 12 hex of the hash %s", id, hash)
	}
	if hint := Hint(key); hint != "ord_…"+key[len(key)-4:] {
		t.Errorf("Hint = %q", hint)
	}
	if Hint("nonsense") != "" || IDFromHash("sha256:zz") != "" {
		t.Error("Hint or IDFromHash accepted malformed input")
	}
	// The hint shows only checksum characters, which say nothing about the random part.
	if shown := strings.TrimPrefix(Hint(key), "ord_…"); len(shown) > ChecksumLength || !strings.HasSuffix(key[len(key)-ChecksumLength:], shown) {
		t.Errorf("the hint %q shows characters outside the checksum", Hint(key))
	}
}

func TestParseAndSumAllocateNothing(t *testing.T) {
	key, _ := Generate("abcdefghijklmnop", rand.Reader) // the longest prefix
	if n := testing.AllocsPerRun(100, func() { _, _ = Parse(key) }); n != 0 {
		t.Errorf("Parse allocates %.0f times per call", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = Sum(key) }); n != 0 {
		t.Errorf("Sum allocates %.0f times per call", n)
	}
	if Sum(key) != sha256.Sum256([]byte(key)) || Sum(key+"x") != sha256.Sum256([]byte(key+"x")) {
		t.Error("Sum differs from sha256.Sum256")
	}
}

func FuzzParse(f *testing.F) {
	good, _ := Generate("kw", rand.Reader)
	for _, seed := range []string{good, "", "kw_", "ord_" + strings.Repeat("z", BodyLength), good[:20], strings.ToUpper(good)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, key string) {
		p, err := Parse(key)
		if err != nil {
			return
		}
		// Whatever Parse accepts must be exactly what Generate could produce.
		if !validPrefix(p.Prefix) || len(key) != len(p.Prefix)+1+BodyLength || key[len(p.Prefix)] != '_' {
			t.Fatalf("Parse accepted a key of the wrong shape: %q", key)
		}
		body := []byte(key[:len(key)-ChecksumLength])
		if string(appendChecksum(body, crc32IEEE(body))) != key {
			t.Fatalf("Parse accepted a key whose checksum does not match: %q", key)
		}
	})
}

func crc32IEEE(b []byte) uint32 { return crc32.ChecksumIEEE(b) }

func BenchmarkGenerate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Generate("kw", rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	key, _ := Generate("kw", rand.Reader)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSum(b *testing.B) {
	key, _ := Generate("kw", rand.Reader)
	b.ReportAllocs()
	for b.Loop() {
		_ = Sum(key)
	}
}

func TestChecksumStringMatchesTheStandardLibrary(t *testing.T) {
	for n := range 64 {
		s := strings.Repeat("aZ9_", 16)[:n]
		if got, want := checksumString(s), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Errorf("length %d: %08x, want %08x", n, got, want)
		}
	}
}

func TestRedactReplacesEveryKeyWhereverItStands(t *testing.T) {
	a, b := mustGenerate(t, "kw"), mustGenerate(t, "ord")
	fake := "kw_" + strings.Repeat("A", BodyLength) // a key's shape, a wrong checksum
	cases := []struct{ in, want string }{
		{"/download/" + a, "/download/[key]"},
		{a + "." + b + ".example", "[key].[key].example"},
		{"x" + a, "x[key]"},          // a letter before the prefix is not part of the key
		{"9" + a + "Z", "9[key]Z"},   // nor a character after its body
		{"/u/" + fake, "/u/" + fake}, // no checksum, no key
		{"kw_short", "kw_short"},     // too short
		{"", ""},
		{"____" + a + "__", "____[key]__"},
	}
	for _, tc := range cases {
		if got := Redact(tc.in, "[key]"); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func mustGenerate(t *testing.T, prefix string) string {
	t.Helper()
	k, err := Generate(prefix, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestTheScannerPatternFindsEveryMintedKeyAndItsChecksumTellsLookAlikes(t *testing.T) {
	re := regexp.MustCompile(ScannerPattern)
	for _, prefix := range []string{"kw", "ord", "a1", "abcdefghijklmnop"} {
		key, err := Generate(prefix, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if got := re.FindString("API_KEY=" + key + "\n"); got != key {
			t.Errorf("the pattern found %q in a line with %s", got, key)
		}
	}
	lookAlike := "kw_" + strings.Repeat("a", BodyLength)
	if !re.MatchString(lookAlike) {
		t.Fatal("the pattern misses a key-shaped string")
	}
	if _, err := Parse(lookAlike); err == nil {
		t.Error("a key-shaped string without a valid checksum parsed")
	}
	if re.MatchString("kw_" + strings.Repeat("a", BodyLength-1)) {
		t.Error("the pattern matched a string one character short")
	}
}
