// Package configs embeds the experiment files shipped with attnlab, so that
// the trainer binary runs the quickstart (and the reference benchmarks) with
// no files beside it.
package configs

import "embed"

// FS holds quickstart.yaml, majority.yaml and bench/*.yaml.
//
//go:embed quickstart.yaml majority.yaml bench/*.yaml
var FS embed.FS

// Quickstart is the name of the default experiment in FS.
const Quickstart = "quickstart.yaml"
