package manifest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// bigManifest is n Debian packages, deterministic for a seed: mostly amd64,
// some all, a few i386, versions with epochs and tildes.
func bigManifest(n int, seed uint64) *Manifest {
	r := rand.New(rand.NewPCG(seed, 0))
	m := &Manifest{OS: OS{ID: "debian", VersionID: "12", PrettyName: "Debian GNU/Linux 12 (bookworm)"}, Kernel: "6.1.0-25-cloud-amd64", Arch: "x86_64"}
	m.Packages = make([]Package, 0, n)
	for i := range n {
		arch := "amd64"
		switch {
		case i%3 == 0:
			arch = "all"
		case i%97 == 0:
			arch = "i386"
		}
		v := fmt.Sprintf("%d.%d.%d-%d~deb12u%d", r.IntN(10), r.IntN(30), r.IntN(100), 1+r.IntN(5), 1+r.IntN(3))
		if i%11 == 0 {
			v = "1:" + v
		}
		m.Packages = append(m.Packages, Package{Deb, fmt.Sprintf("package-%06d", i), v, arch})
	}
	m.Sort()
	return m
}

// drifted is m with about 5% of versions upgraded, 1% downgraded, 1%
// removed and 1% added: the shape of a month of updates.
func drifted(m *Manifest) *Manifest {
	c := m.Clone()
	r := rand.New(rand.NewPCG(99, 0))
	out := c.Packages[:0]
	for _, p := range c.Packages {
		switch x := r.IntN(100); {
		case x < 5:
			p.Version += "+b1"
		case x < 6:
			p.Version = "0:" + strings.TrimPrefix(p.Version, "1:") + "~old"
		case x < 7:
			continue
		}
		out = append(out, p)
	}
	c.Packages = out
	for i := range len(m.Packages) / 100 {
		c.Packages = append(c.Packages, Package{Deb, fmt.Sprintf("new-package-%06d", i), "1.0-1", "amd64"})
	}
	c.Sort()
	return c
}

// dpkgOutput is what the script prints for m on a dpkg machine.
func dpkgOutput(m *Manifest, marker string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s begin 1\n\n%s start os-release\nID=debian\nVERSION_ID=\"12\"\n\n%s stop os-release 0\n", marker, marker, marker)
	fmt.Fprintf(&b, "\n%s start uname\n6.1.0-25-cloud-amd64\nx86_64\n\n%s stop uname 0\n\n%s start dpkg\n", marker, marker, marker)
	for _, p := range m.Packages {
		fmt.Fprintf(&b, "ii \t%s\t%s\t%s\n", p.Name, p.Version, p.Arch)
	}
	fmt.Fprintf(&b, "\n%s stop dpkg 0\n\n%s absent rpm\n\n%s absent apk\n\n%s done\n", marker, marker, marker, marker)
	return []byte(b.String())
}

func BenchmarkParse3000(b *testing.B) {
	out := dpkgOutput(bigManifest(3000, 1), "@@M@@")
	b.SetBytes(int64(len(out)))
	b.ReportAllocs()
	for b.Loop() {
		m, st := parse(out, "@@M@@", Options{})
		if !st.done || len(m.Packages) != 3000 {
			b.Fatalf("%d packages, %+v, %q", len(m.Packages), st, m.Notes)
		}
	}
}

func BenchmarkEncode3000(b *testing.B) {
	m := bigManifest(3000, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode3000(b *testing.B) {
	doc, err := Encode(bigManifest(3000, 1))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(doc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompress3000(b *testing.B) {
	doc, err := Encode(bigManifest(3000, 1))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	var z []byte
	for b.Loop() {
		if z, err = Compress(doc); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(z)), "gzipped-B")
}

// BenchmarkCollectLocal runs the whole script on this machine (its ~1000
// dpkg packages) through the local runner: the cost of a collection without
// the network.
func BenchmarkCollectLocal(b *testing.B) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		b.Skip("not a dpkg machine")
	}
	b.ReportAllocs()
	for b.Loop() {
		m, err := Collect(context.Background(), execRunner{}, Options{})
		if err != nil || m.Partial {
			b.Fatal(err, m.Notes)
		}
	}
}

// peakHeap samples the live heap while f runs and returns the highest
// value above the heap before it (after a GC): the memory the operation
// needed at once, which B/op (all it allocated) bounds from above.
func peakHeap(f func()) uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	runtime.GC()
	base := read()
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(200 * time.Microsecond)
		defer t.Stop()
		for {
			if v := read(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	f()
	if v := read(); v > peak.Load() {
		peak.Store(v)
	}
	close(stop)
	<-done
	if p := peak.Load(); p > base {
		return p - base
	}
	return 0
}

// BenchmarkDiff50000: the budget is 50 ms and 64 MiB for two
// 50 000-package manifests.
func BenchmarkDiff50000(b *testing.B) {
	a := bigManifest(50_000, 1)
	c := drifted(a)
	b.Run("OverTime", func(b *testing.B) {
		var ch *Changes
		peak := peakHeap(func() { ch, _ = OverTime(a, c, DriftOptions{Ignore: []string{"linux-image-*", "cloud-init"}}) })
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if ch, err = OverTime(a, c, DriftOptions{Ignore: []string{"linux-image-*", "cloud-init"}}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(peak), "peak-heap-B")
		b.ReportMetric(float64(len(ch.Changes)), "changes")
	})
	b.Run("AcrossClouds3", func(b *testing.B) {
		ms := []CloudManifest{{"a", a}, {"b", c}, {"c", drifted(c)}}
		var d *CloudDrift
		peak := peakHeap(func() { d, _ = AcrossClouds(ms, DriftOptions{}) })
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if d, err = AcrossClouds(ms, DriftOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(peak), "peak-heap-B")
		b.ReportMetric(float64(len(d.Differences)), "differences")
	})
}

// TestDiffBudget keeps the benchmark's promise in the ordinary test run,
// with room for a loaded machine: two 50 000-package manifests compare in
// well under the budget's 64 MiB (allocations are counted, not timed: time
// on a shared CI machine says little).
func TestDiffBudget(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("short, or the race detector (which allocates for itself)")
	}
	a := bigManifest(50_000, 1)
	c := drifted(a)
	allocs := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := OverTime(a, c, DriftOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	if mb := allocs.AllocedBytesPerOp() >> 20; mb > 64 {
		t.Errorf("OverTime on 50 000 packages allocates %d MiB, over the 64 MiB budget", mb)
	}
	t.Logf("OverTime, 50 000 packages: %s/op, %d KiB/op", time.Duration(allocs.NsPerOp()), allocs.AllocedBytesPerOp()>>10)
}
