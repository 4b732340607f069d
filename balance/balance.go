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

// New returns the policy named in a Corefile: "random", "round_robin" or "weighted".
func New(name string) (Policy, error) {
	switch name {
	case "random":
		return Random{}, nil
	case "round_robin":
		return &RoundRobin{}, nil
	case "weighted":
		return Weighted{}, nil
	}
	return nil, fmt.Errorf("unknown policy %q, want random, round_robin or weighted", name)
}
