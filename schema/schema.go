// Package schema holds the JSON Schemas of imagegen's files, for editors
// (# yaml-language-server: $schema=...) and for serving; tests keep them in step with the parsers.
package schema

import _ "embed"

// Generator is the JSON Schema (draft 2020-12) of a generator spec, .imagegen/<name>.yaml.
//
//go:embed generator.schema.json
var Generator []byte

// Config is the JSON Schema (draft 2020-12) of the server config, imagegen.yaml.
//
//go:embed config.schema.json
var Config []byte
