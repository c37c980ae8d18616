// Package report turns the result rows of a sweep (package sweep) into
// what a person reads: report.md, with one table per task comparing the
// grid points on accuracy (mean and spread over seeds), speed and memory,
// and plots/, the figures the long-range and recall literature compares
// attention variants with:
//
//   - accuracy against training throughput, with peak memory as the bubble
//     size, one point per variant and one figure per task (Long Range
//     Arena's figure);
//   - accuracy against model width (model.d_model), one line per variant
//     and one figure per sequence length (Zoology's figure), when the grid
//     varies d_model;
//   - step time and peak memory against sequence length on log-log axes,
//     with each variant's fitted power (the slope) in the label at its
//     line's end, when the grid varies task.seq_len.
//
// It exists apart from package sweep so that the bookkeeping of runs does
// not depend on plotting, and so that a report can be rebuilt from any set
// of run folders (trainer report) without running anything.
package report
