package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Difference is one place where a document differs from the one nsn-run
// would generate.
type Difference struct {
	// Path names the place in JSON field names: "linux.seccomp.syscalls[3].args[0].index".
	// An element of a keyed list is named by its key: "mounts[/sys].options".
	Path string
	// Shape is Path without indices and keys ("mounts[].options"): what
	// rules are matched on.
	Shape string
	// Got and Want are the JSON values there; "" where the value is absent.
	Got, Want string
}

// Message is the difference in one line for a reviewer.
func (d Difference) Message() string {
	switch {
	case d.Want == "":
		return "not allowed: nsn-run generates nothing here, the spec has " + short(d.Got)
	case d.Got == "":
		return "missing: nsn-run generates " + short(d.Want)
	default:
		return "is " + short(d.Got) + ", nsn-run generates " + short(d.Want)
	}
}

// maxValueText bounds how much of a value a finding quotes.
const maxValueText = 160

func short(v string) string {
	if len(v) <= maxValueText {
		return v
	}
	return v[:maxValueText] + "..."
}

// CompareOptions say how lists are matched. List paths are written without
// indices or keys ("mounts", "linux.seccomp.syscalls[].args").
type CompareOptions struct {
	// KeyedLists match the elements of a list of objects by the value of
	// one field (mounts by "destination"), so one element added or removed
	// is one difference, not a shift of every element after it.
	KeyedLists map[string]string
	// SupersetLists may hold more elements than the generated document,
	// never fewer: extra entries only restrict (masked paths).
	SupersetLists []string
}

// Compare reports every difference between got and want, two values that
// marshal to JSON (a runtime spec, an Engine create request), in a stable
// order. It compares the JSON, so it sees exactly what a runtime reads:
// every field, including those a reviewer would not think to check.
func Compare(got, want any, o CompareOptions) ([]Difference, error) {
	gj, err := json.Marshal(got)
	if err != nil {
		return nil, fmt.Errorf("compare: marshal: %w", err)
	}
	wj, err := json.Marshal(want)
	if err != nil {
		return nil, fmt.Errorf("compare: marshal: %w", err)
	}
	g, err := toTree(gj)
	if err != nil {
		return nil, err
	}
	c := &comparer{opts: o}
	if bytes.Equal(gj, wj) {
		// The same JSON is the same tree (the common case: a spec
		// nsn-run generated). Decoding the second and comparing every
		// value with itself was most of the audit's time on every
		// task's start; only what the walk reports of one document's
		// shape is left to find.
		c.duplicates("", "", g)
		return c.diffs, nil
	}
	w, err := toTree(wj)
	if err != nil {
		return nil, err
	}
	c.walk("", "", g, w, true, true)
	return c.diffs, nil
}

// toTree is the JSON document b decoded: maps, slices, json.Number,
// strings, bools, nil.
func toTree(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var t any
	if err := d.Decode(&t); err != nil {
		return nil, fmt.Errorf("compare: decode: %w", err)
	}
	return t, nil
}

type comparer struct {
	opts  CompareOptions
	diffs []Difference
}

func (c *comparer) add(path, shape string, got, want any, gok, wok bool) {
	d := Difference{Path: path, Shape: shape}
	if gok {
		d.Got = encode(got)
	}
	if wok {
		d.Want = encode(want)
	}
	c.diffs = append(c.diffs, d)
}

