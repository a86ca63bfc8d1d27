package transform

import (
	"fmt"
	"io"
	"math/rand"
	"runtime"
	"testing"
)

// TestEncoderMemory: what an Encoder keeps after a segment long enough to
// fill every frame buffer it may use (the buffers go back to its free list;
// the zstd encoders keep their history and tables) stays within
// EncoderMemory, the figure the upload's memory bound and Go memory limit
// are made of, at every level and core count.
func TestEncoderMemory(t *testing.T) {
	data := make([]byte, 48<<20) // (2w+2) frames for w = 4, and more
	r := rand.New(rand.NewSource(1))
	words := []string{"alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta ", "eta\n"}
	for i := 0; i < len(data); {
		w := words[r.Intn(len(words))]
		if r.Intn(4) == 0 {
			w = fmt.Sprintf("%d ", r.Int63())
		}
		i += copy(data[i:], w)
	}
	for _, level := range []int{1, 3, 6, 10} {
		for _, procs := range []int{1, 2, 4} {
			t.Run(fmt.Sprintf("zstd:%d on %d cores", level, procs), func(t *testing.T) {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
				spec := Spec{Compress: CompressZstd, Level: level}
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				enc, err := NewEncoder(spec, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer enc.Close()
				sw, err := enc.NewSegment(io.Discard)
				if err != nil {
					t.Fatal(err)
				}
				for off := 0; off < len(data); off += 1 << 20 {
					if _, err := sw.Write(data[off : off+1<<20]); err != nil {
						t.Fatal(err)
					}
				}
				if err := sw.Close(); err != nil {
					t.Fatal(err)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
				bound := EncoderMemory(spec)
				t.Logf("holds %d MiB, EncoderMemory %d MiB", held>>20, bound>>20)
				if held > bound {
					t.Errorf("the encoder holds %d MiB, EncoderMemory says at most %d MiB", held>>20, bound>>20)
				}
				runtime.KeepAlive(enc)
			})
		}
	}
}
