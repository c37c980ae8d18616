package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
	"github.com/attnlab/attnlab/layers"
	"github.com/attnlab/attnlab/models"
)

type listedOption struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Default any    `json:"default"`
	Help    string `json:"help"`
}

type listed struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Support     *listedSupport `json:"support,omitempty"` // attention variants only
	Options     []listedOption `json:"options"`
}

// listedSupport is an attention variant's declaration (layers.Support):
// the settings it works in, and why it refuses the others.
type listedSupport struct {
	Causal        bool           `json:"causal"`
	Bidirectional bool           `json:"bidirectional"`
	Padding       bool           `json:"padding"`
	Positions     []string       `json:"positions"`
	Why           listedRefusals `json:"why"`
	CheckOptions  map[string]any `json:"check_options,omitempty"` // what trainer gradcheck builds it with
	text          string
}

type listedRefusals struct {
	Causal        string `json:"causal,omitempty"`
	Bidirectional string `json:"bidirectional,omitempty"`
	Padding       string `json:"padding,omitempty"`
	Positions     string `json:"positions,omitempty"`
}

// attentionEntries lists the attention variants with their declarations.
func attentionEntries() ([]listed, error) {
	ls := entries(layers.Variants())
	for i := range ls {
		s, err := layers.SupportOf(ls[i].Name)
		if err != nil {
			return nil, err
		}
		ls[i].Support = &listedSupport{Causal: s.Causal, Bidirectional: s.Bidirectional, Padding: s.Padding, Positions: s.Positions,
			Why: listedRefusals(s.Why), CheckOptions: s.CheckOptions, text: s.String()}
	}
	return ls, nil
}

func entries[F any](es []config.Entry[F]) []listed {
	out := make([]listed, 0, len(es))
	for _, e := range es {
		l := listed{Name: e.Name, Description: e.Description, Options: []listedOption{}}
		for _, o := range e.Options {
			l.Options = append(l.Options, listedOption{o.Name, o.Kind.String(), o.Default, o.Help})
		}
		out = append(out, l)
	}
	return out
}

func newListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the attention variants (with what each supports) and tasks, with their options",
		Example: `  trainer list
  trainer list --json | jq '.attention[].name'`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			attn, err := attentionEntries()
			if err != nil {
				return err
			}
			v := struct {
				Attention []listed `json:"attention"`
				Tasks     []listed `json:"tasks"`
				Memory    []listed `json:"memory"`
				Modules   []listed `json:"block_modules"`
			}{attn, entries(data.Entries()), entries(models.MemoryKinds()), entries(layers.Modules())}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			section := func(title string, ls []listed) {
				fmt.Fprintf(tw, "%s\n", title)
				for _, l := range ls {
					fmt.Fprintf(tw, "  %s\t%s\n", l.Name, l.Description)
					if l.Support != nil {
						fmt.Fprintf(tw, "  \t    supports: %s\n", l.Support.text)
					}
					for _, o := range l.Options {
						fmt.Fprintf(tw, "  \t    %s: %s (%s, default %s)\n", o.Name, o.Help, o.Type, defaultText(o.Default))
					}
				}
			}
			section("ATTENTION (model.attention.kind)", v.Attention)
			fmt.Fprintln(tw)
			section("TASKS (task.kind)", v.Tasks)
			fmt.Fprintln(tw)
			section("MEMORY KINDS (model.memory.kind; none = the plain model)", v.Memory)
			fmt.Fprintln(tw)
			section("BLOCK MODULES (model.block_modules)", v.Modules)
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// defaultText is an option's default as a config would spell it: a list
// as [64,256,1024], which --set takes back.
func defaultText(v any) string {
	if xs, ok := v.([]int); ok {
		parts := make([]string, len(xs))
		for i, x := range xs {
			parts[i] = strconv.Itoa(x)
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	return fmt.Sprint(v)
}
