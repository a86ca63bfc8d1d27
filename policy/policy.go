// Package policy writes the IAM policies of a zfs2s3 fleet: one for each
// backup host, which may add backups under its own prefix but not remove
// them, and one for the admin machine, which prunes with the right to
// delete. It is a pure function of bucket, prefix and store kind, so that
// what `zfs2s3 policy` prints is stable and checked by golden files.
//
// Why two roles: the threat that matters most for backups is the one that
// takes the host. An intruder with root on a backup host holds its
// credentials; if they can delete or overwrite, the backups go before the
// data is encrypted. Host credentials therefore grant no s3:DeleteObject,
// and on stores that can enforce it no overwrite of a stream object or
// manifest either. The ledger copy under PREFIX.zfs2s3/ stays writable:
// hosts must rewrite it, and it can always be rebuilt from the manifests.
package policy

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Store is the kind of store a policy is written for: the condition keys
// differ.
type Store string

const (
	// AWS is Amazon S3, which has the s3:if-none-match condition key.
	AWS Store = "aws"
	// MinIO has IAM policies of the same shape, without the
	// conditional-write keys.
	MinIO Store = "minio"
)

// Stores are the values --store takes.
var Stores = []string{string(AWS), string(MinIO)}

// Document is an IAM policy document. Its fields, and the order of
// statements, actions and resources, are fixed so that the JSON is stable.
type Document struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one IAM statement. Condition maps an operator to keys and
// their values; encoding/json writes map keys sorted.
type Statement struct {
	Sid       string                         `json:"Sid"`
	Effect    string                         `json:"Effect"`
	Action    []string                       `json:"Action"`
	Resource  []string                       `json:"Resource"`
	Condition map[string]map[string][]string `json:"Condition,omitempty"`
}

// policyVersion is IAM's current policy language version.
const policyVersion = "2012-10-17"

// Host is the policy of one backup host whose (expanded) prefix is prefix:
// it may list, read and write under that prefix and finish or abort its
// multipart uploads, but never delete, and never touch another prefix. A
// HEAD is authorised by s3:GetObject. On AWS, a write of a stream object or
// manifest without If-None-Match: * is denied, so that a host cannot
// overwrite (and so destroy) a stored backup either. fleetPolicy is the
// key of the fleet's central policy object (central.Key), which the host
// may read but not write, so that it cannot lift its own quota, keep rules
// or encryption; "" grants nothing more.
func Host(bucket, prefix, fleetPolicy string, store Store) (Document, error) {
	if err := check(bucket, prefix+fleetPolicy, store); err != nil {
		return Document{}, err
	}
	prefix = normalize(prefix)
	list := Statement{Sid: "ListOwnPrefix", Effect: "Allow",
		Action: []string{"s3:ListBucket"}, Resource: []string{bucketARN(bucket)}}
	if prefix != "" {
		list.Condition = map[string]map[string][]string{"StringLike": {"s3:prefix": {prefix + "*"}}}
	}
	doc := Document{Version: policyVersion, Statement: []Statement{
		list,
		{
			// s3:ListBucketMultipartUploads has no s3:prefix condition key:
			// a host sees the keys of other hosts' unfinished uploads, but
			// can neither read nor abort them.
			Sid: "ListMultipartUploads", Effect: "Allow",
			Action: []string{"s3:ListBucketMultipartUploads"}, Resource: []string{bucketARN(bucket)},
		},
		{
			// --lock-days: whether the bucket has object lock is checked
			// before an upload.
			Sid: "ReadBucketObjectLock", Effect: "Allow",
			Action: []string{"s3:GetBucketObjectLockConfiguration"}, Resource: []string{bucketARN(bucket)},
		},
		{
			// s3:PutObjectRetention lets a write carry an object lock
			// (--lock-days); without s3:BypassGovernanceRetention, which
			// no policy here grants, it can lengthen a lock, never lift it.
			Sid: "ReadAndAddUnderOwnPrefix", Effect: "Allow",
			Action: []string{"s3:GetObject", "s3:PutObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload",
				"s3:PutObjectRetention", "s3:GetObjectRetention", "s3:GetObjectLegalHold"},
			Resource: []string{objectARN(bucket, prefix+"*")},
		},
	}}
	if fleetPolicy != "" && !strings.HasPrefix(fleetPolicy, prefix) {
		// Read only: a PutObject of it matches no Allow above, being
		// outside the host's prefix, and so is denied. Listing that one
		// key lets a GET of a missing policy answer 404 (no policy)
		// rather than 403, which S3 gives to those who may not list.
		if prefix != "" {
			cond := doc.Statement[0].Condition["StringLike"]
			cond["s3:prefix"] = append(cond["s3:prefix"], fleetPolicy)
		}
		doc.Statement = append(doc.Statement, Statement{Sid: "ReadFleetPolicy", Effect: "Allow",
			Action: []string{"s3:GetObject"}, Resource: []string{objectARN(bucket, fleetPolicy)}})
	}
	if store == AWS {
		// Amazon S3 evaluates s3:if-none-match (the request's If-None-Match
		// header) and s3:ObjectCreationOperation (false for
		// CreateMultipartUpload and UploadPart, which take no conditional
		// header, true for PutObject and CompleteMultipartUpload) in
		// policies: "Enforce conditional writes on Amazon S3 buckets",
		// https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes-enforce.html
		// zfs2s3 completes stream objects and writes manifests with
		// If-None-Match: *, so only an overwrite is denied. StringNotEquals
		// also matches a request without the header. The keys are those
		// of ledger.ObjectKey: a 16-hex-digit GUID before .full.zfs or
		// .zfs, and .N or .manifest.yaml after it; the ledger copy under
		// PREFIX.zfs2s3/ never has that shape.
		doc.Statement = append(doc.Statement, Statement{
			Sid: "NoOverwriteOfStreamsAndManifests", Effect: "Deny",
			Action: []string{"s3:PutObject"},
			Resource: []string{
				objectARN(bucket, prefix+"*@"+strings.Repeat("?", 16)+".full.zfs*"),
				objectARN(bucket, prefix+"*.from.*@"+strings.Repeat("?", 16)+".zfs*"),
			},
			Condition: map[string]map[string][]string{
				"StringNotEquals": {"s3:if-none-match": {"*"}},
				"Bool":            {"s3:ObjectCreationOperation": {"true"}},
			},
		})
	}
	return doc, nil
}

