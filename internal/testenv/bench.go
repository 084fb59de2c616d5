package testenv

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
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
