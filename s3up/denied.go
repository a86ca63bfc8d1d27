package s3up

import (
	"errors"

	"github.com/aws/smithy-go"
)

// IsAccessDenied reports whether err is the store refusing a request for
// lack of permission (HTTP 403, AccessDenied): what a backup host's
// credentials get for a delete (see zfs2s3 policy host). Credentials the
// store does not know, or a bad signature, are not that: they are wrong
// rather than limited.
func IsAccessDenied(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		switch e.Code {
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "TokenRefreshRequired", "InvalidToken", "RequestTimeTooSkewed":
			return false
		}
		return e.Code == "AccessDenied" || e.Status == 403 && e.Code == ""
	}
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "AccessDenied"
}
