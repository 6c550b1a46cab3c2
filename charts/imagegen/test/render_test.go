package charttest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// chartDir is the chart under test, relative to this package.
const chartDir = ".."

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor the chart
// renders. The operator's Go types pull in half of Prometheus, so the fields are
// spelled here, from the CRD, and decoded strictly like the rest.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// chart is one rendering, decoded and indexed by kind and name.
type chart struct {
	deployments     map[string]*appsv1.Deployment
	statefulSets    map[string]*appsv1.StatefulSet
	services        map[string]*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	secrets         map[string]*corev1.Secret
	serviceAccounts map[string]*corev1.ServiceAccount
	ingresses       map[string]*networkingv1.Ingress
	pdbs            map[string]*policyv1.PodDisruptionBudget
	hpas            map[string]*autoscalingv2.HorizontalPodAutoscaler
	serviceMonitors map[string]*serviceMonitor
}

func (c *chart) counts() map[string]int {
	return map[string]int{
		"Deployment": len(c.deployments), "StatefulSet": len(c.statefulSets), "Service": len(c.services),
		"ConfigMap": len(c.configMaps), "Secret": len(c.secrets), "ServiceAccount": len(c.serviceAccounts),
		"Ingress": len(c.ingresses), "PodDisruptionBudget": len(c.pdbs),
		"HorizontalPodAutoscaler": len(c.hpas), "ServiceMonitor": len(c.serviceMonitors),
	}
}

// helmBin finds helm: $HELM (set by make chart-test), then the repository's
// .cache/bin, then PATH.
func helmBin(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		if _, err := os.Stat(h); err != nil {
			t.Fatalf("HELM=%s: %v", h, err)
		}
		return h
	}
	if h, err := filepath.Abs("../../../.cache/bin/helm"); err == nil {
		if _, err := os.Stat(h); err == nil {
			return h
		}
	}
	h, err := exec.LookPath("helm")
	if err != nil {
		t.Skip("helm is not installed: run `make chart-test`, which installs it into .cache/bin")
	}
	return h
}

