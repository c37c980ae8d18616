// Package finitejson marshals values to JSON like encoding/json, except that
// a NaN or infinite float becomes null instead of failing the whole
// encoding: a run whose evaluation loss is NaN must still get its
// summary.json, with the figure that could not be computed left empty.
package finitejson

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
)

// Marshal is json.Marshal with NaN and ±Inf written as null.
func Marshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	var uv *json.UnsupportedValueError
	if err == nil || !errors.As(err, &uv) {
		return b, err
	}
	return json.Marshal(sanitize(reflect.ValueOf(v)))
}

// MarshalIndent is json.MarshalIndent with NaN and ±Inf written as null.
func MarshalIndent(v any, prefix, indent string) ([]byte, error) {
	b, err := Marshal(v)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, prefix, indent); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// sanitize returns a value that encodes as v does, with non-finite floats
// replaced by nil. Structs become ordered field lists (keeping the field
// order and the json tags' names and omitempty), so the output reads as
// encoding/json's would.
func sanitize(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Invalid:
		return nil
	case reflect.Float32, reflect.Float64:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil
		}
		return v.Interface()
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return sanitize(v.Elem())
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return nil
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = sanitize(v.Index(i))
		}
		return out
	case reflect.Map:
		if v.IsNil() {
			return nil
		}
		out := make(map[string]any, v.Len())
		it := v.MapRange()
		for it.Next() {
			k, err := json.Marshal(it.Key().Interface())
			if err != nil {
				return v.Interface()
			}
			key := string(k)
			if len(key) >= 2 && key[0] == '"' {
				key = key[1 : len(key)-1]
			}
			out[key] = sanitize(it.Value())
		}
		return out
	case reflect.Struct:
		return sanitizeStruct(v)
	}
	return v.Interface()
}

// object is a JSON object whose keys keep their order.
type object []field

type field struct {
	name  string
	value any
}

func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.name)
		b.Write(k)
		b.WriteByte(':')
		val, err := json.Marshal(f.value)
		if err != nil {
			return nil, err
		}
		b.Write(val)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func sanitizeStruct(v reflect.Value) any {
	if _, ok := v.Interface().(json.Marshaler); ok {
		return v.Interface()
	}
	t := v.Type()
	var o object
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, opts := sf.Name, ""
		if tag, ok := sf.Tag.Lookup("json"); ok {
			if tag == "-" {
				continue
			}
			name, opts, _ = cut(tag)
			if name == "" {
				name = sf.Name
			}
		}
		fv := v.Field(i)
		if hasOpt(opts, "omitempty") && fv.IsZero() && emptyKind(fv) {
			continue
		}
		o = append(o, field{name, sanitize(fv)})
	}
	return o
}

// emptyKind reports whether encoding/json's omitempty applies to v's kind
// (it omits false, 0, nil pointers and interfaces, empty arrays, slices,
// maps and strings; never structs).
func emptyKind(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Struct:
		return false
	case reflect.Array:
		return v.Len() == 0
	}
	return true
}

func cut(tag string) (name, opts string, ok bool) {
	for i := 0; i < len(tag); i++ {
		if tag[i] == ',' {
			return tag[:i], tag[i+1:], true
		}
	}
	return tag, "", false
}

func hasOpt(opts, want string) bool {
	for opts != "" {
		var o string
		o, opts, _ = cut(opts)
		if o == want {
			return true
		}
	}
	return false
}
