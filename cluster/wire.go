package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vxovl/vxovl/internal/vxlan"
)

// Wire format: one type byte, then fields. Strings and byte slices are a
// uvarint length and the bytes; integers are uvarints. Hand-rolled rather
// than gob/msgpack so that 10,000+ records stay small and the decoder can
// bound every length before allocating.
const (
	msgRecord byte = 1 // one record, sent by its owner over UDP; the receiver acks it
	msgState  byte = 2 // many records grouped by owner: push/pull, hello, per-network sync
	msgDirect byte = 3 // node-to-node message (SendTo)
	msgAck    byte = 4 // a msgRecord arrived (UDP, to the record's owner)
)

// Size limits. A single record must fit a memberlist UDP packet (1400
// bytes minus encryption, label and compound overhead).
const (
	maxKindLen     = 32
	maxKeyLen      = 256
	MaxValueLen    = 512   // largest record value PutRecord accepts
	maxWireValue   = 1024  // largest value on the wire: an endpoint with names may exceed MaxValueLen
	MaxDirectLen   = 65536 // largest SendTo payload
	flagDeleted    = 1 << 0
	stateHello     = 1 << 0 // sender asks for a state of the same cover in return
	stateNoCluster = 1 << 1 // the state does not cover the records of no network
	maxStateNets   = 1 << 16
	minRecordBytes = 4 // kind len + key len + version + flags, all empty/zero
)

type wireRecord struct {
	Kind    string
	Key     string
	Version uint64
	Deleted bool
	Value   []byte
}

type ownerRecords struct {
	Owner string
	Recs  []wireRecord
}

type stateMsg struct {
	Sender string
	Clock  uint64 // sender's clock when the snapshot was taken
	Flags  byte
	Owners []ownerRecords
	// Networks are the networks whose records the state covers (see cover).
	// They come last, so that a state without them reads as before.
	Networks []uint32
}

// ackMsg says that From received version Version of one of our records.
type ackMsg struct {
	From      string
	Kind, Key string
	Version   uint64
}

type directMsg struct {
	From    string
	Kind    string
	Payload []byte
}

var errTruncated = errors.New("truncated message")

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendRecord(b []byte, r wireRecord) []byte {
	b = appendString(b, r.Kind)
	b = appendString(b, r.Key)
	b = binary.AppendUvarint(b, r.Version)
	var f byte
	if r.Deleted {
		f |= flagDeleted
	}
	b = append(b, f)
	return appendBytes(b, r.Value)
}

func encodeRecord(owner string, r wireRecord) []byte {
	b := make([]byte, 0, 32+len(owner)+len(r.Kind)+len(r.Key)+len(r.Value))
	b = append(b, msgRecord)
	b = appendString(b, owner)
	return appendRecord(b, r)
}

func encodeState(m stateMsg) []byte {
	n := 32
	for _, o := range m.Owners {
		n += 8 + len(o.Owner) + 40*len(o.Recs)
	}
	b := make([]byte, 0, n)
	b = append(b, msgState)
	b = appendString(b, m.Sender)
	b = binary.AppendUvarint(b, m.Clock)
	b = append(b, m.Flags)
	b = binary.AppendUvarint(b, uint64(len(m.Owners)))
	for _, o := range m.Owners {
		b = appendString(b, o.Owner)
		b = binary.AppendUvarint(b, uint64(len(o.Recs)))
		for _, r := range o.Recs {
			b = appendRecord(b, r)
		}
	}
	if len(m.Networks) > 0 {
		b = binary.AppendUvarint(b, uint64(len(m.Networks)))
		for _, vni := range m.Networks {
			b = binary.AppendUvarint(b, uint64(vni))
		}
	}
	return b
}

func encodeAck(m ackMsg) []byte {
	b := make([]byte, 0, 16+len(m.From)+len(m.Kind)+len(m.Key))
	b = append(b, msgAck)
	b = appendString(b, m.From)
	b = appendString(b, m.Kind)
	b = appendString(b, m.Key)
	return binary.AppendUvarint(b, m.Version)
}

