package deploy

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const k3sManifest = "deploy/k3s/healthdns.yaml"

// objects decodes every document of a manifest into its Kubernetes API type, strictly: a
// field the type does not have (a typo, a wrong level of indentation) fails.
func objects(t *testing.T, manifest string) []any {
	t.Helper()
	var out []any
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(manifest, -1) {
		if len(bytes.TrimSpace([]byte(doc))) == 0 {
			continue
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var obj any
		switch meta.APIVersion + " " + meta.Kind {
		case "v1 Namespace":
			obj = &corev1.Namespace{}
		case "v1 ConfigMap":
			obj = &corev1.ConfigMap{}
		case "v1 Service":
			obj = &corev1.Service{}
		case "apps/v1 Deployment":
			obj = &appsv1.Deployment{}
		default:
			t.Fatalf("document %d: unexpected %s %s", i, meta.APIVersion, meta.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("document %d (%s): %v", i, meta.Kind, err)
		}
		out = append(out, obj)
	}
	return out
}

func TestK3sManifest(t *testing.T) {
	var (
		cm     *corev1.ConfigMap
		deploy *appsv1.Deployment
		svc    *corev1.Service
	)
	for _, o := range objects(t, readFile(t, k3sManifest)) {
		switch o := o.(type) {
		case *corev1.ConfigMap:
			cm = o
		case *appsv1.Deployment:
			deploy = o
		case *corev1.Service:
			svc = o
		}
	}
	if cm == nil || deploy == nil || svc == nil {
		t.Fatalf("want a ConfigMap, a Deployment and a Service; have %v, %v, %v", cm != nil, deploy != nil, svc != nil)
	}

	corefile := cm.Data["Corefile"]
	if corefile != readFile(t, "deploy/Corefile") {
		t.Errorf("the ConfigMap's Corefile differs from deploy/Corefile:\n%s", corefile)
	}
	for _, want := range []string{"healthdns", "ready :8181", "health :8080", "prometheus :9153"} {
		if !strings.Contains(corefile, want) {
			t.Errorf("the Corefile lacks %q", want)
		}
	}

	spec := deploy.Spec
	if spec.Replicas == nil {
		t.Error("replicas unset (1), want 2")
	} else if *spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", *spec.Replicas)
	}
	pod := spec.Template.Spec
	if spec.Selector == nil || !matches(spec.Selector.MatchLabels, spec.Template.Labels) {
		t.Errorf("the selector %v does not select the pods %v", spec.Selector, spec.Template.Labels)
	}
	spread := false
	if a := pod.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			spread = spread || (term.TopologyKey == "kubernetes.io/hostname" && term.LabelSelector != nil &&
				matches(term.LabelSelector.MatchLabels, spec.Template.Labels))
		}
	}
	if !spread {
		t.Error("no required pod anti-affinity of the pods on kubernetes.io/hostname")
	}
	if u := spec.Strategy.RollingUpdate; u == nil || u.MaxSurge == nil || u.MaxSurge.IntValue() != 0 {
		t.Error("a rolling update may surge, and the surge pod has no node it may run on")
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("the pod is not runAsNonRoot")
	}

	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if tag, ok := strings.CutPrefix(c.Image, imageRepo+":"); !ok || tag == "" || tag == "latest" {
		t.Errorf("image %s: want the release image, %s, with a pinned tag", c.Image, imageRepo)
	}
	checkProbe(t, "readiness", c.ReadinessProbe, "/ready", 8181)
	checkProbe(t, "liveness", c.LivenessProbe, "/health", 8080)
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("the container has no capabilities set")
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("drops %v, want ALL", sc.Capabilities.Drop)
	}
	add := slices.Clone(sc.Capabilities.Add)
	slices.Sort(add)
	if !slices.Equal(add, []corev1.Capability{"NET_BIND_SERVICE", "NET_RAW"}) {
		t.Errorf("adds %v, want NET_BIND_SERVICE and NET_RAW", sc.Capabilities.Add)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("the container may escalate privileges")
	}
	ports := map[string]corev1.ContainerPort{}
	for _, p := range c.Ports {
		ports[p.Name] = p
	}

	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		t.Errorf("Service type %s, want LoadBalancer (ServiceLB)", svc.Spec.Type)
	}
	if !matches(svc.Spec.Selector, spec.Template.Labels) {
		t.Errorf("the Service selects %v, not the pods %v", svc.Spec.Selector, spec.Template.Labels)
	}
	protocols := map[corev1.Protocol]bool{}
	for _, p := range svc.Spec.Ports {
		if p.Port != 53 {
			continue
		}
		protocols[p.Protocol] = true
		target, ok := ports[p.TargetPort.String()]
		if p.TargetPort.Type == intstr.Int || !ok || target.ContainerPort != 53 || target.Protocol != p.Protocol {
			t.Errorf("Service port %s/%s goes to %s, not to the container's port 53/%s", p.Name, p.Protocol, p.TargetPort.String(), p.Protocol)
		}
	}
	if !protocols[corev1.ProtocolUDP] || !protocols[corev1.ProtocolTCP] {
		t.Errorf("the Service's port 53 has protocols %v, want UDP and TCP", protocols)
	}
}

func checkProbe(t *testing.T, name string, p *corev1.Probe, path string, port int) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("no HTTP %s probe", name)
		return
	}
	if p.HTTPGet.Path != path || p.HTTPGet.Port.IntValue() != port {
		t.Errorf("%s probe gets %s on %s, want %s on %d", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), path, port)
	}
}

// matches says whether a selector's labels are all among labels.
func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Strict decoding is what catches a misplaced field: check that it does.
func TestK3sStrict(t *testing.T) {
	var d appsv1.Deployment
	err := yaml.UnmarshalStrict([]byte("apiVersion: apps/v1\nkind: Deployment\nspec:\n  replica: 2\n"), &d)
	if err == nil {
		t.Error("an unknown field decoded without error")
	}
}
