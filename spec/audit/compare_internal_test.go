package audit

import (
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// everyDuplicate is duplicates before it left out the values that lead to
// no keyed list: it visits every value of the document.
func (c *comparer) everyDuplicate(path, shape string, v any) {
	switch v := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			c.everyDuplicate(join(path, k), join(shape, k), v[k])
		}
	case []any:
		if slices.Contains(c.opts.SupersetLists, shape) {
			return
		}
		if key, ok := c.opts.KeyedLists[shape]; ok {
			seen := map[string]bool{}
			for _, e := range v {
				k := keyOf(e, key)
				at := path + "[" + k + "]"
				if seen[k] {
					c.add(at, shape+"[]", e, nil, true, false)
					continue
				}
				seen[k] = true
				c.everyDuplicate(at, shape+"[]", e)
			}
			return
		}
		if scalars(v) {
			return
		}
		for i, e := range v {
			c.everyDuplicate(path+"["+strconv.Itoa(i)+"]", shape+"[]", e)
		}
	}
}

// TestDuplicatesLeavesOutNothing: Compare's shortcut for two equal
// documents (duplicates, which leaves out the values that cannot hold a
// keyed list) reports what a visit of every value reports, in the same
// order: keys held twice by keyed lists at the top, in a map, in a plain
// list's elements and in a keyed list's elements, beside lists that must
// be left alone (superset lists, plain values). A document without a key
// twice gets what the full walk against itself gives: nothing.
func TestDuplicatesLeavesOutNothing(t *testing.T) {
	entry := func(k string, more ...any) map[string]any {
		m := map[string]any{"k": k}
		for i := 0; i+1 < len(more); i += 2 {
			m[more[i].(string)] = more[i+1]
		}
		return m
	}
	opts := CompareOptions{
		KeyedLists:    map[string]string{"a": "k", "m.l": "k", "p[].l": "k", "a[].in": "k", "s": "k"},
		SupersetLists: []string{"s"},
	}
	docs := map[string]any{
		"none twice": map[string]any{"a": []any{entry("x"), entry("y")}, "z": []any{"ro", "rw"}},
		"at the top": map[string]any{"a": []any{entry("x", "v", 1), entry("x", "v", 2), entry("y")}},
		"in a map":   map[string]any{"m": map[string]any{"l": []any{entry("y"), entry("y")}, "o": 1}},
		"in a plain list's elements": map[string]any{"p": []any{
			map[string]any{"l": []any{entry("q"), entry("q")}},
			map[string]any{"l": []any{entry("r")}},
		}},
		"in a keyed list's elements": map[string]any{"a": []any{
			entry("x", "in", []any{entry("i"), entry("i")}),
			entry("x", "in", []any{entry("j")}),
		}},
		"a superset list and a deep unkeyed tree": map[string]any{
			"s":       []any{entry("d"), entry("d")},
			"seccomp": map[string]any{"syscalls": []any{map[string]any{"names": []any{"read"}, "args": []any{map[string]any{"k": "x"}, map[string]any{"k": "x"}}}}},
		},
		"a key that is no string": map[string]any{"a": []any{map[string]any{"k": 1}, map[string]any{"k": 1}}},
		// Under a key "" at the root the shape stays "" (an outside
		// review's case): "m.l" below it is the keyed list "m.l".
		"under a key \"\" at the root":    map[string]any{"": map[string]any{"m": map[string]any{"l": []any{entry("y"), entry("y")}}}},
		"under two keys \"\" at the root": map[string]any{"": map[string]any{"": map[string]any{"a": []any{entry("x"), entry("x")}}}},
	}
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			every := &comparer{opts: opts}
			every.everyDuplicate("", "", doc)
			short := &comparer{opts: opts}
			short.duplicates("", "", doc)
			if !slices.Equal(short.diffs, every.diffs) {
				t.Errorf("duplicates reported\n%v\na visit of every value\n%v", short.diffs, every.diffs)
			}
			walked := &comparer{opts: opts}
			walked.walk("", "", doc, doc, true, true)
			if twice := len(walked.diffs) != 0; twice != (len(short.diffs) != 0) || twice != (name != "none twice" && name != "a superset list and a deep unkeyed tree") {
				t.Errorf("the walk against itself reported %v, duplicates %v", walked.diffs, short.diffs)
			}
		})
	}
}

// TestDuplicatesLeavesOutNothingRandom: the same against random small
// documents whose keys hold dots, brackets and "" (shapes that collide
// with others), under random keyed and superset lists; a fixed seed, so
// a failure repeats. The outside review's differential test, smaller.
func TestDuplicatesLeavesOutNothingRandom(t *testing.T) {
	keys := []string{"", "a", "b", "a.b", "l[]", "[]", ".", "a.", ".b", "l", "k", "[]a"}
	shapes := []string{"", "a", "b", "a.b", "l", "l[]", "a.l", "a[].l", "[]", "[].a", "a.b[].l", ".a", "a..b", "l[].in", "[][]", "a[][]"}
	rng := rand.New(rand.NewPCG(1, 2))
	var gen func(depth int) any
	gen = func(depth int) any {
		switch r := rng.IntN(10); {
		case depth > 4 || r < 2:
			if rng.IntN(3) == 0 {
				return float64(rng.IntN(2))
			}
			return []string{"x", "y"}[rng.IntN(2)]
		case r < 6:
			m := map[string]any{}
			for range rng.IntN(4) {
				m[keys[rng.IntN(len(keys))]] = gen(depth + 1)
			}
			if rng.IntN(2) == 0 {
				m["k"] = []string{"x", "y"}[rng.IntN(2)]
			}
			return m
		default:
			var l []any
			for range rng.IntN(4) {
				l = append(l, gen(depth+1))
			}
			return l
		}
	}
	twice := 0
	for range 60000 {
		opts := CompareOptions{KeyedLists: map[string]string{}}
		for range 1 + rng.IntN(3) {
			opts.KeyedLists[shapes[rng.IntN(len(shapes))]] = "k"
		}
		if rng.IntN(3) == 0 {
			opts.SupersetLists = []string{shapes[rng.IntN(len(shapes))]}
		}
		doc := gen(0)
		every := &comparer{opts: opts}
		every.everyDuplicate("", "", doc)
		short := &comparer{opts: opts}
		short.duplicates("", "", doc)
		if !slices.Equal(short.diffs, every.diffs) {
			t.Fatalf("options %v, document %s: duplicates reported %v, a visit of every value %v", opts, encode(doc), short.diffs, every.diffs)
		}
		if len(every.diffs) > 0 {
			twice++
		}
	}
	if twice < 200 {
		t.Errorf("only %d of the documents hold a key twice: the test tests little", twice)
	}
}
