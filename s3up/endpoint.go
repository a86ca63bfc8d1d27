package s3up

import (
	"fmt"
	"net/url"
	"strings"
)

// CheckEndpoint wants http(s)://host[:port] and nothing more: with
// path-style addressing a path would put the bucket, and so every key and
// the ledger's copy, somewhere else than the user means.
func CheckEndpoint(e string) error {
	if e == "" {
		return nil
	}
	u, err := url.Parse(e)
	why := ""
	switch {
	case err != nil:
		why = "it is not a URL"
	case u.Scheme != "http" && u.Scheme != "https":
		why = "the scheme is not http or https"
	case u.Host == "" || u.Hostname() == "":
		why = "it has no host"
	case u.User != nil:
		why = "it holds credentials; give them through the AWS environment or profile"
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "", u.Opaque != "":
		why = "it has a path or query; the bucket is added by zfs2s3"
	}
	if why != "" {
		// Never echo a password: also not one typed without "//"
		// ("https:user:pw@host"), which url.Parse keeps in the opaque part.
		if i := strings.LastIndex(e, "@"); i >= 0 {
			e = "…" + e[i:]
		}
		return fmt.Errorf("--endpoint %q: %s; want http(s)://HOST[:PORT], e.g. https://s3.example.com or http://127.0.0.1:9000", e, why)
	}
	return nil
}
