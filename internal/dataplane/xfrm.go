package dataplane

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vxovl/vxovl/internal/ipsec"
	"golang.org/x/sys/unix"
)

// XfrmReqID marks every SA and policy template vxovl installs ("vx" then
// 0x0001). EnsureXfrm and RemoveXfrm touch only kernel state carrying it, so
// Docker's own encrypted overlay (reqid 13) and anything else an operator
// runs on the host are left alone.
const XfrmReqID = 0x76780001

// replayWindow is the anti-replay window of inbound SAs: the largest the
// kernel's legacy (non-ESN) bitmap holds.
const replayWindow = 32

// XfrmResult says what EnsureXfrm changed.
type XfrmResult struct {
	StatesAdded, StatesRemoved     int
	PoliciesAdded, PoliciesRemoved int
}

// Changed reports whether EnsureXfrm touched the kernel.
func (r XfrmResult) Changed() bool { return r != XfrmResult{} }

// XfrmPolicies returns the policies that put the VXLAN traffic of UDP port
// port under ESP: whatever leaves for that port is encrypted, and whatever
// arrives on it must have been, so the kernel drops cleartext VXLAN aimed
// at an encrypted network before the VXLAN socket sees it. Both directions
// select by port alone: no mark, no iptables.
func XfrmPolicies(port int) []netlink.XfrmPolicy {
	var out []netlink.XfrmPolicy
	for _, dir := range []netlink.Dir{netlink.XFRM_DIR_OUT, netlink.XFRM_DIR_IN} {
		out = append(out, netlink.XfrmPolicy{
			Dir:     dir,
			Proto:   unix.IPPROTO_UDP,
			DstPort: port,
			Tmpls: []netlink.XfrmPolicyTmpl{{
				// Zero addresses: in transport mode the kernel takes
				// them from the packet, so one policy covers all peers.
				Src:   net.IPv4zero,
				Dst:   net.IPv4zero,
				Proto: netlink.XFRM_PROTO_ESP,
				Mode:  netlink.XFRM_MODE_TRANSPORT,
				Reqid: XfrmReqID,
			}},
		})
	}
	return out
}

func xfrmState(sa ipsec.SA) *netlink.XfrmState {
	return &netlink.XfrmState{
		Src:          sa.Src,
		Dst:          sa.Dst,
		Proto:        netlink.XFRM_PROTO_ESP,
		Mode:         netlink.XFRM_MODE_TRANSPORT,
		Spi:          int(sa.SPI),
		Reqid:        XfrmReqID,
		ReplayWindow: replayWindow,
		Aead:         &netlink.XfrmStateAlgo{Name: ipsec.Algorithm, Key: sa.Key, ICVLen: ipsec.ICVBits},
	}
}

// ErrNoESP is returned (wrapped) when the kernel cannot run vxovl's SAs.
var ErrNoESP = errors.New("the kernel has no ESP with " + ipsec.Algorithm +
	" (it needs CONFIG_INET_ESP and CONFIG_CRYPTO_GCM, or the esp4 and gcm modules loaded): encrypted networks cannot run on this host")

// noESP reports whether err is the kernel refusing an SA because ESP or the
// AEAD is missing: ENOSYS for an unknown algorithm, EPROTONOSUPPORT for a
// missing ESP type.
func noESP(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ENOPROTOOPT)
}

// probeSPI is below every SPI ipsec assigns (their top byte is never 0), so
// the probe never collides with a real SA.
const probeSPI = 0x100

// CheckESP reports, as ErrNoESP, whether the calling thread's namespace
// cannot hold vxovl's SAs, by adding and removing a loopback SA.
func CheckESP() error {
	h, err := xfrmHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	lo := net.IPv4(127, 0, 0, 1)
	probe := xfrmState(ipsec.SA{Src: lo, Dst: lo, SPI: probeSPI, Key: make([]byte, ipsec.KeyBytes)})
	if err := h.XfrmStateAdd(probe); err != nil && !errors.Is(err, unix.EEXIST) {
		if noESP(err) {
			return fmt.Errorf("%w (%v)", ErrNoESP, err)
		}
		return fmt.Errorf("probe IPsec support: %w", err)
	}
	if err := h.XfrmStateDel(probe); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("remove IPsec probe SA: %w", err)
	}
	return nil
}

