// Command sdkupload is a benchmark peer, not part of zfs2s3: a plain
// aws-sdk-go-v2 manager.Uploader streaming stdin into one object, the
// baseline that make bench measures zfs2s3's upload against.
//
//	zfs send tank/data@a | sdkupload BUCKET KEY
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: sdkupload BUCKET KEY < stream")
		os.Exit(2)
	}
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(os.Getenv("ZFS2S3_ENDPOINT"))
		o.UsePathStyle = true
	})
	// Deprecated in the SDK, but it is the peer issue 4 measures against.
	up := manager.NewUploader(client, func(u *manager.Uploader) {
		u.PartSize = 16 << 20
		u.Concurrency = 8
	})
	body := struct{ io.Reader }{os.Stdin} // hides Seek: a pipe cannot seek
	if _, err := up.Upload(ctx, &s3.PutObjectInput{Bucket: &os.Args[1], Key: &os.Args[2], Body: body}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
