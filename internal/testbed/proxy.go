package testbed

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// Fault is what the proxy does to one request.
type Fault struct {
	Delay  time.Duration // wait before forwarding
	Status int           // answer with this status instead of forwarding (0: forward)
	// Hang forwards the request, then never answers: the server has acted,
	// the client never learns it. Use it to kill a client at that moment.
	Hang bool
}

// Proxy sits between zfs2s3 and MinIO and applies Rule to each request.
type Proxy struct {
	URL  string
	srv  *httptest.Server
	mu   sync.Mutex
	rule func(*http.Request) Fault
	// Hung receives each request the proxy hangs, after the server answered it.
	Hung chan *http.Request
	stop chan struct{}
}

// NewProxy forwards to target (an http:// URL).
func NewProxy(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	p := &Proxy{Hung: make(chan *http.Request, 16), stop: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // cut connections are the point
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := p.fault(r)
		if f.Delay > 0 {
			select {
			case <-time.After(f.Delay):
			case <-r.Context().Done():
				return
			}
		}
		if f.Status != 0 {
			w.WriteHeader(f.Status)
			return
		}
		if !f.Hang {
			rp.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		p.Hung <- r
		select {
		case <-r.Context().Done():
		case <-p.stop:
		}
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.srv.Listener = l
	p.srv.Start()
	p.URL = p.srv.URL
	return p, nil
}

// SetRule replaces the rule; nil forwards everything untouched.
func (p *Proxy) SetRule(rule func(*http.Request) Fault) {
	p.mu.Lock()
	p.rule = rule
	p.mu.Unlock()
}

func (p *Proxy) fault(r *http.Request) Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rule == nil {
		return Fault{}
	}
	return p.rule(r)
}

// Close stops the proxy and releases hung requests.
func (p *Proxy) Close() {
	close(p.stop)
	p.srv.CloseClientConnections()
	p.srv.Close()
}

// IsUploadPart reports whether r is an UploadPart request.
func IsUploadPart(r *http.Request) bool {
	return r.Method == http.MethodPut && r.URL.Query().Has("partNumber")
}

// IsComplete reports whether r is a CompleteMultipartUpload request.
func IsComplete(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Query().Has("uploadId")
}
