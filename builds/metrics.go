package builds

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the worker's build metrics.
type Metrics struct {
	Builds   *prometheus.CounterVec   // imagegen_builds_total{cloud,state}
	Duration *prometheus.HistogramVec // imagegen_build_duration_seconds{cloud,state}
}

// NewMetrics registers the build metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegen_builds_total", Help: "Cloud builds finished, by cloud and end state.",
		}, []string{"cloud", "state"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imagegen_build_duration_seconds",
			Help:    "How long one cloud's build took, by cloud and end state.",
			Buckets: []float64{1, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200},
		}, []string{"cloud", "state"}),
	}
	reg.MustRegister(m.Builds, m.Duration)
	return m
}
