// Package docs embeds the documents that are contracts, so that what is
// checked is the very file that is published: ResultSchema is
// result.schema.json, the JSON Schema of the Result `nsn-run run --json`
// prints, and ValidateResult checks a document against it (the task
// package's tests do, on marshalled Results of every shape, and the
// integration tests on the CLI's real output).
package docs

import (
	"bytes"
	_ "embed"
	"fmt"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// ResultSchema is docs/result.schema.json.
//
//go:embed result.schema.json
var ResultSchema []byte

// resultSchema compiles ResultSchema once, asserting formats (date-time),
// which draft 2020-12 otherwise only annotates.
var resultSchema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(ResultSchema))
	if err != nil {
		return nil, fmt.Errorf("read result.schema.json: %w", err)
	}
	const url = "result.schema.json"
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("load result.schema.json: %w", err)
	}
	s, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("compile result.schema.json: %w", err)
	}
	return s, nil
})

// ValidateResult checks one JSON document against ResultSchema.
func ValidateResult(data []byte) error {
	s, err := resultSchema()
	if err != nil {
		return err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("result is not JSON: %w", err)
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("result does not match result.schema.json: %w", err)
	}
	return nil
}