type stateKey struct {
	dst string
	spi uint32
}

type policyKey struct {
	dir  netlink.Dir
	port int
}

func ownPolicy(p netlink.XfrmPolicy) bool {
	return len(p.Tmpls) == 1 && p.Tmpls[0].Reqid == XfrmReqID
}

func xfrmHandle() (*netlink.Handle, error) {
	h, err := netlink.NewHandle(unix.NETLINK_XFRM)
	if err != nil {
		return nil, fmt.Errorf("open xfrm netlink socket: %w", err)
	}
	return h, nil
}

// EnsureXfrm makes the calling thread's namespace hold sas and the policies
// of ports among vxovl's XFRM state, and with prune nothing else of vxovl's
// (without, it only adds: a restarted plugin that does not know its peers
// yet keeps their SAs). It adds what is missing before it removes what is
// stale, so during a rotation the new receive SAs are in
// place before anything of the old generation goes, and a new send SA is in
// place before the old one is removed. An SA whose key or source differs
// from the wanted one is replaced. State of others is never touched.
func EnsureXfrm(ports []int, sas []ipsec.SA, prune bool) (XfrmResult, error) {
	var res XfrmResult
	want := make(map[stateKey]ipsec.SA, len(sas))
	for _, sa := range sas {
		k := stateKey{sa.Dst.String(), sa.SPI}
		if _, dup := want[k]; dup {
			return res, fmt.Errorf("two SAs to %s with SPI 0x%08x", sa.Dst, sa.SPI)
		}
		want[k] = sa
	}
	wantPol := map[policyKey]netlink.XfrmPolicy{}
	for _, port := range ports {
		for _, p := range XfrmPolicies(port) {
			wantPol[policyKey{p.Dir, p.DstPort}] = p
		}
	}
	h, err := xfrmHandle()
	if err != nil {
		return res, err
	}
	defer h.Close()

	have, err := dump(func() ([]netlink.XfrmState, error) { return h.XfrmStateList(netlink.FAMILY_V4) })
	if err != nil {
		return res, fmt.Errorf("list XFRM states: %w", err)
	}
	var stale, wrong []netlink.XfrmState
	for _, s := range have {
		if s.Reqid != XfrmReqID {
			continue
		}
		k := stateKey{s.Dst.String(), uint32(s.Spi)}
		w, ok := want[k]
		if ok && s.Src.Equal(w.Src) && s.Proto == netlink.XFRM_PROTO_ESP && s.Mode == netlink.XFRM_MODE_TRANSPORT &&
			s.Aead != nil && s.Aead.Name == ipsec.Algorithm && bytes.Equal(s.Aead.Key, w.Key) {
			delete(want, k)
			continue
		}
		switch {
		case ok:
			wrong = append(wrong, s)
		case prune:
			stale = append(stale, s)
		}
	}
	// A wrong state under a wanted (dst, SPI) goes, prune or not, before
	// its replacement is added: the kernel keys states by it.
	for _, s := range wrong {
		if err := h.XfrmStateDel(&s); err != nil && !errors.Is(err, unix.ESRCH) {
			return res, fmt.Errorf("remove wrong XFRM state %s->%s spi 0x%08x: %w", s.Src, s.Dst, uint32(s.Spi), err)
		}
		res.StatesRemoved++
	}
	// Inbound first: by the time the peer switches to a new generation,
	// or this host sends with one, the receiving side is ready.
	missing := slices.Collect(func(yield func(ipsec.SA) bool) {
		for _, sa := range want {
			if !yield(sa) {
				return
			}
		}
	})
	slices.SortFunc(missing, func(a, b ipsec.SA) int { return cmp.Compare(a.Dir, b.Dir) })
	for _, sa := range missing {
		if err := h.XfrmStateAdd(xfrmState(sa)); err != nil && !errors.Is(err, unix.EEXIST) {
			if noESP(err) {
				err = fmt.Errorf("%w (%v)", ErrNoESP, err)
			}
			return res, fmt.Errorf("install XFRM state %v: %w", sa, err)
		}
		res.StatesAdded++
	}

	pols, err := dump(func() ([]netlink.XfrmPolicy, error) { return h.XfrmPolicyList(netlink.FAMILY_V4) })
	if err != nil {
		return res, fmt.Errorf("list XFRM policies: %w", err)
	}
	var stalePol []netlink.XfrmPolicy
	for _, p := range pols {
		if !ownPolicy(p) {
			continue
		}
		k := policyKey{p.Dir, p.DstPort}
		if _, ok := wantPol[k]; ok && p.Proto == unix.IPPROTO_UDP && p.SrcPort == 0 && p.Mark == nil {
			delete(wantPol, k)
			continue
		}
		if prune {
			stalePol = append(stalePol, p)
		}
	}
	for _, p := range wantPol {
		if err := h.XfrmPolicyAdd(&p); err != nil && !errors.Is(err, unix.EEXIST) {
			return res, fmt.Errorf("install XFRM %s policy for UDP port %d: %w", p.Dir, p.DstPort, err)
		}
		res.PoliciesAdded++
	}
	for _, p := range stalePol {
		if err := h.XfrmPolicyDel(&p); err != nil && !errors.Is(err, unix.ENOENT) {
			return res, fmt.Errorf("remove stale XFRM %s policy for UDP port %d: %w", p.Dir, p.DstPort, err)
		}
		res.PoliciesRemoved++
	}
	for _, s := range stale {
		if err := h.XfrmStateDel(&s); err != nil && !errors.Is(err, unix.ESRCH) {
			return res, fmt.Errorf("remove stale XFRM state %s->%s spi 0x%08x: %w", s.Src, s.Dst, uint32(s.Spi), err)
		}
		res.StatesRemoved++
	}
	return res, nil
}

