package compress

import (
	"net/http"
	"strings"
)

// Negotiate picks the content coding for a response from the request's
// Accept-Encoding header: "br", "gzip" or "" (send as is).
//
// Codings are matched case-insensitively, with "x-gzip" taken as gzip.
// The q-values decide and q=0 refuses a coding; "*" stands for every
// coding the header does not name; br wins a tie with gzip. Identity,
// when named, wins over a coding with a lower q ("gzip;q=0.5, identity"
// gives ""); unnamed, it is the fallback and never beats a coding the
// client accepts. An entry with a malformed q-value is ignored, and an
// empty header gives "" (compressing for a client that did not ask is
// allowed but unwise).
func Negotiate(acceptEncoding string) string {
	// q-values in thousandths; -1 means not named.
	br, gz, identity, star := -1, -1, -1, -1
	for rest := acceptEncoding; rest != ""; {
		var item string
		item, rest, _ = strings.Cut(rest, ",")
		name, params, _ := strings.Cut(item, ";")
		name = strings.TrimSpace(name)
		q, ok := qValue(params)
		if !ok {
			continue
		}
		switch {
		case strings.EqualFold(name, "br"):
			br = q
		case strings.EqualFold(name, "gzip"), strings.EqualFold(name, "x-gzip"):
			gz = q
		case strings.EqualFold(name, "identity"):
			identity = q
		case name == "*":
			star = q
		}
	}
	if br < 0 {
		br = star
	}
	if gz < 0 {
		gz = star
	}
	coding, q := "br", br
	if gz > br {
		coding, q = "gzip", gz
	}
	if q <= 0 || identity > q {
		return ""
	}
	return coding
}

// negotiateHeader is Negotiate over every Accept-Encoding line of h.
func negotiateHeader(h http.Header) string {
	switch v := h["Accept-Encoding"]; len(v) {
	case 0:
		return ""
	case 1:
		return Negotiate(v[0])
	default:
		return Negotiate(strings.Join(v, ","))
	}
}

// qValue finds the q parameter in the parameters of one Accept-Encoding
// entry ("q=0.5", " level=1 ; q=0.5") and returns it in thousandths;
// no q parameter means 1000. ok is false for a malformed q.
func qValue(params string) (q int, ok bool) {
	for rest := params; rest != ""; {
		var param string
		param, rest, _ = strings.Cut(rest, ";")
		key, value, _ := strings.Cut(param, "=")
		if strings.EqualFold(strings.TrimSpace(key), "q") {
			return parseQ(strings.TrimSpace(value))
		}
	}
	return 1000, true
}

// parseQ parses a qvalue (RFC 9110 section 12.4.2: "0" to "1" with at most
// three decimals) into thousandths, without allocating.
func parseQ(s string) (int, bool) {
	if s == "" || (s[0] != '0' && s[0] != '1') {
		return 0, false
	}
	q := int(s[0]-'0') * 1000
	s = s[1:]
	if s == "" {
		return q, true
	}
	if s[0] != '.' || len(s) > 4 {
		return 0, false
	}
	scale := 100
	for i := 1; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		q += int(c-'0') * scale
		scale /= 10
	}
	if q > 1000 {
		return 0, false
	}
	return q, true
}
