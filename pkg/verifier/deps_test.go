package verifier

import (
	"os/exec"
	"strings"
	"testing"
)

// The core is what other services import to verify in-process: it must not pull in the servers.
func TestTheCoreImportsNoServersCachesOrStores(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/keyward-dev/keyward/pkg/verifier").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		// The API types register with controller-runtime's scheme builder, which is all they take from it.
		if dep == "sigs.k8s.io/controller-runtime/pkg/scheme" {
			continue
		}
		for _, banned := range []string{"google.golang.org/grpc", "github.com/envoyproxy/", "github.com/redis/", "github.com/go-redis/",
			"sigs.k8s.io/controller-runtime", "github.com/prometheus/", "k8s.io/client-go"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("pkg/verifier imports %s; servers, caches and stores belong in pkg/verifier/serve", dep)
			}
		}
	}
}