// RemoveXfrm removes every SA and policy vxovl installed in the calling
// thread's namespace: policies first, so no packet meets a policy without
// its SA in between.
func RemoveXfrm() error {
	_, err := EnsureXfrm(nil, nil, true)
	return err
}

// EnsureXfrm is EnsureXfrm in the host namespace (the caller's).
func (o *Overlay) EnsureXfrm(ports []int, sas []ipsec.SA, prune bool) (XfrmResult, error) {
	return EnsureXfrm(ports, sas, prune)
}

// CheckESP is CheckESP in the host namespace (the caller's).
func (o *Overlay) CheckESP() error { return CheckESP() }

// xfrmCounts counts vxovl's SAs and policies in the calling thread's
// namespace; a kernel without XFRM has none.
func xfrmCounts() (states, policies int, err error) {
	h, err := netlink.NewHandle(unix.NETLINK_XFRM)
	if errors.Is(err, unix.EPROTONOSUPPORT) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("open xfrm netlink socket: %w", err)
	}
	defer h.Close()
	all, err := dump(func() ([]netlink.XfrmState, error) { return h.XfrmStateList(netlink.FAMILY_V4) })
	if err != nil {
		return 0, 0, fmt.Errorf("list XFRM states: %w", err)
	}
	for _, s := range all {
		if s.Reqid == XfrmReqID {
			states++
		}
	}
	pols, err := dump(func() ([]netlink.XfrmPolicy, error) { return h.XfrmPolicyList(netlink.FAMILY_V4) })
	if err != nil {
		return 0, 0, fmt.Errorf("list XFRM policies: %w", err)
	}
	for _, p := range pols {
		if ownPolicy(p) {
			policies++
		}
	}
	return states, policies, nil
}

// XfrmStates lists vxovl's SAs in the calling thread's namespace, with the
// kernel's counters.
func XfrmStates() ([]netlink.XfrmState, error) {
	h, err := xfrmHandle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	all, err := dump(func() ([]netlink.XfrmState, error) { return h.XfrmStateList(netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list XFRM states: %w", err)
	}
	return slices.DeleteFunc(all, func(s netlink.XfrmState) bool { return s.Reqid != XfrmReqID }), nil
}