func encode(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// walk compares g and w at path; shape is path without indices or keys.
// gok and wok say whether each side has a value there at all (absent is not
// the same as null).
func (c *comparer) walk(path, shape string, g, w any, gok, wok bool) {
	if !gok || !wok {
		c.add(path, shape, g, w, gok, wok)
		return
	}
	gm, gIsMap := g.(map[string]any)
	wm, wIsMap := w.(map[string]any)
	if gIsMap && wIsMap {
		keys := make([]string, 0, len(gm)+len(wm))
		for k := range gm {
			keys = append(keys, k)
		}
		for k := range wm {
			if _, ok := gm[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			gv, gok := gm[k]
			wv, wok := wm[k]
			c.walk(join(path, k), join(shape, k), gv, wv, gok, wok)
		}
		return
	}
	gl, gIsList := g.([]any)
	wl, wIsList := w.([]any)
	if gIsList && wIsList {
		c.list(path, shape, gl, wl)
		return
	}
	if encode(g) != encode(w) {
		c.add(path, shape, g, w, true, true)
	}
}

func (c *comparer) list(path, shape string, g, w []any) {
	if slices.Contains(c.opts.SupersetLists, shape) {
		for _, wv := range w {
			if !slices.ContainsFunc(g, func(gv any) bool { return encode(gv) == encode(wv) }) {
				c.add(path+"[]", shape+"[]", nil, wv, false, true)
			}
		}
		return
	}
	if key, ok := c.opts.KeyedLists[shape]; ok {
		c.keyedList(path, shape, key, g, w)
		return
	}
	if scalars(g) && scalars(w) {
		// A list of plain values (mount options, syscall names) is one
		// value: its order can matter ("ro","rw" is read-write to runc).
		if encode(g) != encode(w) {
			c.add(path, shape, g, w, true, true)
		}
		return
	}
	for i := range max(len(g), len(w)) {
		var gv, wv any
		if i < len(g) {
			gv = g[i]
		}
		if i < len(w) {
			wv = w[i]
		}
		c.walk(path+"["+strconv.Itoa(i)+"]", shape+"[]", gv, wv, i < len(g), i < len(w))
	}
}

// duplicates reports the keys a keyed list of document v holds twice,
// each at the path walk gives it: what makes walk report anything when it
// compares v with itself (everything else is equal to itself; walk then
// also reports the twice-held entry's fields against the last one's, and
// the order). Only a keyed list can hold such a key, so it leaves out
// every value whose shape leads to none (leadsToKeyedList): in a spec,
// the seccomp profile, whose visit was a quarter of a task's audit's
// garbage.
func (c *comparer) duplicates(path, shape string, v any) {
	switch v := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			if s := join(shape, k); c.leadsToKeyedList(s) {
				c.duplicates(join(path, k), s, v[k])
			}
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
				c.duplicates(at, shape+"[]", e)
			}
			return
		}
		if scalars(v) || !c.leadsToKeyedList(shape+"[]") {
			return
		}
		for i, e := range v {
			c.duplicates(path+"["+strconv.Itoa(i)+"]", shape+"[]", e)
		}
	}
}

// leadsToKeyedList reports whether a value of shape is a keyed list or
// may hold one: the shape is a keyed list's or the start of one's. The
// root's shape is "", and so is that of a value under a key "" at the
// root (join), whose own values' shapes start with no "." or "[]": it
// leads anywhere (an outside review found a keyed list's key twice under
// such a key left out).
func (c *comparer) leadsToKeyedList(shape string) bool {
	if shape == "" {
		return true
	}
	for k := range c.opts.KeyedLists {
		if k == shape || strings.HasPrefix(k, shape+".") || strings.HasPrefix(k, shape+"[]") {
			return true
		}
	}
	return false
}

// keyOf is the key of element v of a list keyed by field key: the field's
// string value, else the element's JSON.
func keyOf(v any, key string) string {
	if m, ok := v.(map[string]any); ok {
		if k, ok := m[key].(string); ok {
			return k
		}
	}
	return encode(v)
}

func (c *comparer) keyedList(path, shape, key string, g, w []any) {
	wantBy := map[string]any{}
	for _, wv := range w {
		wantBy[keyOf(wv, key)] = wv
	}
	seen := map[string]bool{}
	for _, gv := range g {
		k := keyOf(gv, key)
		at := path + "[" + k + "]"
		if seen[k] {
			c.add(at, shape+"[]", gv, nil, true, false)
			continue
		}
		seen[k] = true
		wv, ok := wantBy[k]
		c.walk(at, shape+"[]", gv, wv, true, ok)
	}
	for _, wv := range w {
		if k := keyOf(wv, key); !seen[k] {
			c.add(path+"["+k+"]", shape+"[]", nil, wv, false, true)
		}
	}
	// The order of the elements both have must be the generated one: a
	// runtime applies mounts in order, and one moved after another can
	// cover it (a /dev tmpfs mounted last hides /dev/pts and /dev/shm).
	var gotOrder, wantOrder []string
	for _, gv := range g {
		if k := keyOf(gv, key); wantBy[k] != nil && !slices.Contains(gotOrder, k) {
			gotOrder = append(gotOrder, k)
		}
	}
	for _, wv := range w {
		if k := keyOf(wv, key); seen[k] {
			wantOrder = append(wantOrder, k)
		}
	}
	if !slices.Equal(gotOrder, wantOrder) {
		c.diffs = append(c.diffs, Difference{Path: path, Shape: shape, Got: "order " + encode(gotOrder), Want: "order " + encode(wantOrder)})
	}
}

func scalars(l []any) bool {
	for _, v := range l {
		switch v.(type) {
		case map[string]any, []any:
			return false
		}
	}
	return true
}
