package zfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// A zfs send stream is a sequence of records, each starting with a
// 312-byte dmu_replay_record_t: a stream of one snapshot begins with a
// BEGIN record naming it by GUID and ends with an END record. That lets
// zfs2s3 check what an object in the bucket holds without the ledger: whose
// stream it is and whether it is whole, for rebuilding a ledger entry from
// an object whose manifest was lost.
const (
	recordSize  = 312
	drrBegin    = 0
	drrEnd      = 5
	backupMagic = 0x2F5bacbac // DMU_BACKUP_MAGIC
	hdrCompound = 2           // DMU_COMPOUNDSTREAM
)

// StreamCheck is an io.Writer that keeps a stream's first and last record
// as it is written through, for Check.
type StreamCheck struct {
	head []byte
	tail []byte // the last recordSize bytes seen
	n    int64
}

// Write records p's part in the first and last record; it never fails.
func (c *StreamCheck) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	if need := recordSize - len(c.head); need > 0 {
		c.head = append(c.head, p[:min(need, len(p))]...)
	}
	if len(p) >= recordSize {
		c.tail = append(c.tail[:0], p[len(p)-recordSize:]...)
	} else {
		c.tail = append(c.tail, p...)
		if extra := len(c.tail) - recordSize; extra > 0 {
			c.tail = append(c.tail[:0], c.tail[extra:]...)
		}
	}
	return len(p), nil
}

// ErrNotStream means bytes are not a whole zfs send stream of one snapshot.
var ErrNotStream = errors.New("not a whole zfs send stream")

// BeginSize is the size of a stream's first record, the BEGIN record that
// ParseBegin reads.
const BeginSize = recordSize

// Begin is what a stream's BEGIN record says of the stream: the snapshot
// it makes (zfs receive gives it ToGUID and the name after the '@' of
// ToName) and the one it is incremental from (0: a full stream). A
// compound stream (zfs send -R, -I) is a package of several streams, each
// with its own BEGIN record, and creates more than one snapshot.
type Begin struct {
	ToGUID, FromGUID uint64
	ToName           string
	Compound         bool
	order            binary.ByteOrder
}

// ToShort is the part of ToName after the '@': the name zfs receive gives
// the snapshot it makes.
func (b Begin) ToShort() string { _, s, _ := strings.Cut(b.ToName, "@"); return s }

// ParseBegin reads a stream's BEGIN record from its first BeginSize bytes
// (in either byte order, as zfs receive does); ErrNotStream when they are
// not one.
func ParseBegin(rec []byte) (Begin, error) {
	if len(rec) < recordSize {
		return Begin{}, fmt.Errorf("%w: %d bytes", ErrNotStream, len(rec))
	}
	var order binary.ByteOrder
	switch {
	case binary.LittleEndian.Uint64(rec[8:]) == backupMagic:
		order = binary.LittleEndian
	case binary.BigEndian.Uint64(rec[8:]) == backupMagic:
		order = binary.BigEndian
	default:
		return Begin{}, fmt.Errorf("%w: no BEGIN record", ErrNotStream)
	}
	if t := order.Uint32(rec); t != drrBegin {
		return Begin{}, fmt.Errorf("%w: first record has type %d", ErrNotStream, t)
	}
	// drr_begin: magic, versioninfo, creation_time, type+flags, toguid,
	// fromguid, toname[256]. The versioninfo's low 2 bits are the header
	// type: 1 a single stream (DMU_SUBSTREAM), 2 a compound one.
	name, _, _ := bytes.Cut(rec[56:recordSize], []byte{0})
	return Begin{
		ToGUID:   order.Uint64(rec[40:]),
		FromGUID: order.Uint64(rec[48:]),
		ToName:   string(name),
		Compound: order.Uint64(rec[16:])&3 == hdrCompound,
		order:    order,
	}, nil
}

// Check reports whether what was written is a whole stream of the
// snapshot toGUID, incremental from fromGUID (0: a full stream): its BEGIN
// record names both GUIDs and its last record is an END record.
func (c *StreamCheck) Check(toGUID, fromGUID uint64) error {
	if c.n < 2*recordSize {
		return fmt.Errorf("%w: %d bytes", ErrNotStream, c.n)
	}
	b, err := ParseBegin(c.head)
	if err != nil {
		return err
	}
	if b.ToGUID != toGUID || b.FromGUID != fromGUID {
		return fmt.Errorf("%w: it is the stream of guid %d from guid %d, not of %d from %d", ErrNotStream, b.ToGUID, b.FromGUID, toGUID, fromGUID)
	}
	order := b.order
	if t := order.Uint32(c.tail); t != drrEnd {
		return fmt.Errorf("%w: it does not end with an END record (cut short?)", ErrNotStream)
	}
	return nil
}
