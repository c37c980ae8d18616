//go:build !unix

package train

func peakRSS() int64 { return 0 }
