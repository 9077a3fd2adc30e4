// Command backend is the origin server for the proxy benchmark in
// bench/proxy: it answers every request, on any path and method, with
// 200 and the fixed 13-byte body "hello, world\n", keeping connections
// alive. It does as little as possible so that the proxy in front of it
// is what the benchmark measures.
package main

import (
	"flag"
	"log"
	"net/http"
	"strconv"
	"time"
)

var body = []byte("hello, world\n")

func main() {
	addr := flag.String("addr", "127.0.0.1:19100", "address to listen on")
	flag.Parse()

	contentLength := strconv.Itoa(len(body))
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain; charset=utf-8"}
		h["Content-Length"] = []string{contentLength}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	})
	srv := &http.Server{
		Addr:              *addr,
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute, // longer than any proxy's pool idle time
	}
	srv.SetKeepAlivesEnabled(true)
	log.Printf("backend listening on %s", *addr)
	log.Fatal(srv.ListenAndServe())
}
