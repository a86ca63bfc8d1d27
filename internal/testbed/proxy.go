package testbed

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
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
	// quirks make the proxy answer as another S3 server does (see Quirks).
	quirks     Quirks
	hadUploads bool // a CreateMultipartUpload passed (for ListUploadsNotFound)
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
	rp.ModifyResponse = p.modifyResponse
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := p.fault(r)
		if f == (Fault{}) {
			f = p.quirkFault(r)
		}
		if p.completeItself(w, r, f) {
			return
		}
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

// IsLedger reports whether r, with method, is for an object of zfs2s3's
// ledger in the bucket: a journal entry or ledger.yaml.
func IsLedger(r *http.Request, method string) bool {
	return r.Method == method && (strings.HasSuffix(r.URL.Path, "/ledger.yaml") || strings.Contains(r.URL.Path, ".zfs2s3/ledger/"))
}

// IsLedgerList reports whether r lists the ledger's journals.
func IsLedgerList(r *http.Request) bool {
	return r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "2" && strings.HasSuffix(r.URL.Query().Get("prefix"), ".zfs2s3/")
}

// IsUploadPart reports whether r is an UploadPart request.
func IsUploadPart(r *http.Request) bool {
	return r.Method == http.MethodPut && r.URL.Query().Has("partNumber")
}

// IsComplete reports whether r is a CompleteMultipartUpload request.
func IsComplete(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Query().Has("uploadId")
}

// Quirks are S3 servers' departures from S3 that zfs2s3 must cope with,
// reproduced on top of MinIO for servers the test bed cannot run.
type Quirks struct {
	// QuotedIfMatch412: a PUT with a quoted If-Match ETag gets 412
	// PreconditionFailed whatever the object's ETag (Ceph RGW 16.2).
	QuotedIfMatch412 bool
	// ListUploadsNotFound: ListMultipartUploads answers 404 NoSuchUpload
	// until the first multipart upload is created (rclone serve s3 1.76).
	ListUploadsNotFound bool
	// PlainMultipartETag: a multipart object's ETag is a plain MD5-like
	// hex string, not MD5-of-MD5s-N (rclone serve s3, versitygw).
	PlainMultipartETag bool
	// NoChecksumEcho: x-amz-checksum-crc32c and -sha256 are not echoed by UploadPart
	// (Ceph RGW, rclone, which ignore it).
	NoChecksumEcho bool
	// EmptyListPartsWhenGone: ListParts on a completed or aborted
	// UploadId answers 200 with no parts (SeaweedFS 4).
	EmptyListPartsWhenGone bool
	// NonHexPartETags: part ETags are not hex (versitygw with
	// --data-integrity-etag). Needs Backend to complete uploads with the
	// ETags MinIO gave.
	NonHexPartETags bool
	Backend         *s3.Client
}

// SetQuirks makes the proxy answer with q's quirks from now on.
func (p *Proxy) SetQuirks(q Quirks) {
	p.mu.Lock()
	p.quirks = q
	p.mu.Unlock()
}

func (p *Proxy) getQuirks() Quirks {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.quirks
}

// quirkFault is the answer a quirky server gives in place of MinIO's.
func (p *Proxy) quirkFault(r *http.Request) Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.quirks
	if r.Method == http.MethodPost && r.URL.Query().Has("uploads") {
		p.hadUploads = true
	}
	switch {
	case q.QuotedIfMatch412 && r.Method == http.MethodPut && strings.HasPrefix(r.Header.Get("If-Match"), `"`):
		return S3Error(http.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
	case q.ListUploadsNotFound && !p.hadUploads && r.Method == http.MethodGet && r.URL.Query().Has("uploads"):
		return S3Error(http.StatusNotFound, "NoSuchUpload", "The specified multipart upload does not exist.")
	}
	return Fault{}
}

var (
	multipartETag = regexp.MustCompile(`^"?([0-9a-f]{32}-[0-9]+)"?$`)
	xmlPartETag   = regexp.MustCompile(`(<ETag>(?:&#34;|&quot;|")?)([0-9a-f]{32})`)
	xmlObjETag    = regexp.MustCompile(`(<ETag>(?:&#34;|&quot;|")?)([0-9a-f]{32}-[0-9]+)`)
)

// plainETag is what a server whose multipart ETags are not MD5-of-MD5s
// answers for an object MinIO gave etag: 32 hex digits, no part count.
func plainETag(etag string) string {
	sum := md5.Sum([]byte(etag))
	return hex.EncodeToString(sum[:])
}

