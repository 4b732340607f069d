package pool

import "testing"

func TestQuorumDecision(t *testing.T) {
	up := func(groups ...uint8) fleetView { return fleetView{Healthy: groups} }
	voted := func(off uint8, rev int64, groups ...uint8) fleetView {
		return fleetView{Healthy: groups, Off: off, OffRevision: rev}
	}
	for _, tc := range []struct {
		name   string
		views  []fleetView
		agreed uint8
		need   int
		stay   bool
		target uint8
	}{
		{"all see the primary", []fleetView{up(200, 100), up(200, 100), up(200, 100)}, 200, 2, true, 0},
		{"one false alarm", []fleetView{up(100), up(200, 100), up(200, 100)}, 200, 2, true, 0},
		{"two see it down", []fleetView{up(100), up(100), up(200, 100)}, 200, 2, false, 100},
		{"two down: the highest group a quorum sees", []fleetView{up(100, 50), up(50), up(200, 100, 50)}, 200, 2, false, 100},
		{"two down: not a group one view sees", []fleetView{up(100, 50), up(50), up(200, 50)}, 200, 2, false, 50},
		{"any: one view moves", []fleetView{up(100), up(200, 100), up(200, 100)}, 200, 1, false, 100},
		{"quorum of 3 fixed, two views live", []fleetView{up(100), up(100)}, 200, 3, true, 0},
		{"all down: no target", []fleetView{up(), up(), up(200, 100)}, 200, 2, false, 0},
		{"none agreed: the highest a quorum sees", []fleetView{up(200, 100), up(100), up(200, 100)}, 0, 2, false, 200},
		{"none agreed, split: the highest with a quorum", []fleetView{up(200, 100), up(100), up(100)}, 0, 2, false, 100},
		{"none agreed, nothing with a quorum", []fleetView{up(200), up(100), up()}, 0, 2, false, 0},
		// nopreempt across an etcd outage: the primary failed while etcd was away and has
		// recovered since; the votes cast meanwhile carry the move, not the health of now.
		{"votes of the outage", []fleetView{voted(200, 7, 200, 100), voted(200, 7, 200, 100), up(200, 100)}, 200, 2, false, 100},
		{"one vote is a false alarm", []fleetView{voted(200, 7, 200, 100), up(200, 100), up(200, 100)}, 200, 2, true, 0},
		{"votes against an older revision are spent", []fleetView{voted(200, 6, 200, 100), voted(200, 6, 200, 100), up(200, 100)}, 200, 2, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stay, target := quorumDecision(tc.views, tc.agreed, 7, tc.need)
			if stay != tc.stay || target != tc.target {
				t.Errorf("stay %v, target %d; want stay %v, target %d", stay, target, tc.stay, tc.target)
			}
		})
	}
}

func TestServedByQuorum(t *testing.T) {
	serving := func(g uint8) fleetView { return fleetView{Healthy: []uint8{200, 100}, Serving: g} }
	for _, tc := range []struct {
		name  string
		views []fleetView
		need  int
		want  uint8
	}{
		{"a first start, one false alarm", []fleetView{serving(100), serving(200), serving(200)}, 2, 200},
		{"nopreempt kept a standby", []fleetView{serving(100)}, 1, 100},
		{"split three ways", []fleetView{serving(100), serving(200), serving(0)}, 2, 0},
		{"two quorums of a fixed 1: the highest", []fleetView{serving(100), serving(200)}, 1, 200},
	} {
		if got := servedByQuorum(tc.views, tc.need); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestQuorumOf(t *testing.T) {
	for _, tc := range []struct {
		q          Quorum
		live, want int
	}{
		{Quorum{}, 1, 1}, {Quorum{}, 2, 2}, {Quorum{}, 3, 2}, {Quorum{}, 4, 3}, {Quorum{}, 5, 3},
		{Quorum{Any: true}, 5, 1}, {Quorum{N: 2}, 5, 2}, {Quorum{N: 4}, 3, 4},
	} {
		if got := tc.q.of(tc.live); got != tc.want {
			t.Errorf("%s of %d live views: %d, want %d", tc.q, tc.live, got, tc.want)
		}
	}
}