// helmTemplate runs helm template with the values files and --set flags; it
// returns helm's output, or helm's error message.
func helmTemplate(t *testing.T, values []string, set []string) ([]byte, error) {
	t.Helper()
	// A helm built with go install assumes Kubernetes 1.20 unless told.
	kube := os.Getenv("KUBE_VERSION")
	if kube == "" {
		kube = "v1.34.0"
	}
	args := []string{"template", "imagegen", chartDir, "--namespace", "builds", "--kube-version", kube}
	for _, v := range values {
		args = append(args, "--values", filepath.Join(chartDir, v))
	}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	cmd := exec.Command(helmBin(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// decode splits helm's output and decodes every document strictly (unknown or
// duplicate fields are errors) into its API type, checking apiVersion per kind.
func decode(t *testing.T, out []byte) *chart {
	t.Helper()
	c := &chart{
		deployments: map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{},
		services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, serviceAccounts: map[string]*corev1.ServiceAccount{},
		ingresses: map[string]*networkingv1.Ingress{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{}, serviceMonitors: map[string]*serviceMonitor{},
	}
	for _, doc := range docSep.Split(string(out), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, doc)
		}
		name := tm.Metadata.Name
		if name == "" {
			t.Fatalf("a %s without a name:\n%s", tm.Kind, doc)
		}
		var obj any
		var apiVersion string
		switch tm.Kind {
		case "Deployment":
			o := &appsv1.Deployment{}
			obj, apiVersion, c.deployments[name] = o, "apps/v1", o
		case "StatefulSet":
			o := &appsv1.StatefulSet{}
			obj, apiVersion, c.statefulSets[name] = o, "apps/v1", o
		case "Service":
			o := &corev1.Service{}
			obj, apiVersion, c.services[name] = o, "v1", o
		case "ConfigMap":
			o := &corev1.ConfigMap{}
			obj, apiVersion, c.configMaps[name] = o, "v1", o
		case "Secret":
			o := &corev1.Secret{}
			obj, apiVersion, c.secrets[name] = o, "v1", o
		case "ServiceAccount":
			o := &corev1.ServiceAccount{}
			obj, apiVersion, c.serviceAccounts[name] = o, "v1", o
		case "Ingress":
			o := &networkingv1.Ingress{}
			obj, apiVersion, c.ingresses[name] = o, "networking.k8s.io/v1", o
		case "PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			obj, apiVersion, c.pdbs[name] = o, "policy/v1", o
		case "HorizontalPodAutoscaler":
			o := &autoscalingv2.HorizontalPodAutoscaler{}
			obj, apiVersion, c.hpas[name] = o, "autoscaling/v2", o
		case "ServiceMonitor":
			o := &serviceMonitor{}
			obj, apiVersion, c.serviceMonitors[name] = o, "monitoring.coreos.com/v1", o
		default:
			t.Fatalf("%s %s: a kind this test does not know; add its API type", tm.Kind, name)
		}
		if tm.APIVersion != apiVersion {
			t.Errorf("%s %s: apiVersion %q, want %q", tm.Kind, name, tm.APIVersion, apiVersion)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Errorf("%s %s does not decode strictly: %v", tm.Kind, name, err)
		}
	}
	return c
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// renderCase is one set of values the chart must render into a coherent release.
type renderCase struct {
	name   string
	values []string
	set    []string
	// existing are the Secrets the operator made (name/key -> a stand-in value);
	// every other Secret reference must be to the chart's own Secret.
	existing map[string]string
	kinds    map[string]int
	grace    int64 // the worker's terminationGracePeriodSeconds
	// configErr: the config must fail to load with this (empty: it must load).
	configErr string
}

func renderCases() []renderCase {
	base := map[string]int{"Deployment": 2, "StatefulSet": 1, "Service": 3, "ConfigMap": 1, "Secret": 1,
		"ServiceAccount": 1, "PodDisruptionBudget": 2, "Ingress": 0, "HorizontalPodAutoscaler": 0, "ServiceMonitor": 0}
	with := func(changes map[string]int) map[string]int {
		m := map[string]int{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range changes {
			m[k] = v
		}
		return m
	}
	return []renderCase{
		{
			name:  "defaults",
			kinds: base,
			grace: 10*60 + 60,
		},
		{
			name:     "all optional parts on",
			values:   []string{"ci/all-on-values.yaml"},
			existing: map[string]string{"my-aws-config/config": "[default]\nregion = us-east-1\n"},
			kinds:    with(map[string]int{"Ingress": 1, "HorizontalPodAutoscaler": 1, "ServiceMonitor": 1}),
			grace:    1200,
		},
		{
			name:   "redis sentinel, every secret from the operator",
			values: []string{"ci/redis-sentinel-values.yaml"},
			existing: map[string]string{
				"imagegen-github/token": "ghp_placeholder", "imagegen-github/webhook-secret": "placeholder-webhook-secret",
				"imagegen-keys/encryption-key": strings.Repeat("ab", 32),
				"imagegen-keys/api-token-ci":   "placeholder-token-0123456789", "imagegen-keys/api-token-ops": "placeholder-token-9876543210",
				"imagegen-redis/sentinel-password": "placeholder", "imagegen-redis/password": "placeholder",
			},
			kinds: with(map[string]int{"StatefulSet": 0, "Service": 2, "Secret": 0}),
			grace: 10*60 + 60,
		},
		{
			name:   "redis cluster",
			values: []string{"ci/redis-cluster-values.yaml"},
			kinds:  with(map[string]int{"StatefulSet": 0, "Service": 2}),
			grace:  10*60 + 60,
		},
		{
			name:   "redis by URL, no PDB, the operator's service account",
			values: []string{"ci/redis-standalone-values.yaml"},
			existing: map[string]string{
				"imagegen-github/token": "ghp_placeholder",
				"imagegen-redis/url":    "redis://:placeholder@redis.example.org:6379/3",
			},
			kinds: with(map[string]int{"StatefulSet": 0, "Service": 2, "PodDisruptionBudget": 0, "ServiceAccount": 0}),
			grace: 10*60 + 60,
		},
		{
			name:  "builds may finish on SIGTERM: shutdownGrace adds to the grace period",
			set:   []string{"config.build.shutdownGrace=30m"},
			kinds: base,
			grace: 30*60 + 10*60 + 60,
		},
		{
			name:  "no Redis password, no persistence, grace from a compound duration",
			set:   []string{"redis.bundled.auth.enabled=false", "redis.bundled.persistence.enabled=false", "config.build.cleanupTimeout=1h2m30s"},
			kinds: base,
			grace: 3750 + 60,
		},
	}
}

func TestRender(t *testing.T) {
	for _, tc := range renderCases() {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helmTemplate(t, tc.values, tc.set)
			if err != nil {
				t.Fatal(err)
			}
			c := decode(t, out)
			for kind, want := range tc.kinds {
				if got := c.counts()[kind]; got != want {
					t.Errorf("%d %s objects, want %d", got, kind, want)
				}
			}
			checkWorkloads(t, c)
			checkServerAndWorker(t, c, tc)
			checkSecretRefs(t, c, tc.existing)
			checkSelectors(t, c)
			checkNoSecretInConfig(t, c, tc.existing)
			checkConfigLoads(t, c, tc)
		})
	}
}

// podSpecs lists every workload's pod template.
func podSpecs(c *chart) map[string]*corev1.PodTemplateSpec {
	m := map[string]*corev1.PodTemplateSpec{}
	for n, d := range c.deployments {
		m["Deployment "+n] = &d.Spec.Template
	}
	for n, s := range c.statefulSets {
		m["StatefulSet "+n] = &s.Spec.Template
	}
	return m
}

// checkWorkloads: every container is probed, limited, and runs as a non-root
// user that cannot gain privileges or write its image.
func checkWorkloads(t *testing.T, c *chart) {
	t.Helper()
	for name, p := range podSpecs(c) {
		sc := p.Spec.SecurityContext
		if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s: pod securityContext.runAsNonRoot is not true", name)
		}
		if sc != nil && (sc.RunAsUser == nil || *sc.RunAsUser == 0) {
			t.Errorf("%s: pod securityContext.runAsUser is not a non-root uid", name)
		}
		if p.Spec.AutomountServiceAccountToken == nil || *p.Spec.AutomountServiceAccountToken {
			t.Errorf("%s: mounts a service account token it never uses", name)
		}
		if len(p.Spec.Containers) == 0 {
			t.Errorf("%s: no containers", name)
		}
		for _, ct := range p.Spec.Containers {
			at := name + " container " + ct.Name
			if ct.LivenessProbe == nil || ct.ReadinessProbe == nil {
				t.Errorf("%s: needs both a liveness and a readiness probe", at)
			}
			ports := map[string]bool{}
			for _, p := range ct.Ports {
				ports[p.Name] = true
			}
			for _, pr := range []*corev1.Probe{ct.LivenessProbe, ct.ReadinessProbe, ct.StartupProbe} {
				if pr != nil && pr.HTTPGet != nil && pr.HTTPGet.Port.StrVal != "" && !ports[pr.HTTPGet.Port.StrVal] {
					t.Errorf("%s: a probe names port %q, not one of the container's", at, pr.HTTPGet.Port.StrVal)
				}
			}
			s := ct.SecurityContext
			switch {
			case s == nil:
				t.Errorf("%s: no securityContext", at)
			case s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation:
				t.Errorf("%s: allowPrivilegeEscalation is not false", at)
			case s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem:
				t.Errorf("%s: readOnlyRootFilesystem is not true", at)
			case s.Capabilities == nil || len(s.Capabilities.Drop) != 1 || s.Capabilities.Drop[0] != "ALL":
				t.Errorf("%s: capabilities are not dropped", at)
			}
			if ct.Resources.Requests.Memory().IsZero() || ct.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: needs a memory request and limit", at)
			}
		}
	}
}

