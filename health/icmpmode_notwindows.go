//go:build !windows

package health

func detectICMP() icmpChoice {
	return icmpMode(openSocket("udp4"), openSocket("ip4:icmp"), pingGroupRange)
}
