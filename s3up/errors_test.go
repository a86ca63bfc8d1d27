package s3up

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/zfs2s3/zfs2s3/internal/testbed"
)

// cannedClient is a client for bucket "b" at a server that answers every
// request with handler, without retries.
func cannedClient(t *testing.T, region string, handler http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return testClient(t, srv.URL, region, "1")
}

// testClient is a client for bucket "b" at endpoint; attempts "" means the
// default number of tries.
func testClient(t *testing.T, endpoint, region, attempts string) *Client {
	t.Helper()
	for _, kv := range [][2]string{{"AWS_ACCESS_KEY_ID", "k"}, {"AWS_SECRET_ACCESS_KEY", "s"},
		{"AWS_EC2_METADATA_DISABLED", "true"}, {"AWS_MAX_ATTEMPTS", attempts}} {
		t.Setenv(kv[0], kv[1])
	}
	c, err := NewClient(context.Background(), Config{Bucket: "b", Endpoint: endpoint, Region: region})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// s3Error answers as S3 does, with an XML error document.
func s3Error(status int, code, msg string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><RequestId>1</RequestId></Error>`, code, msg)
	}
}

// TestErrorTranslation: each answer a user meets with a wrong setup or a
// store that refuses a request becomes one line naming the cause and the
// fix, of the kind that decides what an upload does next.
func TestErrorTranslation(t *testing.T) {
	for _, tt := range []struct {
		name    string
		answer  http.HandlerFunc
		head    bool // HEAD has no body: only the status tells
		kind    error
		want    []string
		notWant string
	}{
		{"wrong secret", s3Error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match"), false, ErrSetup,
			[]string{"secret key does not match", "AWS_SECRET_ACCESS_KEY", "SignatureDoesNotMatch"}, ""},
		{"unknown key id", s3Error(403, "InvalidAccessKeyId", "The Access Key Id you provided does not exist"), false, ErrSetup,
			[]string{"does not know the access key ID", "AWS_ACCESS_KEY_ID"}, ""},
		{"access denied", s3Error(403, "AccessDenied", "Access Denied."), false, ErrSetup,
			[]string{"credentials or the bucket policy", "check the credentials"}, ""},
		{"forbidden head", s3Error(403, "", ""), true, ErrSetup,
			[]string{"credentials or the bucket policy"}, ""},
		{"expired token", s3Error(400, "ExpiredToken", "The provided token has expired."), false, ErrSetup,
			[]string{"expired", "AWS_SESSION_TOKEN"}, ""},
		{"missing bucket", s3Error(404, "NoSuchBucket", "The specified bucket does not exist"), false, ErrSetup,
			[]string{`bucket "b" does not exist`, "--bucket", "create the bucket"}, ""},
		{"redirect", s3Error(301, "PermanentRedirect", "The bucket you are attempting to access must be addressed using the specified endpoint.", "X-Amz-Bucket-Region", "eu-west-1"), false, ErrSetup,
			[]string{`bucket "b" is in region eu-west-1, not us-east-1`, "--region eu-west-1"}, ""},
		{"redirect head", s3Error(301, "", "", "X-Amz-Bucket-Region", "ap-south-2"), true, ErrSetup,
			[]string{"region ap-south-2", "--region ap-south-2"}, ""},
		{"region in signature", s3Error(400, "AuthorizationHeaderMalformed", "The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-central-1'"), false, ErrSetup,
			[]string{"region eu-central-1", "--region eu-central-1"}, ""},
		{"clock skew", s3Error(403, "RequestTimeTooSkewed", "The difference between the request time and the server's time is too large."), false, ErrSetup,
			[]string{"clock", "NTP"}, ""},
		{"storage class", s3Error(400, "InvalidStorageClass", "The storage class you specified is not valid"), false, ErrPermanent,
			[]string{"storage class", "--storage-class"}, ""},
		{"key too long", s3Error(400, "KeyTooLongError", "Your key is too long"), false, ErrPermanent,
			[]string{"key is", "--prefix"}, ""},
		// An unknown 4xx may pass (a proxy's 407, a quota): the upload stays
		// resumable rather than being discarded.
		{"other 4xx", s3Error(400, "InvalidArgument", "Invalid argument x-amz-foo"), false, ErrSetup,
			[]string{"refused the request (InvalidArgument): Invalid argument x-amz-foo", "run the command again"}, ""},
		{"quota", s3Error(400, "XMinioAdminBucketQuotaExceeded", "Bucket quota exceeded"), false, ErrSetup,
			[]string{"quota", "resumes"}, ""},
		{"archived object", s3Error(403, "InvalidObjectState", "The operation is not valid for the object's storage class"), false, ErrSetup,
			[]string{"archive storage class", "restore-object"}, "credentials"},
		{"not implemented", s3Error(501, "NotImplemented", "A header you provided implies functionality that is not implemented"), false, ErrPermanent,
			[]string{"does not implement", "--checksum md5"}, ""},
		{"slow down", s3Error(503, "SlowDown", "Please reduce your request rate."), false, ErrTransient,
			[]string{"SlowDown"}, "check"},
		{"internal error", s3Error(500, "InternalError", "We encountered an internal error."), false, ErrTransient,
			[]string{"InternalError"}, "check"},
		{"request timeout", s3Error(400, "RequestTimeout", "Your socket connection to the server was not read from or written to within the timeout period."), false, ErrTransient,
			[]string{"RequestTimeout"}, "check"},
		{"corrupted part", s3Error(400, "BadDigest", "The Content-MD5 you specified did not match what we received."), false, ErrTransient,
			[]string{"BadDigest"}, "check"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := cannedClient(t, "us-east-1", tt.answer)
			var err error
			if tt.head {
				_, err = c.Head(context.Background(), "k")
			} else {
				_, _, err = c.ReadAll(context.Background(), "k", 1<<20)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not an *Error", err, err)
			}
			for _, kind := range []error{ErrSetup, ErrPermanent, ErrTransient} {
				if errors.Is(err, kind) != (kind == tt.kind) {
					t.Errorf("errors.Is(err, %v) = %v; err: %v", kind, !(kind == tt.kind), err)
				}
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
			if tt.notWant != "" && strings.Contains(msg, tt.notWant) {
				t.Errorf("message %q contains %q", msg, tt.notWant)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("message is more than one line: %q", msg)
			}
		})
	}
}

func TestCheckStorageClass(t *testing.T) {
	for _, tt := range []struct{ in, want, err string }{
		{"STANDARD", "STANDARD", ""},
		{"DEEP_ARCHIVE", "DEEP_ARCHIVE", ""},
		{"", "", ""},
		{"custom:NEARLINE", "NEARLINE", ""},
		{"standard", "", "did you mean STANDARD?"},
		{"DEEP_GLACIER", "", "did you mean DEEP_ARCHIVE?"},
		{"COLD", "", "custom:NAME"},
		{"custom:", "", "custom class"},
		{"custom:A B", "", "custom class"},
	} {
		got, err := CheckStorageClass(tt.in)
		if got != tt.want || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
			t.Errorf("CheckStorageClass(%q) = %q, %v; want %q, error containing %q", tt.in, got, err, tt.want, tt.err)
		}
	}
}

// closedPort is an address where nothing listens.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestUnreachableEndpointFailsFast: an endpoint that refuses connections
// fails the request within a few seconds, as a setup problem naming the
// endpoint, rather than after minutes of retries.
func TestUnreachableEndpointFailsFast(t *testing.T) {
	endpoint := "http://" + closedPort(t)
	c := testClient(t, endpoint, "us-east-1", "") // the default 8 tries
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, _, err := c.ReadAll(ctx, "k", 1<<20)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("a refused endpoint took %v to fail", took.Round(time.Millisecond))
	}
	if !errors.Is(err, ErrSetup) || !strings.Contains(err.Error(), "cannot connect to "+endpoint) || !strings.Contains(err.Error(), "--endpoint") {
		t.Errorf("error %v; want a setup error naming %s and --endpoint", err, endpoint)
	}
}

// TestRefusedAfterContactIsRetried: once the endpoint answered, a refused
// connection is a server restarting, and the request waits for it.
func TestRefusedAfterContactIsRetried(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	ok := func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "data") }
	srv := &http.Server{Handler: http.HandlerFunc(ok)}
	go srv.Serve(l)
	c := testClient(t, "http://"+addr, "us-east-1", "")
	if _, _, err := c.ReadAll(context.Background(), "k", 1<<20); err != nil {
		t.Fatal(err)
	}
	srv.Close() // also closes the kept-alive connection
	restarted := make(chan *http.Server, 1)
	go func() {
		time.Sleep(1500 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			restarted <- nil
			return
		}
		s := &http.Server{Handler: http.HandlerFunc(ok)}
		go s.Serve(l)
		restarted <- s
	}()
	data, _, err := c.ReadAll(context.Background(), "k", 1<<20)
	s := <-restarted
	if s == nil {
		t.Fatal("could not listen on the same port again")
	}
	defer s.Close()
	if err != nil || !bytes.Equal(data, []byte("data")) {
		t.Errorf("after a restart of the server: %q, %v", data, err)
	}
}

// TestPermanentRejectionsDuringUpload: what the store refuses in an upload
// is ErrPermanent, what failed on the way ErrTransient.
func TestPermanentRejectionsDuringUpload(t *testing.T) {
	proxy := testbed.StartProxy(t, minio.Endpoint)
	t.Setenv("AWS_MAX_ATTEMPTS", "2")
	c := newBucket(t, proxy)
	data := randomBytes(t, 2*MinPartSize)

	u := &Upload{Key: "bad-class", PartSize: MinPartSize, StorageClass: "NO_SUCH_CLASS"}
	_, err := run(t, c, u, source{Reader: bytes.NewReader(data)})
	if !errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), `storage class "NO_SUCH_CLASS"`) {
		t.Errorf("storage class MinIO does not offer: %v; want ErrPermanent naming the class", err)
	}

	proxy.SetRule(func(r *http.Request) testbed.Fault {
		if testbed.IsUploadPart(r) {
			return testbed.S3Error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
		}
		return testbed.Fault{}
	})
	u = &Upload{Key: "too-large", PartSize: MinPartSize}
	_, err = run(t, c, u, source{Reader: bytes.NewReader(data)})
	if !errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), "--part-size") {
		t.Errorf("part refused as too large: %v; want ErrPermanent and the --part-size hint", err)
	}

	proxy.SetRule(func(r *http.Request) testbed.Fault {
		if testbed.IsUploadPart(r) {
			return testbed.SlowDown
		}
		return testbed.Fault{}
	})
	u = &Upload{Key: "throttled", PartSize: MinPartSize}
	_, err = run(t, c, u, source{Reader: bytes.NewReader(data)})
	if !errors.Is(err, ErrTransient) || errors.Is(err, ErrPermanent) {
		t.Errorf("throttled part: %v; want ErrTransient", err)
	}
}
