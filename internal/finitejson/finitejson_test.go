package finitejson

import (
	"encoding/json"
	"math"
	"testing"
)

type inner struct {
	X float64 `json:"x"`
}

type sample struct {
	Name  string   `json:"name"`
	Loss  float64  `json:"loss"`
	Acc   float64  `json:"acc"`
	Opt   *float64 `json:"opt,omitempty"`
	Skip  *int     `json:"skip,omitempty"`
	Inner inner    `json:"inner"`
	List  []float64
	Int   int `json:"n"`
}

func TestNonFiniteBecomesNull(t *testing.T) {
	inf := math.Inf(1)
	cases := []struct {
		name string
		v    any
		want string
	}{
		{"finite struct is encoding/json's", sample{Name: "a", Loss: 1.5, List: []float64{1}}, ""},
		{"NaN field", sample{Name: "a", Loss: math.NaN(), Acc: 0.5, Opt: &inf, Inner: inner{math.Inf(-1)}, List: []float64{1, math.NaN()}, Int: 3},
			`{"name":"a","loss":null,"acc":0.5,"opt":null,"inner":{"x":null},"List":[1,null],"n":3}`},
		{"bare NaN", math.NaN(), "null"},
		{"map", map[string]float64{"a": math.NaN(), "b": 2}, `{"a":null,"b":2}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Marshal(c.v)
			if err != nil {
				t.Fatal(err)
			}
			want := c.want
			if want == "" {
				b, err := json.Marshal(c.v)
				if err != nil {
					t.Fatal(err)
				}
				want = string(b)
			}
			if string(got) != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestMarshalIndent(t *testing.T) {
	got, err := MarshalIndent(struct {
		A float64 `json:"a"`
	}{math.NaN()}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "{\n  \"a\": null\n}" {
		t.Errorf("got %q", got)
	}
}
