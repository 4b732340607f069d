package healthdns

import (
	"strconv"

	"github.com/coredns/caddy"

	"github.com/healthdns/healthdns/pool"
)

// parseFleetQuorum reads 'fleet_quorum N|majority|any'.
func parseFleetQuorum(c *caddy.Controller, args []string) (pool.Quorum, error) {
	if len(args) != 1 {
		return pool.Quorum{}, c.Errf("want 'fleet_quorum N', 'fleet_quorum majority' or 'fleet_quorum any'")
	}
	switch args[0] {
	case "majority":
		return pool.Quorum{}, nil
	case "any":
		return pool.Quorum{Any: true}, nil
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 || n > 1000 {
		return pool.Quorum{}, c.Errf("fleet_quorum %q: want a number of servers (1 to 1000), majority or any", args[0])
	}
	return pool.Quorum{N: n}, nil
}