func find[T any](t *testing.T, m map[string]*T, suffix string) *T {
	t.Helper()
	for n, o := range m {
		if strings.HasSuffix(n, suffix) {
			return o
		}
	}
	t.Fatalf("no object named *%s", suffix)
	return nil
}

// imagegenYAML is the rendered config.
func imagegenYAML(t *testing.T, c *chart) string {
	t.Helper()
	for _, cm := range c.configMaps {
		if s, ok := cm.Data["imagegen.yaml"]; ok {
			return s
		}
	}
	t.Fatal("no ConfigMap holds imagegen.yaml")
	return ""
}

// checkServerAndWorker: the server serves without a worker, the worker runs
// builds and has time to clean them up on SIGTERM, and both see the same config.
func checkServerAndWorker(t *testing.T, c *chart, tc renderCase) {
	t.Helper()
	server := find(t, c.deployments, "-server")
	worker := find(t, c.deployments, "-worker")
	sc, wc := server.Spec.Template.Spec.Containers[0], worker.Spec.Template.Spec.Containers[0]
	if got := strings.Join(sc.Args, " "); !strings.HasPrefix(got, "serve --no-worker --config /") {
		t.Errorf("server args %q: want serve --no-worker --config FILE", got)
	}
	if got := strings.Join(wc.Args, " "); !strings.HasPrefix(got, "worker --config /") || !strings.Contains(got, "--metrics-listen :") {
		t.Errorf("worker args %q: want worker --config FILE --metrics-listen :PORT", got)
	}
	if sc.ReadinessProbe == nil || sc.ReadinessProbe.HTTPGet == nil || sc.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("server readiness probe is not GET /readyz: %+v", sc.ReadinessProbe)
	}
	if sc.LivenessProbe == nil || sc.LivenessProbe.HTTPGet == nil || sc.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("server liveness probe is not GET /healthz: %+v", sc.LivenessProbe)
	}

	// The grace period must cover what the worker waits for on SIGTERM:
	// build.shutdown_grace, then build.cleanup_timeout + 10s.
	var cfg struct {
		Build struct {
			CleanupTimeout string `json:"cleanup_timeout"`
			ShutdownGrace  string `json:"shutdown_grace"`
			Concurrency    int    `json:"concurrency"`
		} `json:"build"`
	}
	if err := yaml.Unmarshal([]byte(imagegenYAML(t, c)), &cfg); err != nil {
		t.Fatalf("imagegen.yaml: %v", err)
	}
	cleanup, err := time.ParseDuration(cfg.Build.CleanupTimeout)
	if err != nil {
		t.Fatalf("build.cleanup_timeout: %v", err)
	}
	shutdownGrace, err := time.ParseDuration(cfg.Build.ShutdownGrace)
	if err != nil {
		t.Fatalf("build.shutdown_grace: %v", err)
	}
	g := worker.Spec.Template.Spec.TerminationGracePeriodSeconds
	switch {
	case g == nil:
		t.Error("the worker has no terminationGracePeriodSeconds")
	case *g != tc.grace:
		t.Errorf("worker grace period %ds, want %ds", *g, tc.grace)
	case time.Duration(*g)*time.Second < shutdownGrace+cleanup+10*time.Second:
		t.Errorf("worker grace period %ds is shorter than shutdown_grace %s + cleanup_timeout %s + 10s", *g, shutdownGrace, cleanup)
	}
	if cfg.Build.Concurrency < 1 {
		t.Errorf("build.concurrency %d", cfg.Build.Concurrency)
	}

	if len(c.hpas) > 0 {
		if worker.Spec.Replicas != nil {
			t.Error("the worker Deployment sets replicas while an HPA scales it: every upgrade would reset the scale")
		}
		for n, h := range c.hpas {
			if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != worker.Name {
				t.Errorf("HPA %s scales %s %s, not the worker", n, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
			}
		}
	}

	// Both read the one config: each ${VAR} it names must be set in both, and
	// both must mount the same secret files.
	cfgText := imagegenYAML(t, c)
	for _, ct := range []corev1.Container{sc, wc} {
		set := map[string]bool{}
		for _, e := range ct.Env {
			set[e.Name] = true
		}
		for _, m := range envRef.FindAllStringSubmatch(cfgText, -1) {
			if !set[m[1]] {
				t.Errorf("container %s: the config reads ${%s}, which is not in its env", ct.Name, m[1])
			}
		}
	}
	sv, _ := yaml.Marshal(server.Spec.Template.Spec.Volumes)
	wv, _ := yaml.Marshal(worker.Spec.Template.Spec.Volumes[:len(server.Spec.Template.Spec.Volumes)])
	if !bytes.Equal(sv, wv) {
		t.Errorf("server and worker mount different volumes:\n%s\nvs\n%s", sv, wv)
	}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)`)

// checkSecretRefs: each Secret a pod reads is the chart's own, holding the key,
// or one the case says the operator made.
func checkSecretRefs(t *testing.T, c *chart, existing map[string]string) {
	t.Helper()
	check := func(where, name, key string) {
		if s, ok := c.secrets[name]; ok {
			if _, ok := s.Data[key]; !ok {
				t.Errorf("%s: Secret %s has no key %q (has %v)", where, name, key, keys(s.Data))
			}
			return
		}
		if _, ok := existing[name+"/"+key]; !ok {
			t.Errorf("%s: reads %s/%s, neither rendered nor one of the operator's Secrets", where, name, key)
		}
	}
	for name, p := range podSpecs(c) {
		for _, ct := range p.Spec.Containers {
			for _, e := range ct.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					check(name+" env "+e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
				}
			}
		}
		for _, v := range p.Spec.Volumes {
			if v.Projected != nil {
				for _, src := range v.Projected.Sources {
					if src.Secret == nil {
						continue
					}
					for _, it := range src.Secret.Items {
						check(name+" volume "+v.Name+" "+it.Path, src.Secret.Name, it.Key)
					}
				}
			}
			if v.ConfigMap != nil {
				if _, ok := c.configMaps[v.ConfigMap.Name]; !ok {
					t.Errorf("%s: volume %s mounts ConfigMap %s, which is not rendered", name, v.Name, v.ConfigMap.Name)
				}
			}
		}
	}
}

func keys[V any](m map[string]V) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// checkSelectors: Services, PDBs and ServiceMonitors select pods that exist,
// on ports they have; the Ingress routes to a Service port that exists.
func checkSelectors(t *testing.T, c *chart) {
	t.Helper()
	pods := podSpecs(c)
	matching := func(sel labels.Selector) []*corev1.PodTemplateSpec {
		var m []*corev1.PodTemplateSpec
		for _, p := range pods {
			if sel.Matches(labels.Set(p.Labels)) {
				m = append(m, p)
			}
		}
		return m
	}
	for name, d := range c.deployments {
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("Deployment %s: its selector does not match its own pods (%v)", name, err)
		}
	}
	for name, s := range c.services {
		ps := matching(labels.SelectorFromSet(s.Spec.Selector))
		if len(ps) != 1 {
			t.Errorf("Service %s selects %d workloads, want 1", name, len(ps))
			continue
		}
		for _, sp := range s.Spec.Ports {
			if !hasPort(ps[0], sp.TargetPort.StrVal) {
				t.Errorf("Service %s: targetPort %q is not a container port", name, sp.TargetPort.StrVal)
			}
		}
	}
	for name, p := range c.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || len(matching(sel)) != 1 {
			t.Errorf("PodDisruptionBudget %s does not select exactly one workload (%v)", name, err)
		}
	}
	for name, in := range c.ingresses {
		for _, r := range in.Spec.Rules {
			for _, p := range r.HTTP.Paths {
				svc, ok := c.services[p.Backend.Service.Name]
				if !ok {
					t.Errorf("Ingress %s: %s goes to Service %s, not rendered", name, p.Path, p.Backend.Service.Name)
					continue
				}
				found := false
				for _, sp := range svc.Spec.Ports {
					found = found || sp.Name == p.Backend.Service.Port.Name
				}
				if !found {
					t.Errorf("Ingress %s: port %q is not on Service %s", name, p.Backend.Service.Port.Name, svc.Name)
				}
			}
		}
	}
	for name, sm := range c.serviceMonitors {
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			t.Fatalf("ServiceMonitor %s: %v", name, err)
		}
		scraped := map[string]bool{}
		for sn, svc := range c.services {
			if !sel.Matches(labels.Set(svc.Labels)) {
				continue
			}
			for _, ep := range sm.Spec.Endpoints {
				for _, sp := range svc.Spec.Ports {
					if sp.Name == ep.Port {
						scraped[sn] = true
					}
				}
			}
		}
		if len(scraped) != 2 {
			t.Errorf("ServiceMonitor %s scrapes %v, want the server and the worker metrics Services", name, keys(scraped))
		}
	}
}

func hasPort(p *corev1.PodTemplateSpec, name string) bool {
	for _, ct := range p.Spec.Containers {
		for _, cp := range ct.Ports {
			if cp.Name == name {
				return true
			}
		}
	}
	return false
}

// checkNoSecretInConfig: no secret value reaches the ConfigMap.
func checkNoSecretInConfig(t *testing.T, c *chart, existing map[string]string) {
	t.Helper()
	cfg := imagegenYAML(t, c)
	for name, s := range c.secrets {
		for k, v := range s.Data {
			if len(v) >= 8 && strings.Contains(cfg, string(v)) {
				t.Errorf("the ConfigMap holds the value of Secret %s key %s", name, k)
			}
		}
	}
	for k, v := range existing {
		if strings.Contains(cfg, v) {
			t.Errorf("the ConfigMap holds the value of %s", k)
		}
	}
}

// secretsDir is where the chart mounts secret files; the config names files there.
const secretsDir = "/etc/imagegen/secrets"

// checkConfigLoads loads the rendered imagegen.yaml with imagegen's own loader,
// as the worker container would see it: its env (Secrets resolved) and its
// projected secret files, written to a temporary directory.
func checkConfigLoads(t *testing.T, c *chart, tc renderCase) {
	t.Helper()
	worker := find(t, c.deployments, "-worker")
	pod := worker.Spec.Template.Spec
	value := func(name, key string) string {
		if s, ok := c.secrets[name]; ok {
			return string(s.Data[key])
		}
		return tc.existing[name+"/"+key]
	}
	dir := t.TempDir()
	for _, v := range pod.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.Secret == nil {
				continue
			}
			for _, it := range src.Secret.Items {
				p := filepath.Join(dir, it.Path)
				if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(value(src.Secret.Name, it.Key)), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	env := map[string]string{}
	for _, e := range pod.Containers[0].Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = value(e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
		case e.ValueFrom == nil:
			env[e.Name] = strings.ReplaceAll(e.Value, secretsDir, dir)
		}
	}
	// The drivers read these from the process environment (clouds.yaml, the AWS chain).
	for _, k := range []string{"OS_CLIENT_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"} {
		t.Setenv(k, env[k])
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	err := loadConfig([]byte(strings.ReplaceAll(imagegenYAML(t, c), secretsDir, dir)), lookup)
	var serr *serviceError
	switch {
	case tc.configErr != "":
		if err == nil || errors.As(err, &serr) || !strings.Contains(err.Error(), tc.configErr) {
			t.Errorf("loading the config: got %v, want an error with %q", err, tc.configErr)
		}
	case err != nil:
		t.Errorf("imagegen refuses the rendered config: %v\n%s", err, imagegenYAML(t, c))
	}
}

// TestRenderRefuses: values imagegen could not run with fail at helm time,
// with a message that says what to fix.
func TestRenderRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
		want string
	}{
		{"grace period shorter than the cleanup", []string{"worker.terminationGracePeriodSeconds=300"}, "must be at least config.build.shutdownGrace + config.build.cleanupTimeout + 10s (610)"},
		{"grace period one second short", []string{"config.build.cleanupTimeout=90s", "worker.terminationGracePeriodSeconds=99"}, "(100)"},
		{"grace period without room for shutdownGrace", []string{"config.build.shutdownGrace=5m", "worker.terminationGracePeriodSeconds=700"}, "(910)"},
		{"an App without its key", []string{"config.github.appId=7"}, "give the App's private key"},
		{"an App and a token", []string{"config.github.appId=7", "secrets.githubPrivateKey.value=x", "secrets.githubToken.value=y"}, "not both"},
		{"standalone Redis without a URL", []string{"redis.mode=standalone"}, "give redis.url"},
		{"sentinel without Sentinels", []string{"redis.mode=sentinel"}, "redis.sentinel.addrs"},
		{"an unknown Redis mode", []string{"redis.mode=replicated"}, "redis.mode"},
		{"an unknown value key", []string{"worker.concurency=3"}, "concurency"},
		{"not a duration", []string{"config.build.cleanupTimeout=ten minutes"}, "cleanupTimeout"},
		{"existing API token Secret without keys", []string{"secrets.apiTokens.existingSecret=tokens"}, "secrets.apiTokens.keys"},
		{"metrics on the main port", []string{"server.metricsPort=8080"}, "server.metricsPort must differ from server.port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helmTemplate(t, nil, tc.set)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template: got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
