// Package balance chooses which healthy addresses answer a query.
//
// A Set is an immutable list of addresses with their weights, built once per health snapshot; a
// Policy picks from it. Picking allocates nothing: Picks is returned by value, so the query path
// stays allocation-free even through the Policy interface.
package balance

import "fmt"

// MaxAnswers bounds how many addresses one answer may carry.
const MaxAnswers = 64

// Picks holds the indexes (into Set.Addrs) chosen for one answer, in answer order.
type Picks struct {
	N   int
	Idx [MaxAnswers]uint16
}

// Policy chooses up to n distinct addresses of s (fewer when s is smaller). It must be safe for
// concurrent use, take no locks and allocate nothing.
type Policy interface {
	Pick(s *Set, n int) Picks
}

// New returns the policy named in a Corefile: "random", "round_robin", "weighted" or
// "consistent_hash". A consistent_hash answer follows the client's key through a HashTable that
// the caller builds beside each set (IsKeyed tells it to); its Policy, Weighted, is the draw for a
// query whose client has no address to key on.
func New(name string) (Policy, error) {
	switch name {
	case "random":
		return Random{}, nil
	case "round_robin":
		return &RoundRobin{}, nil
	case "weighted", "consistent_hash":
		return Weighted{}, nil
	}
	return nil, fmt.Errorf("unknown policy %q, want random, round_robin, weighted or consistent_hash", name)
}

// IsKeyed reports whether the policy named picks by the client's key (consistent_hash).
func IsKeyed(name string) bool { return name == "consistent_hash" }
