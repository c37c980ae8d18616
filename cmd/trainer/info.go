package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/attnlab/attnlab/train"
)

// modelInfo is what `trainer info` reports about a config's model.
type modelInfo struct {
	Name      string `json:"name"`
	Attention string `json:"attention"`
	Model     string `json:"model"`
	DType     string `json:"dtype"`
	Layers    int    `json:"n_layers"`
	SeqLen    int    `json:"seq_len"`
	Params    int    `json:"params"`
	// KV cache per token: one layer, and all layers; absent when the
	// attention variant has no KV cache.
	KVCacheBytesPerToken          *int `json:"kv_cache_bytes_per_token,omitempty"`
	KVCacheBytesPerTokenAllLayers *int `json:"kv_cache_bytes_per_token_all_layers,omitempty"`
}

func newInfoCmd() *cobra.Command {
	var cfgPath string
	var sets []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Build a config's model and print its size and KV-cache bytes per token",
		Example: `  trainer info                                       # the embedded quickstart
  trainer info --config configs/quickstart.yaml --set model.attention.kind=gqa --set model.attention.kv_heads=1
  trainer info --set model.attention.kind=mla --json`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exp, err := loadExperiment(cfgPath, "", sets)
			if err != nil {
				return err
			}
			s, err := train.Build(exp)
			if err != nil {
				return err
			}
			in := modelInfo{Name: exp.Name, Attention: exp.Model.Attention.Kind, Model: exp.Model.Kind, DType: exp.DType,
				Layers: exp.Model.NLayers, SeqLen: s.Task.SeqLen(), Params: s.Store.NumElements(),
				KVCacheBytesPerToken: s.KVCacheBytesPerToken()}
			if b := in.KVCacheBytesPerToken; b != nil {
				all := *b * exp.Model.NLayers
				in.KVCacheBytesPerTokenAllLayers = &all
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(in)
			}
			fmt.Fprintf(w, "%s: %s with %s attention, %d layers, seq_len %d, %s\n", in.Name, in.Model, in.Attention, in.Layers, in.SeqLen, in.DType)
			fmt.Fprintf(w, "parameters: %d\n", in.Params)
			if in.KVCacheBytesPerToken == nil {
				fmt.Fprintf(w, "kv cache: none (%s attention does not decode with a KV cache)\n", in.Attention)
			} else {
				fmt.Fprintf(w, "kv cache: %d bytes per token per layer, %d per token over %d layers\n",
					*in.KVCacheBytesPerToken, *in.KVCacheBytesPerTokenAllLayers, in.Layers)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "experiment YAML file (default: the embedded quickstart)")
	f.StringArrayVar(&sets, "set", nil, "override a config key by dotted path, KEY=VALUE (repeatable)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
