// Package config holds what an experiment is made of before anything is built:
// the YAML schema (strict: an unknown key is an error naming the key and its
// line), --set overrides by dotted path (where switching a component's kind
// drops the options the new kind does not take), validation, and the option
// specs and registries through which attention variants and tasks declare
// their own options.
package config
