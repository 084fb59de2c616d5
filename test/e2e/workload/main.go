// Command workload is the end-to-end tests' stand-in for a user's service: it calls an upstream through the
// gateway several times a second, presenting the key as a workload of Keyward's users does, and counts every
// request by the key ID it presented. With --key-dir it reads the key from the mounted Secret for each
// request (the way that survives a rotation); with --key-env it takes it from an environment variable set
// from the Secret once, at start (the way that does not). GET /counts answers the tally as JSON.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Tally counts requests by the key ID presented.
type Tally struct {
	// OK and Failed are request counts by key ID.
	OK     map[string]int `json:"ok"`
	Failed map[string]int `json:"failed"`
	// LastKeyID is the key ID of the last request: which revision of the Secret the workload has seen.
	LastKeyID string `json:"lastKeyID"`
	// Outcomes counts failed requests by what they got back: an HTTP status, or "error" when no answer came.
	Outcomes map[string]int `json:"outcomes"`
	// LastFailure says what the last failed request got back.
	LastFailure string `json:"lastFailure,omitempty"`
}

func main() {
	url := flag.String("url", "", "Upstream URL, through the gateway.")
	keyDir := flag.String("key-dir", "", "Directory where the APIKey's Secret is mounted (api-key, key-id), read for each request.")
	keyEnv := flag.String("key-env", "", "Environment variable holding the key (its key ID in <name>_ID), read once.")
	interval := flag.Duration("interval", 100*time.Millisecond, "Time between requests.")
	listen := flag.String("listen", ":8080", "Address of GET /counts.")
	flag.Parse()

	var mu sync.Mutex
	t := Tally{OK: map[string]int{}, Failed: map[string]int{}, Outcomes: map[string]int{}}
	http.HandleFunc("/counts", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_ = json.NewEncoder(w).Encode(t)
	})
	go func() {
		if err := http.ListenAndServe(*listen, nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}()
	envKey, envID := os.Getenv(*keyEnv), os.Getenv(*keyEnv+"_ID")
	client := &http.Client{Timeout: 10 * time.Second}
	for {
		key, id := envKey, envID
		if *keyDir != "" {
			k, err1 := os.ReadFile(filepath.Join(*keyDir, "api-key"))
			i, err2 := os.ReadFile(filepath.Join(*keyDir, "key-id"))
			if err1 != nil || err2 != nil {
				fmt.Fprintln(os.Stderr, "reading the key:", err1, err2)
				time.Sleep(*interval)
				continue
			}
			key, id = strings.TrimSpace(string(k)), strings.TrimSpace(string(i))
		}
		status, err := call(client, *url, key)
		mu.Lock()
		t.LastKeyID = id
		if err == nil && status == http.StatusOK {
			t.OK[id]++
		} else {
			t.Failed[id]++
			outcome := strconv.Itoa(status)
			if err != nil {
				outcome = "error"
			}
			t.Outcomes[outcome]++
			t.LastFailure = fmt.Sprintf("status %d, error %v", status, err)
		}
		mu.Unlock()
		time.Sleep(*interval)
	}
}

func call(c *http.Client, url, key string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, nil
}
