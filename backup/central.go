package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/zfs2s3/zfs2s3/central"
	"github.com/zfs2s3/zfs2s3/config"
	"github.com/zfs2s3/zfs2s3/ledger"
	"github.com/zfs2s3/zfs2s3/s3up"
)

// centralState is what this command read of the fleet's central policy:
// read once per command that uploads or prunes, so that one run obeys one
// policy throughout.
type centralState struct {
	read     bool
	settings central.Settings
	policy   *central.Policy // nil: no policy object
}

// ReadCentralPolicy reads the policy object at key. A missing object is no
// policy (nil, nil). Anything else that keeps it from being read and
// understood is an error: a host must never silently ignore a policy it
// was given, so a damaged object stops uploads until the admin fixes it.
func ReadCentralPolicy(ctx context.Context, s3 *s3up.Client, key string) (*central.Policy, error) {
	data, _, err := s3.ReadAll(ctx, key, central.MaxBytes)
	switch {
	case errors.Is(err, s3up.ErrNotFound):
		return nil, nil
	case isSetup(err) && !s3up.IsAccessDenied(err):
		// Credentials, bucket, region, endpoint, clock: the store's own
		// line names the cause and the fix, as for any command.
		return nil, setupError(err)
	case s3up.IsAccessDenied(err):
		return nil, fmt.Errorf("cannot read the fleet policy s3://%s/%s (AccessDenied): give this host the read right that zfs2s3 policy host NAME prints: %w", s3.Bucket(), key, err)
	case err != nil:
		return nil, fmt.Errorf("cannot read the fleet policy s3://%s/%s: %w", s3.Bucket(), key, err)
	}
	p, err := central.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("the fleet policy s3://%s/%s is damaged: %w; the admin fixes it with zfs2s3 fleet policy set FILE", s3.Bucket(), key, err)
	}
	return p, nil
}

// isSetup reports whether err is a setup problem of the store's (s3up.ErrSetup).
func isSetup(err error) bool {
	var se *s3up.Error
	return errors.As(err, &se) && errors.Is(se, s3up.ErrSetup)
}

// withHint adds what a refusal left unchanged, except to a setup error,
// whose one line is the store's own cause and fix.
func withHint(err error, hint string) error {
	if isSetup(err) && !s3up.IsAccessDenied(err) {
		return err
	}
	return fmt.Errorf("%w; %s", err, hint)
}

// centralSettings are the central policy's settings for this host, read
// from the bucket on first use (Options.PolicyKey "" means no policy).
func (b *Backup) centralSettings(ctx context.Context) (central.Settings, error) {
	if b.central.read || b.Opt.PolicyKey == "" {
		return b.central.settings, nil
	}
	p, err := ReadCentralPolicy(ctx, b.S3, b.Opt.PolicyKey)
	if err != nil {
		return central.Settings{}, err
	}
	b.central = centralState{read: true, policy: p, settings: p.For(b.Opt.Host)}
	if p != nil {
		slog.Info("obeying the fleet policy", "key", b.Opt.PolicyKey, "host", b.Opt.Host)
	}
	return b.central.settings, nil
}

// policyURL names the policy object in messages.
func (b *Backup) policyURL() string { return "s3://" + b.S3.Bucket() + "/" + b.Opt.PolicyKey }

// checkCentralRecipients refuses a new upload that is not encrypted to
// every recipient the fleet policy requires, before anything is uploaded:
// a usage error, since the fix is in this host's config.
func (b *Backup) checkCentralRecipients(ctx context.Context) error {
	s, err := b.centralSettings(ctx)
	if err != nil {
		return withHint(err, "nothing was uploaded")
	}
	if len(s.Recipients) == 0 {
		return nil
	}
	var have []string
	for _, r := range b.Opt.Transform.Recipients {
		have = append(have, r.String())
	}
	missing := central.MissingRecipients(s.Recipients, have)
	if len(missing) == 0 {
		return nil
	}
	how := "add them to recipients: in the config (or --recipient)"
	if len(have) == 0 {
		how = "this upload would be unencrypted; set recipients: in the config (or --recipient) to them"
	}
	return usagef("the fleet policy (%s) requires encryption to %s; %s; nothing was uploaded", b.policyURL(), strings.Join(missing, ", "), how)
}

// checkCentralQuota refuses a new full stream of about estimate bytes
// when the bytes stored under this host's prefix (its ledger's edges) plus
// the estimate would exceed the fleet policy's quota. Incrementals are not
// checked: refusing one would break the chain, and it is small next to a
// full.
func (b *Backup) checkCentralQuota(ctx context.Context, l *ledger.Ledger, e ledger.Edge, estimate int64) error {
	if e.Base != nil {
		return nil
	}
	s, err := b.centralSettings(ctx)
	if err != nil {
		return withHint(err, "nothing was uploaded")
	}
	if s.Quota == nil {
		return nil
	}
	stored := StoredBytes(l)
	// Uploads started and not yet recorded count too: resume_upload,
	// which checks no quota, would otherwise finish fulls past it.
	ps, err := b.loadPending()
	if err != nil {
		return err
	}
	for _, p := range ps {
		if p.Edge.ID() != e.ID() {
			stored += max(p.Estimate, 0)
		}
	}
	if central.QuotaCheck(stored, estimate, *s.Quota) {
		return nil
	}
	return fmt.Errorf("host %s stores %s of its %s quota (%s); a new full of about %s (%s) would exceed it: prune, or ask the admin for more quota; nothing was uploaded",
		b.Opt.Host, central.Format(stored), central.Format(int64(*s.Quota)), b.policyURL(), central.Format(estimate), e.Target.Name)
}

// StoredBytes is what a host's ledger says is stored under its prefix:
// the stored bytes of every edge, those being removed included (they are
// still in the bucket until their removal finishes).
func StoredBytes(l *ledger.Ledger) int64 {
	var n int64
	for _, e := range l.Edges {
		n += e.StoredBytes
	}
	return n
}

// EffectiveKeep returns the datasets with the keep rules that apply: the
// central policy's for this host when it sets them, replacing the
// config's (with a notice where they differ), else the config's own.
func EffectiveKeep(datasets []config.Dataset, s central.Settings, host string) []config.Dataset {
	if s.Keep == nil {
		return datasets
	}
	out := make([]config.Dataset, len(datasets))
	for i, d := range datasets {
		if d.Keep != nil && *d.Keep != *s.Keep {
			slog.Warn(fmt.Sprintf("the fleet policy sets the keep rules of host %s; the config's keep %s of %s is ignored", host, keepRule(*d.Keep), d.Name),
				"central", keepRule(*s.Keep))
		}
		d.Keep = s.Keep
		out[i] = d
	}
	return out
}

// centralKeep applies the central keep rules to datasets for prune.
func (b *Backup) centralKeep(ctx context.Context, datasets []config.Dataset) ([]config.Dataset, error) {
	s, err := b.centralSettings(ctx)
	if err != nil {
		return nil, withHint(err, "nothing was pruned")
	}
	return EffectiveKeep(datasets, s, b.Opt.Host), nil
}
