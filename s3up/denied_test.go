package s3up

import (
	"errors"
	"fmt"
	"testing"

	"github.com/aws/smithy-go"
)

func TestIsAccessDenied(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&Error{Code: "AccessDenied", Status: 403, Kind: ErrSetup}, true},
		{fmt.Errorf("delete: %w", &Error{Code: "AccessDenied", Status: 403, Kind: ErrSetup}), true},
		{&Error{Status: 403, Kind: ErrSetup}, true}, // a HEAD's 403 has no code
		{&Error{Code: "InvalidAccessKeyId", Status: 403, Kind: ErrSetup}, false},
		{&Error{Code: "SignatureDoesNotMatch", Status: 403, Kind: ErrSetup}, false},
		{&Error{Code: "SlowDown", Status: 503, Kind: ErrTransient}, false},
		{&smithy.GenericAPIError{Code: "AccessDenied"}, true},
		{errors.New("AccessDenied"), false},
		{nil, false},
	} {
		if got := IsAccessDenied(tc.err); got != tc.want {
			t.Errorf("IsAccessDenied(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
