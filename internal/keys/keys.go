// Package keys mints, parses, checks and hashes Keyward API keys.
//
// A key is <prefix>_<32 base62 characters of randomness><6 base62 characters of CRC-32>. The checksum, as in
// GitHub and npm tokens, lets anyone reject a mistyped or made-up key offline and lets secret scanners find
// keys with few false positives. The underscore keeps the whole key selectable with a double click.
package keys

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

const (
	// RandomLength is the number of random base62 characters: 32 × log2(62) ≈ 190 bits.
	RandomLength = 32
	// ChecksumLength is the number of base62 characters of the CRC-32 (62^6 > 2^32).
	ChecksumLength = 6
	// BodyLength is the length after the underscore.
	BodyLength = RandomLength + ChecksumLength
	// MinPrefixLength and MaxPrefixLength bound the public prefix, as the APIKey CRD does.
	MinPrefixLength, MaxPrefixLength = 2, 16
	// MaxLength is the longest well-formed key.
	MaxLength = MaxPrefixLength + 1 + BodyLength

	// HashPrefix starts every key hash.
	HashPrefix = "sha256:"
	// IDPrefix starts every public key ID.
	IDPrefix = "kid_"
	// idHexLength is how many hex characters of the hash form the key ID (48 bits: unique enough to name a
	// key in logs and dashboards, far too short to say anything about the key).
	idHexLength = 12
)

// ScannerPattern is the regular expression a secret scanner registers to find Keyward keys of any prefix:
// the prefix, an underscore and 38 base62 characters, on word boundaries. Register one per prefix you use
// (replace the prefix part with it, for example kw_) for fewer false positives; the checksum then tells a
// key from a look-alike (Parse).
const ScannerPattern = `\b[a-z][a-z0-9]{1,15}_[0-9A-Za-z]{38}\b`

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Errors returned by Parse. They never contain the key.
var (
	ErrMalformed   = errors.New("key is malformed")
	ErrBadChecksum = errors.New("key checksum does not match")
)

// Generate mints a key with the given prefix, reading randomness from random (crypto/rand.Reader in
// production). It uses rejection sampling so that every character is uniformly distributed.
func Generate(prefix string, random io.Reader) (string, error) {
	if !validPrefix(prefix) {
		return "", fmt.Errorf("prefix %q must be %d to %d lowercase letters or digits starting with a letter", prefix, MinPrefixLength, MaxPrefixLength)
	}
	key := make([]byte, 0, len(prefix)+1+BodyLength)
	key = append(key, prefix...)
	key = append(key, '_')
	var buf [64]byte
	for len(key) < len(prefix)+1+RandomLength {
		if _, err := io.ReadFull(random, buf[:]); err != nil {
			return "", fmt.Errorf("reading randomness: %w", err)
		}
		for _, b := range buf {
			// 248 = 4 × 62: bytes at or above it would make the first characters more likely.
			if b >= 248 {
				continue
			}
			key = append(key, alphabet[b%62])
			if len(key) == len(prefix)+1+RandomLength {
				break
			}
		}
	}
	key = appendChecksum(key, crc32.ChecksumIEEE(key))
	return string(key), nil
}

func appendChecksum(dst []byte, sum uint32) []byte {
	var digits [ChecksumLength]byte
	for i := ChecksumLength - 1; i >= 0; i-- {
		digits[i] = alphabet[sum%62]
		sum /= 62
	}
	return append(dst, digits[:]...)
}

// Parsed is a well-formed key split into its parts.
type Parsed struct {
	// Prefix is the part before the underscore.
	Prefix string
}

// WellFormed reports whether key has a key's shape: a valid prefix, an underscore and a body of the right
// length. It is the cheap first look a verifier takes before hashing; Parse also checks the characters and
// the checksum. It does not allocate.
func WellFormed(key string) bool {
	sep := separator(key)
	return sep >= MinPrefixLength && len(key) == sep+1+BodyLength && validPrefix(key[:sep])
}

// separator is the index of the underscore that ends the prefix, or -1.
func separator(key string) int {
	for i := 0; i < len(key) && i <= MaxPrefixLength; i++ {
		if key[i] == '_' {
			return i
		}
	}
	return -1
}

// Parse checks a key offline: shape, character set, length and checksum. It does not allocate.
func Parse(key string) (Parsed, error) {
	if !WellFormed(key) {
		return Parsed{}, ErrMalformed
	}
	sep := separator(key)
	var sum uint64
	for i := sep + 1; i < len(key); i++ {
		v := base62Values[key[i]]
		if v < 0 {
			return Parsed{}, ErrMalformed
		}
		if i >= sep+1+RandomLength {
			sum = sum*62 + uint64(v)
		}
	}
	if sum != uint64(checksumString(key[:sep+1+RandomLength])) {
		return Parsed{}, ErrBadChecksum
	}
	return Parsed{Prefix: key[:sep]}, nil
}

