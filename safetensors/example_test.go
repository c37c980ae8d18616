package safetensors_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/attnlab/attnlab/safetensors"
)

func ExampleWriteFile() {
	dir, err := os.MkdirTemp("", "safetensors-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "checkpoint.safetensors")

	tensors := []safetensors.Tensor{
		{Name: "embed.weight", Shape: []int{2, 3}, Data: []float32{0.1, 0.2, 0.3, 0.4, 0.5, 0.6}},
		{Name: "step", Data: []int64{1000}}, // a scalar
	}
	// In Python: safetensors.torch.load_file(path) gives the same tensors.
	if err := safetensors.WriteFile(path, tensors, map[string]string{"format": "pt"}); err != nil {
		log.Fatal(err)
	}

	f, err := safetensors.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	for _, t := range f.Tensors {
		fmt.Println(t.Name, t.Shape, t.Data)
	}
	w, _ := f.Get("embed.weight")
	fmt.Println(w.Data.([]float32)[4], f.Metadata["format"])
	// Output:
	// embed.weight [2 3] [0.1 0.2 0.3 0.4 0.5 0.6]
	// step [] [1000]
	// 0.5 pt
}
