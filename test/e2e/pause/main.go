// Command pause is the sandbox image of the end-to-end node: it holds a Pod's namespaces and waits for
// SIGTERM, as registry.k8s.io/pause does, which cannot be pulled here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
}
