package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// RuleJSONStrict is the rule the strict decoder reports under.
const RuleJSONStrict = "json-strict"

// DecodeSpec reads a runtime spec the way a reviewer needs it read: every
// key must be a field of runtime-spec, spelled exactly, and appear once per
// object. Go's decoder (and runc with it) matches keys case-insensitively and
// keeps the last of duplicate keys; crun and youki do not, so such a file
// means different things to different runtimes, and the auditor would judge
// another spec than the one that runs. Those are findings. An error means
// the input is not JSON or not a spec at all.
func DecodeSpec(b []byte) (*specs.Spec, []Finding, error) {
	var s specs.Spec
	findings, err := DecodeStrict(b, &s)
	if err != nil {
		return nil, nil, err
	}
	return &s, findings, nil
}

// DecodeStrict decodes b into v (a pointer to a struct) and reports keys
// that are unknown, differ in case from a field, or repeat.
func DecodeStrict(b []byte, v any) ([]Finding, error) {
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	w := &strictWalker{dec: json.NewDecoder(bytes.NewReader(b))}
	w.dec.UseNumber()
	if err := w.value(reflect.TypeOf(v).Elem(), ""); err != nil {
		return nil, err
	}
	if _, err := w.dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON document")
	}
	return w.findings, nil
}

type strictWalker struct {
	dec      *json.Decoder
	findings []Finding
}

func (w *strictWalker) add(path, format string, args ...any) {
	w.findings = append(w.findings, Finding{Rule: RuleJSONStrict, Path: path, Message: fmt.Sprintf(format, args...)})
}

// value consumes one JSON value that is to be decoded into a t.
func (w *strictWalker) value(t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := w.dec.Token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar: json.Unmarshal already checked its type
	}
	switch d {
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.value(elem, path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	case '{':
		seen := map[string]bool{}
		for w.dec.More() {
			kt, err := w.dec.Token()
			if err != nil {
				return err
			}
			key, _ := kt.(string)
			at := join(path, key)
			if seen[key] {
				w.add(at, "key %q appears more than once: Go and runc take the last, other runtimes the first", key)
			}
			seen[key] = true
			var next reflect.Type
			switch {
			case t == nil || t.Kind() == reflect.Interface:
			case t.Kind() == reflect.Map:
				next = t.Elem()
			case t.Kind() == reflect.Struct:
				exact, folded := fieldFor(t, key)
				switch {
				case exact != nil:
					next = exact.Type
				case folded != nil:
					w.add(at, "key %q differs in case from the field %q: Go and runc accept it, other runtimes ignore it", key, jsonName(*folded))
					next = folded.Type
				default:
					w.add(at, "unknown field %q: not part of runtime-spec %s", key, specs.Version)
				}
			}
			if err := w.value(next, at); err != nil {
				return err
			}
		}
	}
	_, err = w.dec.Token() // the closing delimiter
	return err
}

// fieldFor finds t's field named key in JSON, exactly or ignoring case,
// looking into embedded structs as encoding/json does.
func fieldFor(t reflect.Type, key string) (exact, folded *reflect.StructField) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Tag.Get("json") == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				e, fo := fieldFor(et, key)
				if e != nil {
					return e, nil
				}
				if folded == nil {
					folded = fo
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		name := jsonName(f)
		if name == "-" {
			continue
		}
		if name == key {
			return &f, nil
		}
		if folded == nil && strings.EqualFold(name, key) {
			folded = &f
		}
	}
	return nil, folded
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "" {
		return f.Name
	}
	return name
}
