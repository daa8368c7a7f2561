package status

import (
	"io"
	"testing"
)

// BenchmarkStatus10k is a status request at 10,000 endpoints on one
// network: Build from a snapshot, then each renderer (the page and the
// text list 200 of them, the JSON all).
func BenchmarkStatus10k(b *testing.B) {
	snap := wide(10000)
	for name, render := range map[string]func(io.Writer, Status) error{
		"html": WriteHTML, "json": WriteJSON, "text": WriteText,
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := render(io.Discard, Build(snap)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
