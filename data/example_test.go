package data_test

import (
	"fmt"
	"log"

	"github.com/attnlab/attnlab/config"
	"github.com/attnlab/attnlab/data"
)

func ExampleNew() {
	task, err := data.New(config.Component{
		Kind:    "assoc_recall",
		Options: map[string]any{"seq_len": 32, "kv_pairs": 4},
	}, 1)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(task.(interface{ Describe() string }).Describe())

	b := data.NewBatch(task, 8)
	task.Fill(b, data.Train, 0) // examples 0..7 of the training stream
	scored := 0.0
	for _, m := range b.LossMask {
		scored += m
	}
	fmt.Println("batch:", b.Size, "x", b.SeqLen, "inputs:", len(b.Inputs), "targets:", len(b.Targets), "scored:", scored)
	fmt.Println("vocab:", task.Vocab(), "classes:", task.Classes(), "key mask:", b.KeyMask != nil)

	_, err = data.New(config.Component{Kind: "assoc_recall", Options: map[string]any{"seq_len": 0}}, 1)
	fmt.Println(err)
	// Output:
	// assoc_recall: seq_len=32 vocab=8192 kv_pairs=4 power_a=0.01
	// batch: 8 x 32 inputs: 256 targets: 256 scored: 32
	// vocab: 8192 classes: 0 key mask: false
	// task.seq_len: must be at least 32 (4 x kv_pairs), got 0
}

func ExampleNew_majority() {
	task, err := data.New(config.Component{Kind: "majority", Options: map[string]any{"seq_len": 12, "min_len": 3}}, 7)
	if err != nil {
		log.Fatal(err)
	}
	b := data.NewBatch(task, 4)
	task.Fill(b, data.Eval, 0)
	fmt.Println("classes:", task.Classes(), "targets:", len(b.Targets), "key mask:", len(b.KeyMask))
	// Output:
	// classes: 2 targets: 4 key mask: 48
}
