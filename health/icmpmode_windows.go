package health

import "fmt"

// detectICMP on Windows has one way to ping: a raw socket, which Windows opens for
// Administrators alone (x/net has no unprivileged ICMP socket there, and IcmpSendEcho is not
// wired in). Without it every check icmp line fails setup, and the error says what to do.
func detectICMP() icmpChoice {
	if err := openSocket("ip4:icmp")(); err != nil {
		return icmpChoice{rawErr: err, err: fmt.Errorf("check icmp is not available on windows without a raw socket (%v): "+
			"run CoreDNS as an Administrator or as the LocalSystem service account, or use 'check tcp PORT'", err)}
	}
	return icmpChoice{privileged: true}
}
