package doctor

import (
	"strconv"
	"strings"
)

// debianUpstream is the upstream part of a Debian version: without the
// epoch ("1:") and the Debian revision (after the last '-').
func debianUpstream(v string) string {
	_, v = splitEpoch(v)
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		v = v[:i]
	}
	return v
}

func splitEpoch(v string) (int, string) {
	if i := strings.IndexByte(v, ':'); i >= 0 {
		if e, err := strconv.Atoi(v[:i]); err == nil {
			return e, v[i+1:]
		}
	}
	return 0, v
}

// debianCompare orders Debian package versions as dpkg does (Debian policy
// 5.6.12): epoch, then upstream version, then revision, each compared in
// runs of non-digits ('~' before anything, even the end; letters before
// other characters) and of digits (numerically).
func debianCompare(a, b string) int {
	ea, a := splitEpoch(a)
	eb, b := splitEpoch(b)
	if ea != eb {
		return cmpInt(ea, eb)
	}
	ua, ra := splitRevision(a)
	ub, rb := splitRevision(b)
	if c := debianComparePart(ua, ub); c != 0 {
		return c
	}
	return debianComparePart(ra, rb)
}

func splitRevision(v string) (string, string) {
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		return v[:i], v[i+1:]
	}
	return v, ""
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// debianOrder is dpkg's weight of one character of a non-digit run; 0 is
// the end of the run.
func debianOrder(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	switch c := s[i]; {
	case c >= '0' && c <= '9':
		return 0
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		return int(c)
	case c == '~':
		return -1
	default:
		return int(c) + 256
	}
}

func isDigit(s string, i int) bool { return i < len(s) && s[i] >= '0' && s[i] <= '9' }

// debianComparePart is dpkg's verrevcmp.
func debianComparePart(a, b string) int {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		for (i < len(a) && !isDigit(a, i)) || (j < len(b) && !isDigit(b, j)) {
			if oa, ob := debianOrder(a, i), debianOrder(b, j); oa != ob {
				return cmpInt(oa, ob)
			}
			i++
			j++
		}
		for isDigit(a, i) && a[i] == '0' {
			i++
		}
		for isDigit(b, j) && b[j] == '0' {
			j++
		}
		first := 0
		for isDigit(a, i) && isDigit(b, j) {
			if first == 0 {
				first = cmpInt(int(a[i]), int(b[j]))
			}
			i++
			j++
		}
		if isDigit(a, i) {
			return 1
		}
		if isDigit(b, j) {
			return -1
		}
		if first != 0 {
			return first
		}
	}
	return 0
}
