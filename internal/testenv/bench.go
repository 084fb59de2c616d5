package testenv

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keywardv1alpha1 "github.com/keyward-dev/keyward/api/v1alpha1"
)

// EnvInt is the integer in environment variable name, or def when it is unset or not a number: how a
// benchmark's size is chosen (KEYWARD_BENCH_APIKEYS=1000 make bench, say).
func EnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

// LiveHeap is the heap still in use after a full collection: what a process's caches, indexes and queues
// keep, without the garbage a collection would free. The process's resident size is about this times
// (1 + GOGC/100) plus the runtime's own, unless GOMEMLIMIT holds it lower.
func LiveHeap() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// ResidentHighWater is the process's peak resident set size (VmHWM), what a container's memory limit sees,
// or 0 where /proc does not say.
func ResidentHighWater() uint64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(raw)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// LargestAPIKey is an APIKey as large as a tenant with keyward-edit can make one past admission, in every
// field Keyward might keep: 256 KiB of annotations (the API server's limit on their total), 1,000 labels
// (about 125 KiB; labels have no limit but the object's size, and many more only make the test control plane
// slower, not the point stronger), 256 scopes of 128 characters, the longest display name and description, a
// secretTemplate at its
// 4096-character bound and a webhook with a 64 KiB CA bundle (for key.deleted only, whose signing Secret
// does not exist). Benchmarks create many to prove that what a tenant writes does not become
// the shared components' memory.
func LargestAPIKey(ns, name string) *keywardv1alpha1.APIKey {
	ak := &keywardv1alpha1.APIKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
		Annotations: map[string]string{"tenant.example/blob": strings.Repeat("a", 256<<10-32)},
		Labels:      map[string]string{}}}
	for i := range 1000 {
		ak.Labels[fmt.Sprintf("l%04d.tenant.example/%s", i, strings.Repeat("k", 40))] = strings.Repeat("v", 63)
	}
	ak.Spec.DisplayName = strings.Repeat("d", 128)
	ak.Spec.Description = strings.Repeat("d", 1024)
	for i := range 256 {
		ak.Spec.Scopes = append(ak.Spec.Scopes, keywardv1alpha1.Scope(fmt.Sprintf("s%03d:%s", i, strings.Repeat("x", 123))))
	}
	ak.Spec.SecretTemplate = &keywardv1alpha1.SecretTemplate{Annotations: map[string]string{}}
	for i := range 4 {
		ak.Spec.SecretTemplate.Annotations[fmt.Sprintf("t%d", i)] = strings.Repeat("t", 1024-3)
	}
	// Only key.deleted is asked for, so no delivery runs while a benchmark measures.
	ak.Spec.Webhook = &keywardv1alpha1.WebhookSpec{URL: "https://hooks.example.com/keyward",
		SigningSecretRef: keywardv1alpha1.SecretKeyRef{Name: "no-such-secret"},
		Events:           []keywardv1alpha1.WebhookEvent{keywardv1alpha1.WebhookEventKeyDeleted},
		CABundle:         "-----BEGIN CERTIFICATE-----\n" + strings.Repeat("A", 65536-60) + "\n-----END CERTIFICATE-----\n"}
	return ak
}
