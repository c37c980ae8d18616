package main

import (
	"encoding/json"
	"fmt"
	"io"

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
	Params    int64  `json:"params"`
	// KV cache per token: one layer, and all layers; absent when the
	// attention variant has no KV cache.
	KVCacheBytesPerToken          *int `json:"kv_cache_bytes_per_token,omitempty"`
	KVCacheBytesPerTokenAllLayers *int `json:"kv_cache_bytes_per_token_all_layers,omitempty"`
	// Recurrent state per sequence, one layer (linear attention); absent
	// when the variant keeps none.
	StateBytesPerSequence *int       `json:"state_bytes_per_sequence,omitempty"`
	Memory                memoryInfo `json:"memory"`
}

// memoryInfo is the estimated peak memory of training the config
// (train.EstimateExperiment) and whether train would refuse it.
type memoryInfo struct {
	TotalBytes           int64  `json:"total_bytes"` // byte counts saturate at 2^63-1
	ParamBytes           int64  `json:"param_bytes"` // weights, gradients, two AdamW moments
	ActivationBytes      int64  `json:"activation_bytes"`
	TrainActivationBytes int64  `json:"train_activation_bytes"`
	EvalActivationBytes  int64  `json:"eval_activation_bytes"`
	ScratchBytes         int64  `json:"scratch_bytes"` // the dense core's T x T buffers
	Batch                int    `json:"batch_size"`
	EvalBatch            int    `json:"eval_batch_size"`
	MachineBytes         int64  `json:"machine_bytes,omitempty"` // absent where unknown
	MachineSource        string `json:"machine_source,omitempty"`
	Refused              bool   `json:"refused"`
	Refusal              string `json:"refusal,omitempty"`
}

func newInfoCmd() *cobra.Command {
	var cfgPath string
	var sets []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Print a config's model size, KV-cache bytes per token and estimated training memory",
		Long: `info prints a config's model: parameters, KV-cache bytes per token, and the
estimated peak memory of training it (parameters with their gradients and
AdamW moments, the training and evaluation graphs at their batch sizes),
against this machine's memory (MemTotal, or the cgroup limit if smaller).

A config that fits is built, as train builds it, so that every config error
shows. A config train would refuse (more memory than the machine has, or a
limit that holds everywhere: 2^31 elements in one tensor, 2^33 parameters,
1024 layers) is not built: info prints its estimate and the refusal, and
still exits 0, so that it can size runs for a larger machine.`,
		Example: `  trainer info                                       # the embedded quickstart
  trainer info --config configs/quickstart.yaml --set model.attention.kind=gqa --set model.attention.kv_heads=1
  trainer info --set model.attention.kind=mla --json
  trainer info --set task.seq_len=4096 --set train.batch_size=64   # would it fit?`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exp, err := loadExperiment(cfgPath, "", sets, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			est, task, err := train.EstimateExperiment(exp)
			if err != nil {
				return err
			}
			in := modelInfo{Name: exp.Name, Attention: exp.Model.Attention.Kind, Model: exp.Model.Kind, DType: exp.DType,
				Layers: exp.Model.NLayers, SeqLen: task.SeqLen(), Params: est.Params, Memory: memoryOf(est)}
			if est.KVCacheElems >= 0 {
				b := est.KVCacheElems * est.BytesPerElem
				in.KVCacheBytesPerToken = &b
			}
			if est.StateElems >= 0 {
				b := est.StateElems * est.BytesPerElem
				in.StateBytesPerSequence = &b
			}
			if est.Refusal == nil { // it fits: build it, as train would
				s, err := train.Build(exp)
				if err != nil {
					return err
				}
				in.Params = int64(s.Store.NumElements())
				in.KVCacheBytesPerToken = s.KVCacheBytesPerToken()
			}
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
			printInfo(w, &in, est)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "experiment YAML file (default: the embedded quickstart)")
	f.StringArrayVar(&sets, "set", nil, "override a config key by dotted path, KEY=VALUE (repeatable)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// memoryOf is the JSON form of an estimate.
func memoryOf(e *train.ResourceEstimate) memoryInfo {
	m := memoryInfo{TotalBytes: bytesOf(e.TotalBytes()), ParamBytes: bytesOf(e.ParamBytes), ActivationBytes: bytesOf(e.ActivationBytes()),
		TrainActivationBytes: bytesOf(e.TrainActivationBytes), EvalActivationBytes: bytesOf(e.EvalActivationBytes),
		ScratchBytes: bytesOf(e.ScratchBytes), Batch: e.Batch, EvalBatch: e.EvalBatch,
		MachineBytes: e.MachineBytes, MachineSource: e.MachineSource, Refused: e.Refusal != nil}
	if e.Refusal != nil {
		m.Refusal = e.Refusal.Error()
	}
	return m
}

// bytesOf rounds an estimated byte count to an int64, saturating.
func bytesOf(b float64) int64 {
	if b >= 1<<63 {
		return 1<<63 - 1
	}
	return int64(b)
}

func printInfo(w io.Writer, in *modelInfo, est *train.ResourceEstimate) {
	fmt.Fprintf(w, "%s: %s with %s attention, %d layers, seq_len %d, %s\n", in.Name, in.Model, in.Attention, in.Layers, in.SeqLen, in.DType)
	fmt.Fprintf(w, "parameters: %d\n", in.Params)
	if in.KVCacheBytesPerToken == nil {
		fmt.Fprintf(w, "kv cache: none (%s attention does not decode with a KV cache)\n", in.Attention)
	} else {
		fmt.Fprintf(w, "kv cache: %d bytes per token per layer, %d per token over %d layers\n",
			*in.KVCacheBytesPerToken, *in.KVCacheBytesPerTokenAllLayers, in.Layers)
	}
	if b := in.StateBytesPerSequence; b != nil {
		fmt.Fprintf(w, "recurrent state: %d bytes per sequence per layer, %d over %d layers, whatever the length\n", *b, *b*in.Layers, in.Layers)
	}
	// From the estimate's float64s: the JSON's int64s saturate at 8 EiB.
	fmt.Fprintf(w, "training memory: about %s (parameters %s with gradients and AdamW moments, activations %s at batch %d x T %d, evaluation batch %d)\n",
		train.HumanBytes(est.TotalBytes()), train.HumanBytes(est.ParamBytes), train.HumanBytes(est.ActivationBytes()),
		est.Batch, in.SeqLen, est.EvalBatch)
	m := in.Memory
	switch {
	case m.Refused:
		fmt.Fprintf(w, "train would refuse this config: %s\n", m.Refusal)
	case m.MachineBytes > 0:
		fmt.Fprintf(w, "this machine: %s (%s)\n", train.HumanBytes(float64(m.MachineBytes)), m.MachineSource)
	default:
		fmt.Fprintln(w, "this machine: memory unknown (not checked)")
	}
}
