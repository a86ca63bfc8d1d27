package zfs

import (
	"encoding/binary"
	"errors"
	"fmt"
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

// Check reports whether what was written is a whole stream of the
// snapshot toGUID, incremental from fromGUID (0: a full stream): its BEGIN
// record names both GUIDs and its last record is an END record.
func (c *StreamCheck) Check(toGUID, fromGUID uint64) error {
	if c.n < 2*recordSize {
		return fmt.Errorf("%w: %d bytes", ErrNotStream, c.n)
	}
	var order binary.ByteOrder
	switch {
	case binary.LittleEndian.Uint64(c.head[8:]) == backupMagic:
		order = binary.LittleEndian
	case binary.BigEndian.Uint64(c.head[8:]) == backupMagic:
		order = binary.BigEndian
	default:
		return fmt.Errorf("%w: no BEGIN record", ErrNotStream)
	}
	if t := order.Uint32(c.head); t != drrBegin {
		return fmt.Errorf("%w: first record has type %d", ErrNotStream, t)
	}
	// drr_begin: magic, versioninfo, creation_time, type+flags, toguid, fromguid.
	to, from := order.Uint64(c.head[40:]), order.Uint64(c.head[48:])
	if to != toGUID || from != fromGUID {
		return fmt.Errorf("%w: it is the stream of guid %d from guid %d, not of %d from %d", ErrNotStream, to, from, toGUID, fromGUID)
	}
	if t := order.Uint32(c.tail); t != drrEnd {
		return fmt.Errorf("%w: it does not end with an END record (cut short?)", ErrNotStream)
	}
	return nil
}