// Admin is the policy of the admin machine for a fleet whose hosts' prefixes
// all start with root (the part of the configured prefix before its first
// placeholder): everything on their objects, deleting included, and on
// versioned buckets their old versions too.
func Admin(bucket, root string, store Store) (Document, error) {
	if err := check(bucket, root, store); err != nil {
		return Document{}, err
	}
	return Document{Version: policyVersion, Statement: []Statement{
		{
			Sid: "ListBucket", Effect: "Allow",
			Action: []string{"s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:ListBucketVersions", "s3:GetBucketVersioning",
				"s3:GetBucketObjectLockConfiguration"},
			Resource: []string{bucketARN(bucket)},
		},
		{
			Sid: "ManageFleetObjects", Effect: "Allow",
			// prune and remove read each edge's object lock before they
			// delete (a HEAD hides it without s3:GetObjectRetention), and
			// never lift one: no s3:BypassGovernanceRetention.
			Action: []string{"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:GetObjectVersion", "s3:DeleteObjectVersion",
				"s3:ListMultipartUploadParts", "s3:AbortMultipartUpload",
				"s3:PutObjectRetention", "s3:GetObjectRetention", "s3:GetObjectLegalHold"},
			Resource: []string{objectARN(bucket, root+"*")},
		},
	}}, nil
}

// JSON is the document as printed: indented, '*' and '&' as they are, and
// a final newline.
func (d Document) JSON() ([]byte, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

// check refuses what a policy cannot express: '*' and '?' are wildcards in
// an ARN and "${" starts a policy variable, so a prefix holding them would
// grant more than it names.
func check(bucket, prefix string, store Store) error {
	switch {
	case store != AWS && store != MinIO:
		return fmt.Errorf("--store %q: want one of %s", store, strings.Join(Stores, ", "))
	case bucket == "":
		return fmt.Errorf("no bucket: set --bucket, ZFS2S3_BUCKET or bucket: in the config")
	case strings.ContainsAny(bucket+prefix, "*?") || strings.Contains(bucket+prefix, "${"):
		return fmt.Errorf("bucket %q, prefix %q: '*', '?' and '${' are wildcards in an IAM policy, so no policy can name these keys alone; choose a prefix without them", bucket, prefix)
	}
	return nil
}

func normalize(prefix string) string {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		return prefix + "/"
	}
	return prefix
}

func bucketARN(bucket string) string          { return "arn:aws:s3:::" + bucket }
func objectARN(bucket, pattern string) string { return "arn:aws:s3:::" + bucket + "/" + pattern }
