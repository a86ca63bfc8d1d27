package s3up

import (
	"strings"
	"testing"
)

func TestCheckEndpoint(t *testing.T) {
	for e, ok := range map[string]bool{
		"": true, "http://127.0.0.1:9000": true, "https://s3.example.com": true, "https://s3.example.com/": true,
		"http://[::1]:9000": true,
		"not a url":         false, "ftp://x": false, "s3.example.com": false, "127.0.0.1:9000": false,
		"http://h/bucket": false, "http://h/a/b": false, "http://h?x=1": false, "http://h/#f": false,
		"http://": false, "http://:9000": false, "http://u:p@h": false, "http://h:port": false, "http:h": false,
	} {
		if err := CheckEndpoint(e); (err == nil) != ok {
			t.Errorf("CheckEndpoint(%q) = %v, want ok=%v", e, err, ok)
		}
	}
	for _, e := range []string{"http://me:s3cret@h/x", "http://me:s3cret@h:port", "me:s3cret@h:9000", "https:me:s3cret@h"} {
		if err := CheckEndpoint(e); err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("CheckEndpoint(%q) = %v, want an error that does not echo the password", e, err)
		}
	}
}
