package testbed

import (
	"bytes"
	"encoding/pem"
	"encoding/xml"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fault is what the proxy does to one request.
type Fault struct {
	Delay  time.Duration // wait before forwarding
	Status int           // answer with this status instead of forwarding (0: forward)
	// Hang forwards the request, then never answers: the server has acted,
	// the client never learns it. Use it to kill a client at that moment.
	Hang bool
	// Reset closes the connection without an answer.
	Reset bool
	// Truncate forwards the request, then sends only the first half of the
	// response body and closes the connection.
	Truncate bool
	// Corrupt flips one byte in the middle of the request body on its way
	// to the server, as a bad NIC or proxy would.
	Corrupt bool
	// Code, with Status (400 when 0), answers with this S3 error instead
	// of forwarding, as a store that refuses the request does; Message is
	// its text and Region, when set, the x-amz-bucket-region header.
	Code, Message, Region string
}

// S3Error is the fault of a store answering with an S3 error code.
func S3Error(status int, code, message string) Fault {
	return Fault{Status: status, Code: code, Message: message}
}

// SlowDown is S3's answer to a client that should back off.
var SlowDown = Fault{Status: http.StatusServiceUnavailable}

// Proxy sits between zfs2s3 and MinIO and applies Rule to each request.
type Proxy struct {
	URL  string
	srv  *httptest.Server
	mu   sync.Mutex
	rule func(*http.Request) Fault
	// CAFile is the PEM certificate of a TLS proxy, removed by Close.
	CAFile string
	// Hung receives each request the proxy hangs, after the server answered it.
	Hung chan *http.Request
	stop chan struct{}
}

// NewProxy forwards to target (an http:// URL).
func NewProxy(target string) (*Proxy, error) { return newProxy(target, false) }

// NewTLSProxy is NewProxy serving HTTPS, as every real S3 endpoint does;
// CAFile names its certificate for AWS_CA_BUNDLE.
func NewTLSProxy(target string) (*Proxy, error) { return newProxy(target, true) }

func newProxy(target string, useTLS bool) (*Proxy, error) {
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
		if f.Status != 0 || f.Code != "" {
			io.Copy(io.Discard, r.Body) // as S3 does; answering early looks like a reset
		}
		if f.Corrupt {
			body, _ := io.ReadAll(r.Body)
			if len(body) > 0 {
				body[len(body)/2] ^= 0x01
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		switch {
		case f.Reset:
			closeConn(w)
			return
		case f.Code != "":
			writeS3Error(w, f)
			return
		case f.Status == http.StatusServiceUnavailable:
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(f.Status)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
			return
		case f.Status != 0:
			w.WriteHeader(f.Status)
			return
		case f.Truncate:
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, r)
			truncate(w, rec)
			return
		case !f.Hang:
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
	if !useTLS {
		p.srv.Start()
		p.URL = p.srv.URL
		return p, nil
	}
	p.srv.StartTLS()
	p.URL = p.srv.URL
	f, err := os.CreateTemp("", "zfs2s3-proxy-ca-*.pem")
	if err != nil {
		p.Close()
		return nil, err
	}
	defer f.Close()
	p.CAFile = f.Name()
	return p, pem.Encode(f, &pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
}

// writeS3Error answers with f's S3 error document.
func writeS3Error(w http.ResponseWriter, f Fault) {
	status := f.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	if f.Region != "" {
		w.Header().Set("X-Amz-Bucket-Region", f.Region)
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	var msg bytes.Buffer
	xml.EscapeText(&msg, []byte(f.Message))
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><RequestId>proxy</RequestId></Error>`, f.Code, msg.String())
}

// closeConn drops the client's connection without an answer.
func closeConn(w http.ResponseWriter) {
	if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
		conn.Close()
	}
}

// truncate sends rec's status and headers with its full Content-Length,
// then half the body, then closes the connection.
func truncate(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	body := rec.Body.Bytes()
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\n", rec.Code, http.StatusText(rec.Code))
	rec.Header().Set("Content-Length", strconv.Itoa(len(body)))
	rec.Header().Write(buf)
	buf.WriteString("\r\n")
	buf.Write(body[:len(body)/2])
	buf.Flush()
}

// Every returns a rule that applies the faults in turn to every nth
// request matching match, at most limit times, so a test always ends.
func Every(n, limit int, match func(*http.Request) bool, faults ...Fault) func(*http.Request) Fault {
	var mu sync.Mutex
	seen, applied := 0, 0
	return func(r *http.Request) Fault {
		mu.Lock()
		defer mu.Unlock()
		if !match(r) {
			return Fault{}
		}
		seen++
		if seen%n != 0 || applied >= limit {
			return Fault{}
		}
		applied++
		return faults[applied%len(faults)]
	}
}

// Any matches every request.
func Any(*http.Request) bool { return true }

// StartProxy is NewProxy for a test: it fails the test on error and closes
// the proxy when the test ends.
func StartProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := NewProxy(target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// StartTLSProxy is NewTLSProxy for a test, which it also points
// AWS_CA_BUNDLE at, so that clients it creates trust the proxy.
func StartTLSProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := NewTLSProxy(target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	if t, ok := tb.(interface{ Setenv(k, v string) }); ok {
		t.Setenv("AWS_CA_BUNDLE", p.CAFile)
	}
	return p
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
	if p.CAFile != "" {
		os.Remove(p.CAFile)
	}
}

// IsLedger reports whether r, with method, is for zfs2s3's ledger copy.
func IsLedger(r *http.Request, method string) bool {
	return r.Method == method && strings.HasSuffix(r.URL.Path, "/ledger.yaml")
}

// IsUploadPart reports whether r is an UploadPart request.
func IsUploadPart(r *http.Request) bool {
	return r.Method == http.MethodPut && r.URL.Query().Has("partNumber")
}

// IsComplete reports whether r is a CompleteMultipartUpload request.
func IsComplete(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Query().Has("uploadId")
}