// crcTables are the slicing-by-8 tables of CRC-32 (IEEE).
var crcTables = func() (t [8][256]uint32) {
	t[0] = *crc32.MakeTable(crc32.IEEE)
	for i := range 256 {
		c := t[0][i]
		for j := 1; j < 8; j++ {
			c = t[0][c&0xFF] ^ (c >> 8)
			t[j][i] = c
		}
	}
	return t
}()

// checksumString is crc32.ChecksumIEEE over a string, eight bytes per step. Converting the string to a slice, or passing a stack
// copy to the crc32 package (whose argument escapes), would allocate on the verifier's hot path.
func checksumString(s string) uint32 {
	crc := ^uint32(0)
	for len(s) >= 8 {
		crc ^= uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
		crc = crcTables[7][crc&0xFF] ^ crcTables[6][(crc>>8)&0xFF] ^ crcTables[5][(crc>>16)&0xFF] ^ crcTables[4][crc>>24] ^
			crcTables[3][s[4]] ^ crcTables[2][s[5]] ^ crcTables[1][s[6]] ^ crcTables[0][s[7]]
		s = s[8:]
	}
	for i := 0; i < len(s); i++ {
		crc = crcTables[0][byte(crc)^s[i]] ^ (crc >> 8)
	}
	return ^crc
}

// base62Values maps a byte to its base62 value, or -1.
var base62Values = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = int8(i)
	}
	return t
}()

func validPrefix(p string) bool {
	if len(p) < MinPrefixLength || len(p) > MaxPrefixLength || p[0] < 'a' || p[0] > 'z' {
		return false
	}
	for i := 1; i < len(p); i++ {
		if (p[i] < 'a' || p[i] > 'z') && (p[i] < '0' || p[i] > '9') {
			return false
		}
	}
	return true
}

// Digest is the SHA-256 of a full key, the form in which the verifier indexes keys.
type Digest [sha256.Size]byte

// Sum returns the SHA-256 digest of the full key string. Keys of well-formed length are copied to the stack
// first, because converting a string longer than 32 bytes to a slice allocates on the verifier's hot path.
func Sum(key string) Digest {
	if len(key) <= MaxLength {
		var buf [MaxLength]byte
		n := copy(buf[:], key)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(key))
}

// String returns the digest as stored in status: sha256:<hex>.
func (d Digest) String() string { return HashPrefix + hex.EncodeToString(d[:]) }

// ID returns the public key ID derived from the digest: kid_<first 12 hex characters>.
func (d Digest) ID() string { return IDPrefix + hex.EncodeToString(d[:idHexLength/2]) }

// Hash returns sha256:<hex> of the full key.
func Hash(key string) string { return Sum(key).String() }

// ParseHash turns sha256:<hex> back into a Digest.
func ParseHash(h string) (Digest, error) {
	var d Digest
	if len(h) != len(HashPrefix)+2*sha256.Size || h[:len(HashPrefix)] != HashPrefix {
		return d, fmt.Errorf("hash must be %s followed by %d hex characters", HashPrefix, 2*sha256.Size)
	}
	if _, err := hex.Decode(d[:], []byte(h[len(HashPrefix):])); err != nil {
		return d, fmt.Errorf("hash is not hex: %w", err)
	}
	return d, nil
}

// IDFromHash returns the key ID for a sha256:<hex> hash, or "" when the hash is malformed.
func IDFromHash(h string) string {
	d, err := ParseHash(h)
	if err != nil {
		return ""
	}
	return d.ID()
}

// Hint returns the prefix and the last four characters, for recognising a key without revealing it:
// ord_…x9Z2. The last four characters are checksum, so the hint gives away no randomness.
func Hint(key string) string {
	p, err := Parse(key)
	if err != nil {
		return ""
	}
	return p.Prefix + "_…" + key[len(key)-4:]
}

// Redact returns s with every key in it, wherever it stands, replaced by replacement: every substring of a
// key's shape whose checksum holds, whoever's it is and whether or not anyone presented it. The checksum
// is what makes this exact: random text of a key's shape passes it once in 2^32. It allocates only when it
// replaces something.
func Redact(s, replacement string) string {
	var b []byte
	done := 0 // s[:done] is already in b (or, while b is nil, needs no change)
	for i := 0; i < len(s); i++ {
		if s[i] != '_' || i+1+BodyLength > len(s) {
			continue
		}
		start := -1
		for j := i - MinPrefixLength; j >= max(i-MaxPrefixLength, done); j-- {
			if !isPrefixByte(s[j]) {
				break
			}
			if s[j] >= 'a' && s[j] <= 'z' {
				if _, err := Parse(s[j : i+1+BodyLength]); err == nil {
					start = j
					break
				}
			}
		}
		if start < 0 {
			continue
		}
		b = append(append(b, s[done:start]...), replacement...)
		done = i + 1 + BodyLength
		i = done - 1
	}
	if b == nil {
		return s
	}
	return string(append(b, s[done:]...))
}

func isPrefixByte(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') }