// modifyResponse rewrites MinIO's answers as the quirky server's.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	q := p.getQuirks()
	r := resp.Request
	query := r.URL.Query()
	if q.NoChecksumEcho && r.Method == http.MethodPut && query.Has("partNumber") {
		resp.Header.Del("X-Amz-Checksum-Crc32c")
		resp.Header.Del("X-Amz-Checksum-Sha256")
	}
	if q.PlainMultipartETag {
		if m := multipartETag.FindStringSubmatch(resp.Header.Get("ETag")); m != nil {
			resp.Header.Set("ETag", `"`+plainETag(m[1])+`"`)
		}
	}
	if q.NonHexPartETags && r.Method == http.MethodPut && query.Has("partNumber") {
		if etag := resp.Header.Get("ETag"); etag != "" {
			resp.Header.Set("ETag", `"Z`+strings.Trim(etag, `"`)+`"`)
		}
	}
	listParts := r.Method == http.MethodGet && query.Has("uploadId")
	if q.EmptyListPartsWhenGone && listParts && resp.StatusCode == http.StatusNotFound {
		resp.Body.Close()
		bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		var b bytes.Buffer
		b.WriteString(`<?xml version="1.0" encoding="UTF-8"?><ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>`)
		xml.EscapeText(&b, []byte(bucket))
		b.WriteString(`</Bucket><Key>`)
		xml.EscapeText(&b, []byte(key))
		b.WriteString(`</Key><UploadId>`)
		xml.EscapeText(&b, []byte(query.Get("uploadId")))
		b.WriteString(`</UploadId><IsTruncated>false</IsTruncated></ListPartsResult>`)
		setBody(resp, b.Bytes())
		resp.StatusCode, resp.Status = http.StatusOK, "200 OK"
		return nil
	}
	if q.PlainMultipartETag && r.Method == http.MethodPost && query.Has("uploadId") && resp.StatusCode == http.StatusOK {
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		setBody(resp, xmlObjETag.ReplaceAllFunc(body, func(m []byte) []byte {
			sub := xmlObjETag.FindSubmatch(m)
			return append(append([]byte(nil), sub[1]...), plainETag(string(sub[2]))...)
		}))
	}
	if q.NonHexPartETags && listParts && resp.StatusCode == http.StatusOK {
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		setBody(resp, xmlPartETag.ReplaceAll(body, []byte("${1}Z${2}")))
	}
	return nil
}

func setBody(resp *http.Response, body []byte) {
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	resp.Header.Del("Content-Encoding")
}

// completeItself completes a multipart upload for a client that holds
// non-hex part ETags (NonHexPartETags): MinIO would refuse them, and a
// rewritten body would break the request's signature, so the proxy
// completes the upload itself with MinIO's ETags and answers as the quirky
// server. A Hang fault still hangs after completing.
func (p *Proxy) completeItself(w http.ResponseWriter, r *http.Request, f Fault) bool {
	q := p.getQuirks()
	if !q.NonHexPartETags || q.Backend == nil || r.Method != http.MethodPost || !r.URL.Query().Has("uploadId") || f.Status != 0 || f.Code != "" || f.Reset {
		return false
	}
	var in struct {
		Parts []struct {
			PartNumber     int32
			ETag           string
			ChecksumCRC32C string
			ChecksumSHA256 string
		} `xml:"Part"`
	}
	if err := xml.NewDecoder(r.Body).Decode(&in); err != nil {
		writeS3Error(w, S3Error(http.StatusBadRequest, "MalformedXML", err.Error()))
		return true
	}
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	var parts []types.CompletedPart
	for _, pt := range in.Parts {
		cp := types.CompletedPart{PartNumber: aws.Int32(pt.PartNumber), ETag: aws.String(strings.Replace(pt.ETag, "Z", "", 1))}
		if pt.ChecksumCRC32C != "" {
			cp.ChecksumCRC32C = aws.String(pt.ChecksumCRC32C)
		}
		if pt.ChecksumSHA256 != "" {
			cp.ChecksumSHA256 = aws.String(pt.ChecksumSHA256)
		}
		parts = append(parts, cp)
	}
	out, err := q.Backend.CompleteMultipartUpload(r.Context(), &s3.CompleteMultipartUploadInput{Bucket: &bucket, Key: &key,
		UploadId: aws.String(r.URL.Query().Get("uploadId")), MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			status := http.StatusBadRequest
			if ae.ErrorCode() == "NoSuchUpload" {
				status = http.StatusNotFound
			}
			writeS3Error(w, S3Error(status, ae.ErrorCode(), ae.ErrorMessage()))
		} else {
			writeS3Error(w, S3Error(http.StatusInternalServerError, "InternalError", err.Error()))
		}
		return true
	}
	if f.Hang {
		p.Hung <- r
		select {
		case <-r.Context().Done():
		case <-p.stop:
		}
		return true
	}
	etag := strings.Trim(aws.ToString(out.ETag), `"`)
	if q.PlainMultipartETag {
		etag = plainETag(etag)
	}
	w.Header().Set("Content-Type", "application/xml")
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>`)
	xml.EscapeText(&b, []byte(bucket))
	b.WriteString(`</Bucket><Key>`)
	xml.EscapeText(&b, []byte(key))
	b.WriteString(`</Key><ETag>&#34;` + etag + `&#34;</ETag></CompleteMultipartUploadResult>`)
	w.Write(b.Bytes())
	return true
}