func encodeDirect(m directMsg) []byte {
	b := make([]byte, 0, 8+len(m.From)+len(m.Kind)+len(m.Payload))
	b = append(b, msgDirect)
	b = appendString(b, m.From)
	b = appendString(b, m.Kind)
	return appendBytes(b, m.Payload)
}

// reader decodes with bounds checks; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(errTruncated)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte1() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.fail(errTruncated)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) bytesN(limit int, what string) []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(limit) {
		r.fail(fmt.Errorf("%s length %d exceeds limit %d", what, n, limit))
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail(errTruncated)
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) str(limit int, what string) string {
	return string(r.bytesN(limit, what))
}

// count reads an element count and bounds it by what the remaining bytes
// could possibly hold, so a forged count cannot force a huge allocation.
func (r *reader) count(minElem int) int {
	n := r.uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(len(r.b)/minElem) {
		r.fail(fmt.Errorf("element count %d exceeds message size", n))
		return 0
	}
	return int(n)
}

func (r *reader) record() wireRecord {
	var w wireRecord
	w.Kind = r.str(maxKindLen, "kind")
	w.Key = r.str(maxKeyLen, "key")
	w.Version = r.uvarint()
	f := r.byte1()
	w.Deleted = f&flagDeleted != 0
	if v := r.bytesN(maxWireValue, "value"); len(v) > 0 {
		w.Value = append([]byte(nil), v...)
	}
	if r.err == nil && f&^flagDeleted != 0 {
		r.fail(fmt.Errorf("unknown record flags %#x", f))
	}
	return w
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Errorf("%d trailing bytes", len(r.b)))
	}
	return r.err
}

// decodeRecord decodes a msgRecord body (after the type byte).
func decodeRecord(b []byte) (owner string, w wireRecord, err error) {
	r := reader{b: b}
	owner = r.str(maxNodeName, "owner")
	w = r.record()
	return owner, w, r.done()
}

func decodeState(b []byte) (stateMsg, error) {
	r := reader{b: b}
	var m stateMsg
	m.Sender = r.str(maxNodeName, "sender")
	m.Clock = r.uvarint()
	m.Flags = r.byte1()
	n := r.count(2)
	if r.err == nil && n > 0 {
		m.Owners = make([]ownerRecords, 0, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		var o ownerRecords
		o.Owner = r.str(maxNodeName, "owner")
		k := r.count(minRecordBytes)
		if r.err == nil && k > 0 {
			o.Recs = make([]wireRecord, 0, k)
		}
		for j := 0; j < k && r.err == nil; j++ {
			o.Recs = append(o.Recs, r.record())
		}
		m.Owners = append(m.Owners, o)
	}
	if r.err == nil && len(r.b) > 0 {
		n := r.count(1)
		if n > maxStateNets {
			r.fail(fmt.Errorf("%d networks in a state, limit %d", n, maxStateNets))
		}
		for i := 0; i < n && r.err == nil; i++ {
			vni := r.uvarint()
			if r.err == nil && (vni > vxlan.MaxVNI || vxlan.CheckVNI(uint32(vni)) != nil) {
				r.fail(fmt.Errorf("state covers a bad VNI %d", vni))
			}
			m.Networks = append(m.Networks, uint32(vni))
		}
	}
	return m, r.done()
}

func decodeAck(b []byte) (ackMsg, error) {
	r := reader{b: b}
	var m ackMsg
	m.From = r.str(maxNodeName, "from")
	m.Kind = r.str(maxKindLen, "kind")
	m.Key = r.str(maxKeyLen, "key")
	m.Version = r.uvarint()
	return m, r.done()
}

func decodeDirect(b []byte) (directMsg, error) {
	r := reader{b: b}
	var m directMsg
	m.From = r.str(maxNodeName, "from")
	m.Kind = r.str(maxKindLen, "kind")
	if p := r.bytesN(MaxDirectLen, "payload"); len(p) > 0 {
		m.Payload = append([]byte(nil), p...)
	}
	return m, r.done()
}
