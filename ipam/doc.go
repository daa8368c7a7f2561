// Package ipam is vxovl's cluster-wide IPAM driver (docker.ipamdriver/1.0):
// every host hands out overlay addresses itself, without a central server,
// and no address is given to two endpoints while the cluster is connected.
//
// # Blocks
//
// A pool's subnet (required: pass --subnet) is cut into blocks, by default 16
// per subnet and at most 256 addresses each; --ipam-opt block-size=N sets the
// host bits of a block (a /24 with block-size=4 has 16 blocks of 16). A host
// allocates dynamic addresses only from blocks it owns, so allocation itself
// is local and needs no coordination. Ownership is what the hosts agree on.
// Blocks, and single addresses pinned with --ip, are both "claims" of an
// IPv4 prefix; a pin is a /32.
//
// # Claim rule
//
// To claim prefix P, node N
//
//  1. marks P pending (from now on N refuses every overlapping claim),
//  2. sends ClaimRequest(P) to every other member it currently sees (the
//     cluster lists a node until memberlist declares it dead, so one that
//     is merely suspected is still asked), and
//  3. owns P only when every one of them has answered ACK; a member that
//     leaves the membership during the wait is no longer required, a NACK
//     or the timeout (Config.ClaimTimeout) aborts the claim.
//
// On success N moves P from pending to owned in one step under its lock,
// persists it and publishes it as an owned record (kind "ipam-block" or
// "ipam-pin"). A member M answers NACK if P conflicts with a claim M owns or
// has pending, or with a claim of a third node that M knows of (from
// records, including records of owners that are currently unreachable);
// otherwise ACK. Concurrent rounds are ranked by a random ticket carried in
// the request (ties: node name): a member whose own conflicting round
// outranks the request NACKs; otherwise it ACKs and its own round is doomed,
// i.e. it fails when its answers are in. Conflict means: two blocks overlap, two pins are equal, a
// pin lies inside a block of another node, or a block contains a pin that
// is still pending. A block may contain pins that are already owned: the
// ACK lists the acker's pins inside P, and N never allocates them.
//
// Safety argument. Suppose A and C both successfully claim conflicting
// prefixes while each is in the other's membership view, A's round in flight
// from pA, C's from pC. Each needed the other's ACK. A node that ACKs a
// conflicting request while its own round is in flight dooms that round, so
// A's ACK to C, at time tA, came before pA; C sent that request during its
// round, so pC <= tA < pA. A's request reached C at tC > pA, when C was still
// in its round or already owned the prefix: C either NACKed, or ACKed and
// doomed its own round. Either way one of the two failed: contradiction. So
// at most one of concurrent conflicting claims wins; ranking makes the
// top-ranked round win unless an owner refuses it, and a loser backs off
// with jitter and tries another random free block. Owners
// NACK forever, so a later claimant that sees the owner is refused even if
// it has not received the owner's record yet.
//
// # Partitions
//
// During a partition only reachable members are asked, so each side keeps
// allocating from the blocks it holds, may claim blocks that are free in its
// view, and fails with a clear error when its blocks are full and no claim
// can be completed. Ownership known before the partition is remembered
// (also across restarts) for unreachable owners, so only blocks that were
// free before the partition can be claimed twice. When the partition heals,
// the ownership records reveal overlaps: each one is logged at error level
// and counted (Stats.Conflicts); the claim that is later by (claim time,
// node name) stops allocating from the block (its existing containers keep
// their addresses) and gives the block back once it is empty. Remembered
// claims of an owner that stays unreachable are forgotten after
// Config.OrphanTimeout.
//
// # Docker specifics
//
// Every network gets a pool of its own, named after the subnet, --ip-range
// and block size (with #2, #3... for further networks of the same
// definition on one host); networks of one subnet share its addresses and
// blocks. The gateway is not a cluster allocation: it is the explicit
// --gateway or the subnet's first host address, identical everywhere, and
// no pool of the subnet hands it out.
//
// An endpoint's explicit --ip is claimed exclusively as a pin; a network's
// --aux-address is a reservation every host makes for itself and that
// nobody allocates. Docker sends both alike (an address, no options), so
// the driver tells them apart by when they come: Docker requests a
// network's pool, gateway and aux addresses in a row and then asks the
// network driver to create the network, whose CreateNetwork the plugin
// passes to NetworkCreating first; endpoint addresses come only after it.
// A pool is "creating" until then (or until an address is requested
// without a name, which only an endpoint does), and an explicit address
// for a creating pool is an aux address. The plugin sees CreateNetwork of
// vxovl networks only: a network of another driver that uses this IPAM
// takes an --ip requested before its first dynamic address for an aux
// address, reserved on this host only. The driver does not ask Docker
// for endpoint MACs (RequiresMACAddress): Docker would then give every
// endpoint a random MAC instead of letting the network driver derive a
// stable one from the overlay and the address.
package ipam
